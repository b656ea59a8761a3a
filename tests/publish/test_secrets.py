"""Which secrets are scrubbed from a push's output, besides the token."""

from __future__ import annotations

import pytest

from owlvit_cli.publish.secrets import proxy_secrets, redact


def test_proxy_credentials_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://bob:pr0xy-pw@proxy.example:3128")
    monkeypatch.setenv("ALL_PROXY", "http://[::1")  # unusable: ignored, not a crash
    page = "407 Proxy Authentication Required for bob:pr0xy-pw (Basic Ym9iOnByMHh5LXB3)"
    shown = redact(page, proxy_secrets())
    assert "pr0xy-pw" not in shown and "Ym9iOnByMHh5LXB3" not in shown
