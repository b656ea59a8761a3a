"""`owlvit verify CKPT HF_DIR`: run both models and prove they agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from owlvit_cli.cli.commands.common import (
    CheckpointArg,
    DebugOption,
    HFDirArg,
    JsonOption,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.verification import render_verification, verify_and_report
from owlvit_cli.errors import BadInputError, ExitCode


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)


def verify_command(
    checkpoint: CheckpointArg,
    hf_dir: HFDirArg,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            help="Image file, or a .npy [S,S,3] float array in [0,1] used "
            "as is. Repeatable. Default: the built-in sample image.",
        ),
    ] = None,
    query: Annotated[
        list[str] | None,
        typer.Option("--query", help="Text query. Repeatable. Default: a few built-in ones."),
    ] = None,
    atol: Annotated[
        list[str] | None,
        typer.Option("--atol", help="Stock tolerance override, NAME=VALUE. Repeatable."),
    ] = None,
    strict_processor: Annotated[
        bool, typer.Option("--strict-processor", help="Fail when the processor drifts too.")
    ] = False,
    processor_detections: Annotated[
        bool,
        typer.Option(
            "--processor-detections",
            help="Also run the model on the processor's own inputs and compare the top "
            "detections (a third forward pass; implied by --strict-processor).",
        ),
    ] = False,
    ignore_source: Annotated[
        bool,
        typer.Option(
            "--ignore-source",
            help="Compare even when CKPT is not the file HF_DIR's owlvit_conversion.json "
            "names as its source.",
        ),
    ] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Detections compared.")] = 5,
    save_outputs: Annotated[
        Path | None, typer.Option("--save-outputs", help="Write inputs and outputs to a .npz.")
    ] = None,
    record: Annotated[
        bool, typer.Option("--record", help="Write the report into HF_DIR for `push`.")
    ] = False,
    save_viz: Annotated[
        Path | None,
        typer.Option(
            "--save-viz",
            help="Draw Flax and transformers detections side by side "
            "on the first image (PNG/JPEG).",
        ),
    ] = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Compare the converted model in HF_DIR with the scenic-exact Flax model on CKPT.
    Exit 0 when every check is within tolerance, 1 when one is not, 2 on bad input."""
    out = make_output(json_mode, debug)

    def action() -> int:
        from owlvit_cli.verify.inputs import VerifyOptions

        options = VerifyOptions(
            image or [],
            query or [],
            parse_atol(atol or []),
            strict_processor,
            top_k,
            processor_detections=processor_detections,
            ignore_source=ignore_source,
        )
        report = verify_and_report(out, checkpoint, hf_dir, options, record, save_outputs, save_viz)
        out.result(report, lambda console: render_verification(console, report))
        return ExitCode.OK if report["passed"] else ExitCode.CHECK_FAILED

    run_guarded(out, action)


def parse_atol(items: list[str]) -> dict[str, float]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value) if sep else -1.0
        except ValueError:
            number = -1.0
        if not (number >= 0) or not name.strip():  # also rejects NaN
            raise BadInputError(f"--atol expects NAME=VALUE with VALUE ≥ 0, got {item!r}")
        parsed[name.strip()] = number
    return parsed
