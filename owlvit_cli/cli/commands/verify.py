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
    QuietOption,
    StepOption,
    checkpoint_path,
    complete_files,
    examples,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.verification import render_verification, verification_error, verify_and_report
from owlvit_cli.errors import BadInputError, ExitCode
from owlvit_cli.verify.options import DEFAULT_PREPROCESSING, DEFAULT_TOP_K
from owlvit_cli.verify.tolerances import STOCK_TOLERANCES

HELP = (
    "Run the scenic-exact Flax model on CKPT and the transformers model in HF_DIR on the same "
    "images and queries and compare every output at three levels: 1. mapping (scenic "
    "semantics patched in, must agree to 1e-5), 2. stock transformers (--atol tolerances), "
    "3. the saved processor against scenic's preprocessing (informational unless "
    "--strict-processor). Exit 0 when every check passes, 1 when one fails, 2 on bad input.\n\n"
    "The report is kept in HF_DIR/owlvit_verification.json, which push shows in the model "
    "card, when owlvit convert wrote HF_DIR (--no-record: never)."
    + examples(
        "owlvit verify clip_vit_b32_b0203fc owlvit-b32",
        'owlvit verify CKPT HF_DIR --image street.jpg --query "a bus" --query "a bicycle"',
        "owlvit verify CKPT HF_DIR --image-query street.jpg --query-box 40,60,180,200",
        "owlvit verify CKPT HF_DIR --atol pred_boxes=2e-3 --json --record",
    )
)


def complete_atol(incomplete: str) -> list[str]:
    return [f"{name}=" for name in STOCK_TOLERANCES if name.startswith(incomplete)]


def register(app: typer.Typer) -> None:
    app.command("verify", help=HELP, short_help="compare the converted model with the Flax model")(
        verify_command
    )


def verify_command(
    checkpoint: CheckpointArg,
    hf_dir: HFDirArg,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            metavar="IMAGE",
            help="Image file, or a .npy [S,S,3] float array in [0,1] used "
            "as is. Repeatable. Default: the built-in sample image.",
            autocompletion=complete_files,
        ),
    ] = None,
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            metavar="TEXT",
            help="Text query. Repeatable. Default: four built-in ones.",
        ),
    ] = None,
    image_query: Annotated[
        Path | None,
        typer.Option(
            "--image-query",
            metavar="IMAGE",
            help="The image the image-conditioned check takes its example boxes from "
            "(verified as one more image). Default: the first image.",
            autocompletion=complete_files,
        ),
    ] = None,
    query_box: Annotated[
        list[str] | None,
        typer.Option(
            "--query-box",
            metavar="X0,Y0,X1,Y1",
            help="An example box in that image's pixels; both models must choose the same "
            "query embedding for it and detect the same things with it. Repeatable. Default: "
            "the car on the built-in sample, else the whole image.",
        ),
    ] = None,
    atol: Annotated[
        list[str] | None,
        typer.Option(
            "--atol",
            metavar="NAME=VALUE",
            help="Override a stock-level tolerance. Repeatable. NAME: "
            + ", ".join(STOCK_TOLERANCES)
            + ".",
            autocompletion=complete_atol,
        ),
    ] = None,
    strict_processor: Annotated[
        bool,
        typer.Option(
            "--strict-processor",
            help="Fail (exit 1) when the saved processor's pixels, token ids or top detections "
            "drift from scenic's; implies --processor-detections.",
        ),
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
    preprocessing: Annotated[
        str,
        typer.Option(
            "--preprocessing",
            metavar="[notebook|evaluator]",
            help="scenic's preprocessing for image files: 'evaluator' (resize then pad with 0, "
            "behind scenic's published COCO/LVIS numbers; default) or 'notebook' (pad with 0.5 "
            "gray, then anti-aliased resize). The processor level reports both.",
        ),
    ] = DEFAULT_PREPROCESSING,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k", min=1, metavar="K", help="Compare the K best detections (boxes, order)."
        ),
    ] = DEFAULT_TOP_K,
    save_outputs: Annotated[
        Path | None,
        typer.Option(
            "--save-outputs",
            metavar="FILE.npz",
            help="Write the inputs and both models' outputs to FILE.npz.",
        ),
    ] = None,
    record: Annotated[
        bool | None,
        typer.Option(
            "--record/--no-record",
            help="Keep the report in HF_DIR/owlvit_verification.json, which push puts in the "
            "model card. Default: when owlvit convert wrote HF_DIR (it has "
            "owlvit_conversion.json); --record refuses any other directory.",
            show_default=False,
        ),
    ] = None,
    save_viz: Annotated[
        Path | None,
        typer.Option(
            "--save-viz",
            metavar="PICTURE",
            help="Draw Flax and transformers detections side by side "
            "on the first image (PNG/JPEG).",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show every output of every level in tables, what each level compared, "
            "and the time of each step (default: one verdict line per level and the failures).",
        ),
    ] = False,
    step: StepOption = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> int:
        source = checkpoint_path(out, checkpoint, step)
        from owlvit_cli.scenic.image_query import parse_box
        from owlvit_cli.verify.inputs import VerifyOptions

        options = VerifyOptions(
            image or [],
            query or [],
            parse_atol(atol or []),
            strict_processor,
            top_k,
            processor_detections=processor_detections,
            preprocessing=preprocessing,  # type: ignore[arg-type]  # checked by prepare_inputs
            ignore_source=ignore_source,
            image_query=image_query,
            query_boxes=[parse_box(box) for box in query_box or []],
        )
        report = verify_and_report(out, source, hf_dir, options, record, save_outputs, save_viz)
        payload = report if report["passed"] else {**report, **verification_error(report)}
        more = "every output: --verbose"
        out.result(payload, lambda console: render_verification(console, report, verbose, more))
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
