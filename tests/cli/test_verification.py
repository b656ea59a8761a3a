"""The verify report as people read it: a verdict line per level with its worst margin, the
failures in full, informational rows that cannot pass for failures, the tables on request."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from owlvit_cli.cli.verification import margin, render_verification
from tests.helpers import problem_lines, run_console_script


def _row(name: str, level: str, diff: float, tol: float | None, note: str = "") -> dict:
    passed = tol is None or diff <= tol
    return {"name": name, "level": level, "max_abs": diff, "tolerance": tol, "passed": passed,
            "note": note}  # fmt: skip


def _report(*rows: dict[str, Any]) -> dict[str, Any]:
    failed = [f"{r['level']}/{r['name']}" for r in rows if not r["passed"]]
    return {
        "passed": not failed,
        "failed": failed,
        "source": {"matches": True, "message": "m was converted from this file"},
        "dtype": "float32",
        "dtype_source": "owlvit_conversion.json",
        "levels": {"mapping": {"reference": "Flax", "compared": "transformers"}},
        "outputs": list(rows),
        "timings": {"source": 0.5, "load_hf": 2.0, "hf_forward": 1.5},
    }


ROWS = (
    _row("pred_logits", "mapping", 8e-6, 4e-5),
    _row("pred_boxes", "mapping", 2e-7, 1e-5),
    _row("pred_boxes", "stock", 5e-4, 1e-3),
    _row("pixels_notebook", "processor", 0.5, None, "vs scenic notebook"),
    _row("input_ids", "processor", 0.0, None),
)


def _render(report: dict[str, Any], verbose: bool = False) -> str:
    text = io.StringIO()
    console = Console(file=text, width=200, color_system=None)
    render_verification(console, report, verbose, "every output: --verbose")
    return text.getvalue()


def test_one_verdict_line_per_level_with_its_worst_margin() -> None:
    lines = _render(_report(*ROWS)).splitlines()
    assert lines[2] == (
        "✓ 1. mapping: 2 outputs within tolerance; worst pred_logits at 20% of it "
        "(8.00e-06 ≤ 4.0e-05)"
    )
    assert lines[3].startswith("✓ 2. stock transformers: 1 outputs within tolerance; worst ")
    assert "at 50% of it" in lines[3]
    # measured, never judged: no "info" beside a number that reads like a failure
    assert lines[4] == (
        "· 3. transformers processor (informational, never fails): max |diff| "
        "pixels_notebook 5.00e-01, input_ids 0"
    )
    assert lines[5] == (
        "✓ verified in 4.0s: the converted model matches the Flax model (every output: --verbose)"
    )
    assert len(lines) == 6  # no tables, no timings line repeating the steps
    assert "┃" not in "\n".join(lines) and "timings" not in "\n".join(lines)


def test_failures_in_full_worst_first() -> None:
    bad = (
        _row("pred_logits", "mapping", 1.2e-2, 4e-5),
        _row("feature_map", "mapping", 2e-4, 1e-4),
        _row("top_k", "mapping", 1e-6, 1e-5, "order differs"),
    )
    for row in bad[2:]:
        row["passed"] = False
    text = _render(_report(*bad, *ROWS[1:]))
    lines = text.splitlines()
    start = lines.index("✗ 1. mapping: 3 of 4 outputs over tolerance")
    assert lines[start + 1 : start + 4] == [
        "    ✗ pred_logits: max |diff| 1.20e-02 > tolerance 4.0e-05 (300× it)",
        "    ✗ feature_map: max |diff| 2.00e-04 > tolerance 1.0e-04 (2× it)",
        "    ✗ top_k: max |diff| 1.00e-06 ≤ tolerance 1.0e-05 (order differs)",
    ]
    assert lines[-1] == "✗ verification failed: mapping"


def test_verbose_shows_the_tables_and_the_step_times() -> None:
    text = _render(_report(*ROWS), verbose=True)
    assert "┃ output" in text and "2. stock transformers (same inputs)" in text
    assert "transformers vs Flax" in text  # what the level compared
    row = next(line for line in text.splitlines() if "pixels_notebook" in line)
    assert re.search(r"5\.00e-01 +│ none +│ not checked", row), row
    assert "info " not in text
    assert "timings: source 0.50s, load_hf 2.00s, hf_forward 1.50s" in text
    assert "(every output: --verbose)" not in text


def test_margin_is_the_fraction_of_the_tolerance() -> None:
    assert margin(_row("a", "mapping", 5e-6, 1e-5)) == 0.5
    assert margin(_row("finite_weights", "mapping", 0.0, 0.0)) == 0
    assert margin(_row("finite_weights", "mapping", 2.0, 0.0)) == float("inf")


def test_a_wrong_source_is_said_once(
    tiny_checkpoint: Callable[..., Path], converted: Callable[..., Path]
) -> None:
    """`verify v2b16.msgpack owlvit-b32`: one error line, no report repeating it; --json
    keeps the complete report with its error member."""
    model = converted(tiny_checkpoint("v2-tiny", "v2"))
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    result = run_console_script("verify", ckpt, model)
    assert result.returncode == 1 and result.stdout == ""
    assert problem_lines(result.stderr) == [
        next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    ]
    assert result.stderr.count(ckpt.name) == 1, result.stderr
    payload = json.loads(run_console_script("verify", ckpt, model, "--json").stdout)
    assert payload["failed"] == ["source"] and payload["error"]["code"] == 1
