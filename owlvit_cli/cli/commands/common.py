"""Options every command shares, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from owlvit_cli.cli.output import Output

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON object on stdout, nothing else.")
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print the result only: no progress, notes or warnings (errors stay)."
    ),
]
CheckpointArg = Annotated[
    Path, typer.Argument(help="A scenic OWL-ViT / OWLv2 checkpoint file (Flax msgpack).")
]
HFDirArg = Annotated[Path, typer.Argument(help="A converted transformers model directory.")]


def make_output(json_mode: bool, debug: bool, quiet: bool = False) -> Output:
    return Output(json_mode=json_mode, debug=debug, quiet=quiet)
