"""Credentials never survive `public_url`, however the URL was mistyped."""

from __future__ import annotations

import pytest

from owlvit_cli.redaction import public_url

PASSWORD = "s3cr3t-PW"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://alice:{PASSWORD}@hub.example", "https://***@hub.example"),
        (f"https:/alice:{PASSWORD}@hub.example", "https:/***@hub.example"),
        (f"https:alice:{PASSWORD}@hub.example", "https:***@hub.example"),
        (f"alice:{PASSWORD}@hub.example", "***@hub.example"),
        (f"{PASSWORD}@hub.example", "***@hub.example"),
        (f"https://alice:{PASSWORD}/x@hub.example", "https://***@hub.example"),
        (f"https://alice:{PASSWORD}?x@hub.example", "https://***@hub.example"),
        (f"https://alice:{PASSWORD}#x@hub.example", "https://***@hub.example"),
        (f"https://alice:{PASSWORD}@x@hub.example", "https://***@hub.example"),
        (f"https://hub.example/?token={PASSWORD}&b=1", "https://hub.example/?token=***&b=***"),
        (f"https://hub.example/?{PASSWORD}", "https://hub.example/?***"),
        (f"https://hub.example/#{PASSWORD}", "https://hub.example/#***"),
        ("https://hub.example/hf_abcdefghijklmnop/api", "https://hub.example/hf_***/api"),
        ("http://[::1", "http://[::1"),
        (f"https://alice:{PASSWORD}", "https://alice:***"),
        (f"http://[::1]:{PASSWORD}/x", "http://[::1]:***/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        (f"https://alice:{PASSWORD}@host:{PASSWORD}", "https://***@host:***"),
        ("https://huggingface.co", "https://huggingface.co"),
        ("http://127.0.0.1:8080/hub", "http://127.0.0.1:8080/hub"),
    ],
)
def test_credentials_are_hidden_and_the_rest_is_kept(url: str, shown: str) -> None:
    assert public_url(url) == shown
    assert PASSWORD not in public_url(url)
