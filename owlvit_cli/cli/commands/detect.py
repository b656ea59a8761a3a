"""`owlvit detect HF_DIR IMAGE --query TEXT...`: run a converted model on a picture."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from owlvit_cli.cli import process
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
        "owlvit detect owlv2-b16 street.jpg --image-query example.jpg --query-box 40,60,180,200",
        "owlvit detect owlv2-b16 street.jpg --image-query example_crop.jpg --json",
    )
)

# Boxes drawn on the picture when --max-detections does not say: at a low threshold thousands
# pass, and thousands of labels bury the picture; the best few are what a look at it is for.
DEFAULT_MAX_DRAWN = 25


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
        list[Path] | None,
        typer.Option(
            "--image-query",
            metavar="IMAGE",
            help="An example image to find things like (one-shot detection). With --query-box, "
            "the box's query embedding is chosen as scenic's notebook chooses it; without, "
            "transformers' rule applies (OWL-ViT: the box overlapping the whole image most, "
            "least like the image's mean; OWLv2: the most object-like box). Repeat with one "
            "--query-box each for several examples.",
            autocompletion=complete_files,
        ),
    ] = None,
    query_box: Annotated[
        list[str] | None,
        typer.Option(
            "--query-box",
            metavar="X0,Y0,X1,Y1",
            help="The example's box in the query image's pixels; repeat for several boxes "
            "on one query image, or give one per --image-query.",
        ),
    ] = None,
    query_embedding: Annotated[
        Path | None,
        typer.Option(
            "--query-embedding",
            metavar="FILE.npy",
            help="Query with embeddings saved by --save-query-embedding (same model), no "
            "query image needed.",
            autocompletion=complete_files,
        ),
    ] = None,
    save_query_embedding: Annotated[
        Path | None,
        typer.Option(
            "--save-query-embedding",
            metavar="FILE.npy",
            help="Also write the query boxes' embeddings ([Q, E] float32) for reuse with "
            "--query-embedding.",
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
        typer.Option(
            "--max-detections",
            metavar="N",
            help="Report (and draw) at most the N best boxes. Without it every box above "
            f"--threshold is reported and the best {DEFAULT_MAX_DRAWN} are drawn.",
        ),
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
        from owlvit_cli.atomic import check_not_input, check_writable_file
        from owlvit_cli.runtime.draw import draw_detections, output_format, save_image
        from owlvit_cli.scenic.preprocess import load_image

        if output is not None:
            output_format(output)  # refuse a bad suffix before loading anything
        sources = [p for p in (image, hf_dir, *(image_query or []), query_embedding) if p]
        for target in (t for t in (output, save_query_embedding) if t is not None):
            check_writable_file(target)
            for source in sources:
                check_not_input(target, source, directory=False)  # never over the photo
        result = detect_objects(
            hf_dir,
            image,
            query,
            threshold,
            image_query=image_query,
            query_boxes=query_box or (),
            query_embedding=query_embedding,
            save_query_embedding_to=save_query_embedding,
            max_detections=max_detections,
            preprocessing=preprocessing,
            clip_to_image=clip_to_image,
            progress=out,
        )
        for warning in result.warnings:
            out.warn(warning)
        payload = result.to_json()
        if output is not None:
            # With --max-detections the list is already the N asked for.
            drawn = result.detections[: max_detections or DEFAULT_MAX_DRAWN]
            with out.step("drawing"):
                save_image(draw_detections(load_image(image), drawn), output)
            payload["output"] = str(output)
            payload["drawn"] = len(drawn)
        out.result(payload, lambda console: render(console, payload))

    with collector_paused():
        run_guarded(out, action)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a detection. torch and transformers make millions
    of objects as they import, and each full pass of the collector scans them all (1.3-1.6 s
    of a B/16 detection, 8 passes freeing next to nothing); a detection's memory is tensors
    and buffers, freed by reference counting. A console-script process ends right after the
    command and never turns it back on (a first pass over everything imported would cost the
    same again); an in-process caller gets the collector back as it had it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled and not process.should_exit_now():
            gc.enable()


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
            title=f"{counted(len(detections), payload['total'])} above "
            f"{payload['threshold']:g} in {where}",
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
    for box in payload.get("query_boxes", []):
        console.print(
            f"query {escape(box['label'])}: predicted box {box['box_index']} "
            f"(of {box['candidates']} candidates)"
        )
    if "output" in payload:
        console.print(f"[green]✓[/green] wrote {escape(payload['output'])}{drawn_note(payload)}")
    if payload.get("saved_query_embedding"):
        console.print(f"[green]✓[/green] wrote {escape(payload['saved_query_embedding'])}")


def counted(shown: int, total: int) -> str:
    """ "5 of 3,365 detections" when a cap kept the best few, "3,365 detections" otherwise."""
    noun = "detection" if total == 1 else "detections"
    return f"{shown:,} of {total:,} {noun}" if shown < total else f"{total:,} {noun}"


def drawn_note(payload: dict[str, Any]) -> str:
    """What the picture shows when it is not every detection (the default cap)."""
    drawn, listed = payload["drawn"], len(payload["detections"])
    if drawn >= listed:
        return ""
    return f" with the best {drawn} of {listed:,} boxes (--max-detections N draws N)"
