"""`owlvit detect HF_DIR IMAGE --query TEXT...`: run a converted model on a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from owlvit_cli.cli.commands.common import DebugOption, HFDirArg, JsonOption, make_output
from owlvit_cli.cli.output import run_guarded


def register(app: typer.Typer) -> None:
    app.command("detect")(detect_command)


def detect_command(
    hf_dir: HFDirArg,
    image: Annotated[Path, typer.Argument(help="The picture to search.")],
    query: Annotated[
        list[str] | None,
        typer.Option("--query", "-q", metavar="TEXT", help="A text query; repeat for several."),
    ] = None,
    image_query: Annotated[
        Path | None,
        typer.Option(
            "--image-query",
            help="An example crop to find instead of text queries (one-shot detection).",
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Report boxes scoring above this (0 to 1).")
    ] = 0.1,
    max_detections: Annotated[
        int | None, typer.Option("--max-detections", help="Report at most this many boxes.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Also draw the boxes on the image and write it here (.png…)."
        ),
    ] = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Detect text queries (or things like an example crop) in an image with a converted
    model and its saved processor, offline; optionally draw the boxes."""
    out = make_output(json_mode, debug)

    def action() -> None:
        from owlvit_cli.detect.draw import draw_detections, output_format, save_image
        from owlvit_cli.detect.run import detect
        from owlvit_cli.scenic.preprocess import load_image

        if output is not None:
            from owlvit_cli.atomic import check_not_input

            output_format(output)  # refuse a bad suffix before loading anything
            for source in (image, hf_dir, image_query):
                if source is not None:
                    check_not_input(output, source, directory=False)  # never over the photo
        result = detect(
            hf_dir,
            image,
            query,
            threshold,
            image_query=image_query,
            max_detections=max_detections,
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
