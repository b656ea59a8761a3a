"""`owlvit verify CKPT HF_DIR`: run both models and prove they agree."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from owlvit_cli.cli.commands.common import (
    CheckpointArg,
    DebugOption,
    HFDirArg,
    JsonOption,
    QuietOption,
    make_output,
)
from owlvit_cli.cli.output import Output, run_guarded
from owlvit_cli.errors import BadInputError, ExitCode

LEVEL_TITLES = {
    "mapping": "1. mapping (same inputs, scenic semantics patched in)",
    "stock": "2. stock transformers (same inputs)",
    "processor": "3. transformers processor vs scenic preprocessing",
}


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
    quiet: QuietOption = False,
) -> None:
    """Compare the converted model in HF_DIR with the scenic-exact Flax model on CKPT.
    Exit 0 when every check is within tolerance, 1 when one is not, 2 on bad input."""
    out = make_output(json_mode, debug, quiet)

    def action() -> int:
        from owlvit_cli.verify.run import VerifyOptions

        options = VerifyOptions(
            image or [],
            query or [],
            parse_atol(atol or []),
            strict_processor,
            top_k,
            processor_detections=processor_detections,
        )
        report = verify_and_record(out, checkpoint, hf_dir, options, record, save_outputs, save_viz)
        out.result(report, lambda console: render(console, report))
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


def verify_and_record(
    out: Output,
    checkpoint: Path,
    hf_dir: Path,
    options: Any = None,
    record: bool = False,
    save_outputs: Path | None = None,
    save_viz: Path | None = None,
) -> dict[str, Any]:
    """Run verification; optionally keep the report in HF_DIR, the arrays in a .npz and a
    picture of both sides' detections."""
    import numpy as np

    from owlvit_cli.atomic import atomic_write_bytes
    from owlvit_cli.cli.process import hold_until_exit
    from owlvit_cli.model.model_dir import VERIFICATION_FILE
    from owlvit_cli.verify.run import VerifyOptions, failure_summary, run_verification

    if save_outputs is not None and save_outputs.suffix != ".npz":
        raise BadInputError(f"--save-outputs must name a .npz file, got {save_outputs}")
    if save_viz is not None:
        from owlvit_cli.detect.run import output_format

        output_format(save_viz)  # an unknown picture format fails before the slow part
    # A recorded report names the checkpoint it verified, so only then is it hashed.
    options = dataclasses.replace(options or VerifyOptions(), record=record)
    result = run_verification(checkpoint, hf_dir, options, progress=out)
    hold_until_exit(result.models)
    if save_outputs is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **result.arrays)
        atomic_write_bytes(save_outputs, buffer.getvalue())
    if save_viz is not None:
        from owlvit_cli.detect.run import save_image

        save_image(result.picture(), save_viz)
    if record:
        text = json.dumps(result.report, indent=2, default=str) + "\n"
        atomic_write_bytes(hf_dir / VERIFICATION_FILE, text.encode())
    if not result.report["passed"]:
        out.error(failure_summary(result.report))
    return result.report


def render(console: Console, report: dict[str, Any]) -> None:
    for level, title in LEVEL_TITLES.items():
        rows = [r for r in report["outputs"] if r["level"] == level]
        if rows:
            console.print(_level_table(title, rows))
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())
    console.print(f"[dim]timings: {timings}[/dim]")
    if report["passed"]:
        console.print("[green]✓ verified[/green]: the converted model matches the Flax model")
    else:
        console.print(f"[bold red]✗ verification failed[/bold red]: {', '.join(report['failed'])}")


def _level_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table("output", "max |diff|", "tolerance", "result", title=title, title_justify="left")
    for row in rows:
        informational = row["tolerance"] is None
        if informational:
            status = "[dim]info[/dim]"
        else:
            status = "[green]ok[/green]" if row["passed"] else "[bold red]FAIL[/bold red]"
        value = str(int(row["max_abs"])) if row["name"] == "input_ids" else f"{row['max_abs']:.2e}"
        note = f" [dim]({row['note']})[/dim]" if row["note"] else ""
        tol = "-" if informational else f"{row['tolerance']:.1e}"
        table.add_row(row["name"] + note, value, tol, status)
    return table
