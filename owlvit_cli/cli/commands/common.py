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
CheckpointArg = Annotated[
    Path,
    typer.Argument(
        help="A scenic OWL-ViT / OWLv2 checkpoint: a Flax msgpack file, an Orbax checkpoint "
        "directory, or a workdir of checkpoint_N entries (the latest is read)."
    ),
]
StepOption = Annotated[
    int | None,
    typer.Option(
        "--step", min=0, help="With a workdir as CKPT: read checkpoint_STEP instead of the latest."
    ),
]
HFDirArg = Annotated[Path, typer.Argument(help="A converted transformers model directory.")]


def make_output(json_mode: bool, debug: bool) -> Output:
    return Output(json_mode=json_mode, debug=debug)


def checkpoint_path(out: Output, checkpoint: Path, step: int | None) -> Path:
    """The checkpoint CKPT and --step name (a workdir's latest, or its `step`), said on stderr
    when it was picked from a workdir."""
    from owlvit_cli.checkpoint.workdir import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint, step)
    note = resolved.describe()
    if note is not None:
        out.info(note)
    return resolved.path
