"""`owlvit version`: the version, as `owlvit --version` prints it (and `hf version` is typed)."""

from __future__ import annotations

import typer

from owlvit_cli import __version__
from owlvit_cli.cli.commands.common import DebugOption, JsonOption, examples, make_output
from owlvit_cli.cli.output import run_guarded

HELP = "Print owlvit's version (the same as `owlvit --version`)." + examples(
    "owlvit version", "owlvit version --json | jq -r .version"
)


def register(app: typer.Typer) -> None:
    app.command("version", help=HELP, short_help="print the version")(version_command)


def version_command(json_mode: JsonOption = False, debug: DebugOption = False) -> None:
    out = make_output(json_mode, debug)

    def action() -> None:
        line = version_line()
        out.result({"version": __version__}, lambda console: console.print(line, highlight=False))

    run_guarded(out, action)


def version_line() -> str:
    return f"owlvit {__version__}"
