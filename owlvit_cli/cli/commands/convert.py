"""`owlvit convert CKPT OUT`: write a transformers model directory from a scenic checkpoint."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from owlvit_cli.cli import process
from owlvit_cli.cli.commands.common import (
    CheckpointArg,
    DebugOption,
    DtypeOption,
    JsonOption,
    QuietOption,
    StepOption,
    checkpoint_path,
    complete_directories,
    examples,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import human_bytes, key_value_grid
from owlvit_cli.errors import BadInputError, ExitCode
from owlvit_cli.model.dtypes import DEFAULT_DTYPE
from owlvit_cli.model.model_dir import DEFAULT_MAX_SHARD_SIZE

HELP = (
    "Convert a scenic OWL-ViT / OWLv2 checkpoint into a transformers model directory OUT that "
    "`from_pretrained` loads offline: weights (model.safetensors, sharded above "
    "--max-shard-size), config, processor and tokenizer files, and owlvit_conversion.json "
    "(source sha256, layout, versions). OUT appears atomically; a non-empty OUT is refused "
    "unless --overwrite."
    + examples(
        "owlvit convert clip_vit_b32_b0203fc owlvit-b32",
        "owlvit convert CKPT OUT --dry-run",
        "owlvit convert CKPT OUT --dtype bf16 --max-shard-size 1GB",
        "owlvit convert CKPT OUT --overwrite --verify --json",
    )
)


def register(app: typer.Typer) -> None:
    app.command(
        "convert", help=HELP, short_help="a transformers model directory from a checkpoint"
    )(convert_command)


def convert_command(
    checkpoint: CheckpointArg,
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="The model directory to write (absent or empty; missing parents are created).",
            autocompletion=complete_directories,
            show_default=False,
        ),
    ],
    dtype: DtypeOption = DEFAULT_DTYPE,
    max_shard_size: Annotated[
        str,
        typer.Option(
            "--max-shard-size",
            metavar="SIZE",
            help="Split the weights into shards of at most SIZE (e.g. 500MB, 2GB, 1GiB) with an "
            "index file.",
        ),
    ] = DEFAULT_MAX_SHARD_SIZE,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace OUT if it is an earlier owlvit output (never anything else); the old one "
            "goes only once the new one is complete.",
        ),
    ] = False,
    force_overwrite: Annotated[
        bool,
        typer.Option(
            "--force-overwrite",
            help="Replace OUT even if owlvit did not write it, deleting everything in it "
            "(never an input).",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Then run `owlvit verify --record` on OUT; exit 1 if it finds a mismatch.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show what would be written (files, tensors, bytes, shards, dtype, ignored and "
            "generated tensors) from the checkpoint's headers, and write nothing.",
        ),
    ] = False,
    step: StepOption = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> int:
        if dry_run and verify:
            raise BadInputError("--dry-run writes nothing, so there is nothing to --verify")
        source = checkpoint_path(out, checkpoint, step)
        # What the dry run and the conversion are asked, the same for both.
        asked = {
            "dtype": dtype,
            "max_shard_size": max_shard_size,
            "overwrite": overwrite,
            "force_overwrite": force_overwrite,
        }
        if dry_run:
            from owlvit_cli.api import plan_conversion

            plan = plan_conversion(source, output, **asked).to_json()
            for warning in plan["warnings"]:
                out.warn(warning)
            out.result(plan, lambda console: render_plan(console, plan))
            return ExitCode.OK
        # Nothing here is linear algebra: idle OpenBLAS threads would only spin on the cores
        # that the transposes and writes need (set before numpy's first import to count).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from owlvit_cli.checkpoint.prefetch import prefetching
        from owlvit_cli.verify.preload import importing_in_background

        # The conversion pauses the cyclic collector itself (API callers get that too); this
        # process also keeps it off while numpy and the core import (40-70 ms of collections
        # that free nothing), and skips the final collection at exit.
        gc.disable()
        process.skip_teardown()
        try:
            # The disk reads while numpy and the core import; with --verify, its jax and torch
            # while the conversion runs.
            with prefetching(source), importing_in_background(verify):
                from owlvit_cli.api import convert_checkpoint

                result = convert_checkpoint(source, output, **asked, progress=out)
        finally:
            gc.enable()
        for warning in result.warnings:
            out.warn(warning)
        payload = result.to_json()
        code = ExitCode.OK
        if verify:
            from owlvit_cli.cli.verification import verification_error, verify_and_report

            report = verify_and_report(out, source, output, record=True)
            payload["verification"] = report
            if not report["passed"]:
                payload.update(verification_error(report))
                code = ExitCode.CHECK_FAILED
        out.result(payload, lambda console: render(console, payload))
        return code

    run_guarded(out, action)


def render(console: Console, payload: dict[str, Any]) -> None:
    table = key_value_grid()
    table.add_row("wrote", payload["output"])
    table.add_row("model", f"{payload['model_class']} (layout {payload['layout']})")
    table.add_row("tensors", f"{payload['num_tensors']} ({payload['num_parameters']:,} params)")
    table.add_row("dtype", dtype_line(payload))
    table.add_row("source sha256", payload["source"]["sha256"])
    for item in payload["ignored"]:
        table.add_row("ignored", f"{item['path']}: {item['reason']}")
    table.add_row("files", ", ".join(payload["files"]))
    table.add_row("time", f"{payload['seconds']:.2f} s")
    console.print(table)
    if "verification" in payload:
        from owlvit_cli.cli.verification import render_verification

        render_verification(console, payload["verification"])
        if not payload["verification"]["passed"]:
            console.print(
                f"[bold red]✗[/bold red] wrote {payload['output']}, but verification failed "
                f"({', '.join(payload['verification']['failed'])}); see above"
            )
            return
    console.print(f"[green]✓[/green] converted ({human_bytes(payload['source']['size'])} source)")


def dtype_line(payload: dict[str, Any]) -> str:
    """The dtype written and why (a record from before the reason was kept has none)."""
    reason = payload.get("dtype_reason")
    return f"{payload['dtype']} ({reason})" if reason else payload["dtype"]


def render_plan(console: Console, plan: dict[str, Any]) -> None:
    """A dry run: what convert would write, and that it wrote nothing."""
    table = key_value_grid()
    table.add_row("would write", escape(plan["output"]))
    table.add_row("model", f"{plan['model_class']} (layout {plan['layout']})")
    table.add_row("tensors", f"{plan['num_tensors']} ({plan['num_parameters']:,} params)")
    table.add_row("dtype", escape(dtype_line(plan)))
    shards = plan["shards"]
    table.add_row(
        "weights",
        f"{human_bytes(plan['bytes'])} ({plan['bytes']:,} bytes) in {len(shards)} "
        f"file{'s' if len(shards) > 1 else ''}",
    )
    if len(shards) > 1:
        for item in shards:
            count = f"{item['tensors']} tensor{'s' if item['tensors'] != 1 else ''}"
            table.add_row("", f"{item['file']}: {count}, {human_bytes(item['bytes'])}")
    for item in plan["ignored"]:
        table.add_row("ignored", escape(f"{item['path']}: {item['reason']}"))
    for target, note in plan["generated"].items():
        table.add_row("generated", escape(f"{target}: {note}"))
    weights = {item["file"] for item in shards} if len(shards) > 1 else set()
    others = [name for name in plan["files"] if name not in weights]
    table.add_row("files", ", ".join(["the weight files above"] * bool(weights) + others))
    console.print(table)
    console.print("dry run: nothing written")
