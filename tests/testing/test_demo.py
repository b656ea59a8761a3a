"""`make demo` ends by saying what to type next with a released checkpoint."""

from __future__ import annotations

import pytest

from owlvit_cli.testing import demo


def test_demo_ends_with_the_walkthrough_and_how_to_reach_owlvit(capsys: pytest.CaptureFixture):
    demo.print_next_steps()
    printed = capsys.readouterr().out.splitlines()
    assert [line.strip() for line in printed if line.startswith("  ")] == list(demo.NEXT_STEPS)
    assert any("source " in line and "activate" in line for line in printed)
