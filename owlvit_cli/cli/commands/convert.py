"""`owlvit convert CKPT OUT`: write a transformers model directory from a scenic checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from owlvit_cli.cli.commands.common import CheckpointArg, DebugOption, JsonOption, make_output
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import human_bytes
from owlvit_cli.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)


def convert_command(
    checkpoint: CheckpointArg,
    output: Annotated[
        Path, typer.Argument(help="Directory to create (absent or empty; parents are created).")
    ],
    dtype: Annotated[
        str, typer.Option("--dtype", help="Weights dtype: float32, float16 or bfloat16.")
    ] = "float32",
    max_shard_size: Annotated[
        str, typer.Option("--max-shard-size", help="Split weights into shards above this size.")
    ] = "5GB",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace OUTPUT if it is an earlier owlvit output (never else)."
        ),
    ] = False,
    force_overwrite: Annotated[
        bool,
        typer.Option(
            "--force-overwrite",
            help="Replace OUTPUT even if owlvit did not write it, deleting everything in it.",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Run `owlvit verify` on the result; fail if it fails."),
    ] = False,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Convert a scenic OWL-ViT / OWLv2 checkpoint into a transformers model directory that
    `from_pretrained` loads offline."""
    out = make_output(json_mode, debug)

    def action() -> int:
        # Nothing here is linear algebra: idle OpenBLAS threads would only spin on the cores
        # that the transposes and writes need (set before numpy's first import to count).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from owlvit_cli.checkpoint.prefetch import prefetching

        with prefetching(checkpoint):  # the disk reads while numpy and the core import
            from owlvit_cli.convert.run import convert_checkpoint

            result = convert_checkpoint(
                checkpoint,
                output,
                dtype=dtype,
                max_shard_size=max_shard_size,
                overwrite=overwrite,
                force_overwrite=force_overwrite,
                progress=out,
            )
        for warning in result.warnings:
            out.warn(warning)
        payload = result.to_json()
        code = ExitCode.OK
        if verify:
            from owlvit_cli.cli.verification import verify_and_report

            report = verify_and_report(out, checkpoint, output, record=True)
            payload["verification"] = report
            code = ExitCode.OK if report["passed"] else ExitCode.CHECK_FAILED
        out.result(payload, lambda console: render(console, payload))
        return code

    run_guarded(out, action)


def render(console: Console, payload: dict[str, Any]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("wrote", payload["output"])
    table.add_row("model", f"{payload['model_class']} (layout {payload['layout']})")
    table.add_row("tensors", f"{payload['num_tensors']} ({payload['num_parameters']:,} params)")
    table.add_row("dtype", payload["dtype"])
    table.add_row("source sha256", payload["source"]["sha256"])
    for item in payload["ignored"]:
        table.add_row("ignored", f"{item['path']}: {item['reason']}")
    table.add_row("files", ", ".join(payload["files"]))
    table.add_row("time", f"{payload['seconds']:.2f} s")
    console.print(table)
    if "verification" in payload:
        from owlvit_cli.cli.verification import render_verification

        render_verification(console, payload["verification"])
    console.print(f"[green]✓[/green] converted ({human_bytes(payload['source']['size'])} source)")
