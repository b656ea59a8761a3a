"""The facts a bug report needs (`owlvit env`): versions, the jax backend, the Hub endpoint
and whether a token is set (never the token itself), and where the caches are."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from owlvit_cli.version import __version__

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "torch",
    "transformers",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "typer",
)


def environment_report() -> dict[str, Any]:
    return {
        "owlvit": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "packages": package_versions(),
        "jax": jax_runtime(),
        "hub": hub_settings(),
        "caches": cache_locations(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (None when not installed); nothing imported."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def jax_runtime() -> dict[str, Any]:
    """The backend and devices jax picks here (importing jax is the one slow part of `env`)."""
    try:
        import jax

        return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    except Exception as exc:  # not installed, or no usable backend: that is the fact to report
        return {"backend": None, "devices": [], "error": f"{type(exc).__name__}: {exc}"}


def hub_settings() -> dict[str, Any]:
    from owlvit_cli.errors import BadInputError
    from owlvit_cli.publish.names import resolve_endpoint
    from owlvit_cli.redaction import public_url

    try:
        endpoint = public_url(resolve_endpoint(None))
    except BadInputError as exc:  # its message shows the endpoint as public_url does
        endpoint = str(exc)
    return {"endpoint": endpoint, "token": token_source()}


def token_source() -> str | None:
    """Where push would take a token from (`HF_TOKEN` or `stored`), or None; never the token.
    A token file that must not be read (a device, a pipe) is reported, not opened."""
    if os.environ.get("HF_TOKEN", "").strip():
        return "HF_TOKEN"
    from owlvit_cli.publish.secrets import token_file_problem

    problem = token_file_problem(pipes=False)
    if problem:
        return f"unusable: {problem}"
    try:
        from huggingface_hub import get_token

        return "stored" if get_token() else None
    except Exception:  # an unreadable token file reads, for a bug report, as "no token"
        return None


def cache_locations() -> dict[str, str]:
    from huggingface_hub import constants

    from owlvit_cli.cache import cache_root

    return {
        "owlvit": str(cache_root()),
        "huggingface_hub": str(constants.HF_HUB_CACHE),
        "hf_home": str(constants.HF_HOME),
    }
