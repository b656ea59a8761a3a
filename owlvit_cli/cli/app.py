"""The Typer app. Each command lives in `owlvit_cli.cli.commands` and only parses, calls the core
and renders; heavy libraries (jax, torch, transformers) are imported inside command bodies so
that `owlvit --help` starts instantly."""

from __future__ import annotations

import sys

import typer

from owlvit_cli import __version__
from owlvit_cli.cli import process
from owlvit_cli.cli.commands import convert, detect, inspect, push, verify

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


def main() -> None:
    """The console script: the app, then a fast exit once a heavy runtime was loaded."""
    process.end_after_command()
    process.install_signal_handlers()
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        if process.received_signal() is not None and code != process.interrupt_exit_code():
            # The signal's exception was swallowed where it landed; the run still ends as one.
            print(f"error: {process.interrupt_message()}", file=sys.stderr)
            code = process.interrupt_exit_code()
        if process.should_exit_now():
            process.exit_now(code)
        raise SystemExit(code) from None
