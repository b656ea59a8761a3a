"""The Typer app. Each command lives in `owlvit_cli.commands` and only parses, calls the core
and renders; heavy libraries (jax, torch, transformers) are imported inside command bodies so
that `owlvit --help` starts instantly."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import typer

from owlvit_cli import __version__
from owlvit_cli.commands import convert, detect, inspect, push, verify

app = typer.Typer(
    name="owlvit",
    help="Convert scenic OWL-ViT / OWLv2 Flax checkpoints to Hugging Face transformers, "
    "prove the conversion numerically, and publish it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for module in (inspect, convert, verify, push, detect):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"owlvit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Root options."""


# Tearing these down at interpreter exit takes about a second after a verify (thread pools,
# the XLA client, gigabytes of weights freed one object at a time) and achieves nothing the OS
# does not do for free when the process ends.
HEAVY_RUNTIMES = ("jax", "torch")


def main() -> None:
    """The console script: the app, then a fast exit once a heavy runtime was loaded."""
    try:
        app()
    except SystemExit as exc:
        if any(name in sys.modules for name in HEAVY_RUNTIMES):
            exit_now(exc.code)
        raise


def exit_now(code: object) -> None:
    """Flush what the user should see, then end the process without interpreter teardown.
    Every output file is complete by now: they are written atomically inside the command."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit("message") would have printed
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: no reader is left
            stream.flush()
    os._exit(code or 0)
