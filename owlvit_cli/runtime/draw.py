"""Pictures of detections: boxes and labels drawn on the image, one picture or two side by side,
written atomically in the format the file name asks for."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from owlvit_cli.errors import BadInputError
from owlvit_cli.runtime.detection import Detection

OUTPUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


# Sasha Trubetskoy's "distinct colours": tell apart on photos and for most colour-blind eyes.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)


def output_format(path: Path) -> str:
    """Pillow format name for `path`'s suffix; refuse what we cannot write before any work."""
    suffix = path.suffix.lower()
    fmt = OUTPUT_FORMATS.get(suffix)
    Image.init()
    if fmt is None or fmt not in Image.SAVE:
        known = ", ".join(s for s, f in OUTPUT_FORMATS.items() if f in Image.SAVE)
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise BadInputError(f"{path}: cannot tell the image format from {shown} (use {known})")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"{parent}: parent directory does not exist")
    return fmt


@dataclass(frozen=True)
class _Box:
    box: tuple[float, float, float, float]
    label: str
    score: float
    key: Any  # what picks the colour: the query index, or the label


def draw_detections(
    image: Image.Image | np.ndarray,
    detections: Iterable[Detection | Mapping[str, Any]],
    *,
    show_scores: bool = True,
) -> Image.Image:
    """The image with each detection's box and "label score" drawn on it, one colour per query.

    `detections` are `Detection`s or dicts with `box` [x0, y0, x1, y1] (pixels), `label` (or
    `query`), `score` and optionally `query_index`. The input image is not modified.
    """
    canvas = _as_rgb(image).copy()
    boxes = [_box_of(d) for d in detections]
    _draw_boxes(canvas, boxes, _colours(boxes), show_scores)
    return canvas


def draw_side_by_side(
    image_uint8: np.ndarray,
    left: list[dict[str, Any]],
    right: list[dict[str, Any]],
    left_title: str,
    right_title: str,
) -> Image.Image:
    """Two copies of one image with two sets of detections, titled, for comparing models.

    A label has the same colour in both panels, so matching detections are easy to pair.
    Each detection is a dict with `box` [x0, y0, x1, y1] in pixels, `label` and `score`.
    """
    base = _as_rgb(image_uint8)
    width, height = base.size
    sizes = _sizes(width, height)
    left_boxes = [_box_of(d, use_index=False) for d in left]
    right_boxes = [_box_of(d, use_index=False) for d in right]
    colours = _colours(left_boxes + right_boxes)
    panels = []
    for boxes in (left_boxes, right_boxes):
        panel = base.copy()
        _draw_boxes(panel, boxes, colours, True)
        panels.append(panel)

    title_font = _font(round(sizes.font * 1.25))
    gap = max(8, sizes.font)
    title_height = _text_size(title_font, "Ag")[1] + 2 * sizes.pad + gap // 2
    picture = Image.new("RGB", (2 * width + gap, height + title_height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for index, (panel, title) in enumerate(((panels[0], left_title), (panels[1], right_title))):
        x = index * (width + gap)
        picture.paste(panel, (x, title_height))
        text = _fit_text(title_font, title, width)
        text_width, _ = _text_size(title_font, text)
        draw.text(
            (x + max(0, (width - text_width) // 2), sizes.pad),
            text,
            fill=(20, 20, 20),
            font=title_font,
        )
    return picture


def encode_image(image: Image.Image, path: Path) -> bytes:
    """The picture in the format `path`'s suffix names."""
    fmt = output_format(path)
    buffer = io.BytesIO()
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{path}: cannot write {fmt} ({exc})") from exc
    return buffer.getvalue()


def save_image(image: Image.Image, path: Path) -> None:
    """Write the picture whole or not at all."""
    from owlvit_cli.atomic import atomic_write_bytes

    atomic_write_bytes(path, encode_image(image, path))  # a refused write: an OutputError


@dataclass(frozen=True)
class _Sizes:
    font: int
    line: int
    pad: int


def _sizes(width: int, height: int) -> _Sizes:
    """Font and line width grow with the image, but never below what is readable."""
    scale = math.sqrt(width * height)
    font = max(11, round(scale * 0.026))
    return _Sizes(font=font, line=max(2, round(font / 5)), pad=max(2, round(font / 5)))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` (Pillow ≥ 10.1); its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, _, right, bottom = font.getbbox(text)
    return math.ceil(right - min(0, left)), math.ceil(bottom)


def _fit_text(font: Any, text: str, width: int) -> str:
    """Shorten a label with an ellipsis so it never runs off the picture."""
    if _text_size(font, text)[0] <= width or len(text) <= 1:
        return text
    while len(text) > 1 and _text_size(font, text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def _as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    return image.convert("RGB")


def _box_of(item: Detection | Mapping[str, Any], use_index: bool = True) -> _Box:
    if isinstance(item, Detection):
        return _Box(item.box, item.query, item.score, item.query_index if use_index else item.query)
    label = str(item.get("label", item.get("query", "")))
    x0, y0, x1, y1 = (float(v) for v in item["box"])
    key = item.get("query_index", label) if use_index else label
    return _Box((x0, y0, x1, y1), label, float(item.get("score", math.nan)), key)


def _colours(boxes: Sequence[_Box]) -> dict[Any, tuple[int, int, int]]:
    """Query indices pick their palette entry directly (stable across images); other keys
    take entries in order of first appearance."""
    colours: dict[Any, tuple[int, int, int]] = {}
    for box in boxes:
        if box.key in colours:
            continue
        if isinstance(box.key, int):
            colours[box.key] = PALETTE[box.key % len(PALETTE)]
        else:
            colours[box.key] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def _draw_boxes(
    canvas: Image.Image,
    boxes: Sequence[_Box],
    colours: Mapping[Any, tuple[int, int, int]],
    show_scores: bool,
) -> None:
    """Boxes with a dark halo (visible on any background), then labels on top of all boxes,
    lowest score first so the best detection is drawn last and stays readable."""
    width, height = canvas.size
    sizes = _sizes(width, height)
    font = _font(sizes.font)
    draw = ImageDraw.Draw(canvas)
    ordered = sorted(boxes, key=lambda b: b.score if not math.isnan(b.score) else -math.inf)
    for item in ordered:
        x0, y0, x1, y1 = _pixel_box(item.box, width, height)
        halo = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
        draw.rectangle(halo, outline=(0, 0, 0), width=sizes.line + 2)
        draw.rectangle((x0, y0, x1, y1), outline=colours[item.key], width=sizes.line)
    for item in ordered:
        x0, y0, _, _ = _pixel_box(item.box, width, height)
        text = item.label
        if show_scores and not math.isnan(item.score):
            text = f"{text} {item.score:.2f}"
        text = _fit_text(font, text, width - 2 * sizes.pad)
        text_width, text_height = _text_size(font, text)
        label_width, label_height = text_width + 2 * sizes.pad, text_height + 2 * sizes.pad
        lx = min(max(0, x0), max(0, width - label_width))
        ly = y0 - label_height if y0 - label_height >= 0 else y0  # above the box, else inside
        ly = min(ly, max(0, height - label_height))
        colour = colours[item.key]
        draw.rectangle((lx, ly, lx + label_width - 1, ly + label_height - 1), fill=colour)
        draw.text((lx + sizes.pad, ly + sizes.pad), text, fill=_ink(colour), font=font)


def _pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
    return round(x0), round(y0), round(x1), round(y1)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on the label's colour."""
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)
