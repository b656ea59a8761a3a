"""`owlvit detect HF_DIR IMAGE --query TEXT...`: run a converted model on a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from owlvit_cli.cli.commands.common import (
    DebugOption,
    HFDirArg,
    JsonOption,
    QuietOption,
    complete_files,
    examples,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.detect.options import DEFAULT_PREPROCESSING, DEFAULT_THRESHOLD

HELP = (
    "Run the converted model in HF_DIR with its saved processor, offline, on IMAGE and print "
    "the detections scoring above --threshold (query, score, box in image pixels); --output "
    "also draws them. --image-query finds things like an example crop instead of text "
    "(one-shot detection)."
    + examples(
        'owlvit detect owlv2-b16 street.jpg --query "a bus" --query "a bicycle" -o boxes.png',
        "owlvit detect owlv2-b16 street.jpg --image-query example_crop.jpg --json",
    )
)


def register(app: typer.Typer) -> None:
    app.command(
        "detect", help=HELP, short_help="detections of a converted model, as a table or a picture"
    )(detect_command)


def detect_command(
    hf_dir: HFDirArg,
    image: Annotated[
        Path,
        typer.Argument(
            metavar="IMAGE",
            help="The picture to search (any format Pillow reads).",
            autocompletion=complete_files,
            show_default=False,
        ),
    ],
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            metavar="TEXT",
            help="A text query; repeat for several. No short form: -q is reserved for --quiet.",
        ),
    ] = None,
    image_query: Annotated[
        Path | None,
        typer.Option(
            "--image-query",
            metavar="IMAGE",
            help="An example crop to find instead of text queries (one-shot detection).",
            autocompletion=complete_files,
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", metavar="SCORE", help="Report boxes scoring above SCORE (0 to 1)."
        ),
    ] = DEFAULT_THRESHOLD,
    max_detections: Annotated[
        int | None,
        typer.Option("--max-detections", metavar="N", help="Report at most the N best boxes."),
    ] = None,
    preprocessing: Annotated[
        str,
        typer.Option(
            "--preprocessing",
            metavar="processor|notebook|evaluator",
            help="How the image becomes pixels: 'processor' (the saved transformers processor, "
            "what Hub users get; default), or scenic's 'notebook' or 'evaluator' pipeline.",
        ),
    ] = DEFAULT_PREPROCESSING,
    clip_to_image: Annotated[
        bool,
        typer.Option(
            "--clip-to-image",
            help="Clip boxes to the image and drop boxes lying wholly in the padding. Without "
            "it, boxes are transformers' post-processing output as is (as the pipeline gives).",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PICTURE",
            help="Also draw the boxes on IMAGE and write the picture here (.png, .jpg, ...).",
        ),
    ] = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> None:
        from owlvit_cli.api import detect_objects
        from owlvit_cli.runtime.draw import draw_detections, output_format, save_image
        from owlvit_cli.scenic.preprocess import load_image

        if output is not None:
            from owlvit_cli.atomic import check_not_input

            output_format(output)  # refuse a bad suffix before loading anything
            for source in (image, hf_dir, image_query):
                if source is not None:
                    check_not_input(output, source, directory=False)  # never over the photo
        result = detect_objects(
            hf_dir,
            image,
            query,
            threshold,
            image_query=image_query,
            max_detections=max_detections,
            preprocessing=preprocessing,
            clip_to_image=clip_to_image,
            progress=out,
        )
        for warning in result.warnings:
            out.warn(warning)
        payload = result.to_json()
        if output is not None:
            with out.step("drawing"):
                save_image(draw_detections(load_image(image), result.detections), output)
            payload["output"] = str(output)
        out.result(payload, lambda console: render(console, payload))

    run_guarded(out, action)


def render(console: Console, payload: dict[str, Any]) -> None:
    size = payload["image_size"]
    detections = payload["detections"]
    where = f"{escape(payload['image'])} ({size['width']}×{size['height']})"
    if not detections:
        console.print(f"no detections above {payload['threshold']:g} in {where}")
    else:
        table = Table(
            "#",
            "query",
            "score",
            "x0",
            "y0",
            "x1",
            "y1",
            title=f"{len(detections)} detections above {payload['threshold']:g} in {where}",
        )
        for column in table.columns[2:]:
            column.justify = "right"
        for rank, item in enumerate(detections, 1):
            x0, y0, x1, y1 = item["box"]
            table.add_row(
                str(rank),
                escape(item["query"]),
                f"{item['score']:.3f}",
                *(f"{v:.1f}" for v in (x0, y0, x1, y1)),
            )
        console.print(table)
    if "output" in payload:
        console.print(f"[green]✓[/green] wrote {escape(payload['output'])}")
