"""Photos as users take them: a 4000×3000 JPEG through each preprocessing of `owlvit detect`.

Each row times, in this process, what `detect` does to a photo before the model's forward
pass under one `--preprocessing` (decode the file, then the pixels the model sees), beside
what a transformers user does with the same file: `Image.open` and the processor that
`AutoProcessor.from_pretrained(HF_DIR)` loads from a converted directory. The cases run in
interleaved rounds, so load from other processes falls on all of them alike; a row gives the
median of the rounds after the first and, apart, the first (a process's first call: lazy
imports, cold caches).

The transformers processor pads the photo to a 4000×4000 square and blurs all of it before
resizing, so `--preprocessing processor` cannot be faster than that processor's own work: the
"alone" rows measure it on the decoded array, the floor of that path.

Usage: .venv/bin/python bench/photo.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path[:1]:  # the code of this checkout, not whatever the venv installed
    sys.path.insert(0, str(ROOT))

PHOTO = ROOT / "bench" / "out" / "photo_4000x3000.jpg"
PHOTO_WIDTH, PHOTO_HEIGHT = 4000, 3000
JPEG_QUALITY = 90
# The released input sizes, each with a released variant whose converted files say so.
SIZES = {768: "v1-b32", 960: "v2-b16", 1008: "v2-l14"}
SCENIC_PIPELINES = ("notebook", "evaluator")
TARGET_SECONDS = 1.0  # preprocessing beyond the forward pass, per photo
TARGET = f"≤ {TARGET_SECONDS:g} s"
BASELINE = "transformers: Image.open + AutoProcessor(images=PIL)"
# The case that once took 5-10 s: a 1920×1080 photo at the tiny test model's input size.
SMALL_PHOTO = (1080, 1920)
TINY_SIZE = 64


def write_photo(path: Path) -> Path:
    """A smooth, photo-like 4000×3000 JPEG (gradients, waves, sensor-like noise), made once:
    noise alone would compress badly and decode slower than any photograph."""
    if path.exists():
        return path
    from PIL import Image

    rng = np.random.default_rng(0)
    y = np.linspace(0.0, 1.0, PHOTO_HEIGHT, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, PHOTO_WIDTH, dtype=np.float32)[None, :]
    channels = [
        0.5
        + 0.25 * np.sin(2 * np.pi * (x * (1.5 + k) + y * (0.7 + 0.3 * k)))
        + 0.2 * np.cos(2 * np.pi * (3 * x * y + 0.2 * k))
        + rng.normal(0.0, 0.03, (PHOTO_HEIGHT, PHOTO_WIDTH)).astype(np.float32)
        for k in range(3)
    ]
    pixels = np.clip(np.stack(channels, axis=-1) * 255, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.jpg")
    Image.fromarray(pixels).save(partial, quality=JPEG_QUALITY)
    partial.replace(path)
    return path


def load_processors(directory: Path) -> dict[int, Any]:
    """{input size: the processor transformers loads from a converted directory's files}."""
    from transformers import AutoProcessor

    from owlvit_cli.convert.hf_files import write_hf_files
    from owlvit_cli.model.spec import VARIANTS

    processors = {}
    for size, variant in SIZES.items():
        hf_dir = directory / variant
        hf_dir.mkdir()
        write_hf_files(hf_dir, VARIANTS[variant], "float32")
        processors[size] = AutoProcessor.from_pretrained(str(hf_dir), local_files_only=True)
    return processors


def detect_pixels(path: Path, size: int, pipeline: str, processor: Any) -> Any:
    """What `owlvit detect` does before the forward pass: decode, then the model's pixels
    (the same calls as `detect.run.model_pixels`, which needs a loaded model for the size)."""
    import torch

    from owlvit_cli.runtime.pixels import normalize_pixels, processor_pixels
    from owlvit_cli.scenic.preprocess import load_image, preprocess

    image = load_image(path)
    if pipeline == "processor":
        return processor_pixels(processor.image_processor, image)
    return torch.from_numpy(normalize_pixels(preprocess(image, size, pipeline)[None]))  # type: ignore[arg-type]


def transformers_pixels(path: Path, processor: Any) -> Any:
    """A transformers user's preprocessing of the same file."""
    from PIL import Image

    with Image.open(path) as image:
        return processor(images=image, return_tensors="pt")["pixel_values"]


def rounds(cases: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[float]]:
    """Wall seconds of each case in 1 + `runs` interleaved rounds; the first is round 0."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(1 + runs):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def row(
    name: str,
    seconds: list[float],
    baseline: tuple[str, list[float]] | None = None,
    target: bool = True,
) -> dict[str, Any]:
    """A table row: warm median, first run apart; `met` against the target when it has one."""
    median = statistics.median(seconds[1:] or seconds)
    base_name, base = baseline or ("", None)
    return {
        "name": name,
        "median_s": median,
        "first_s": seconds[0],
        "baseline_name": base_name,
        "baseline_median_s": statistics.median(base[1:] or base) if base else None,
        "baseline_first_s": base[0] if base else None,
        "target": TARGET if target else "",
        "met": median <= TARGET_SECONDS if target else None,
    }


def pil_decode(path: Path) -> np.ndarray:
    """The plain way to read the photo's pixels: the floor under `load_image`."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def photo_cases(path: Path, processors: dict[int, Any]) -> dict[str, Callable[[], Any]]:
    from owlvit_cli.runtime.pixels import processor_pixels
    from owlvit_cli.scenic.preprocess import load_image

    decoded = load_image(path)
    cases: dict[str, Callable[[], Any]] = {
        "decode": partial(load_image, path),
        "pil": partial(pil_decode, path),
    }
    for size, processor in processors.items():
        for pipeline in (*SCENIC_PIPELINES, "processor"):
            cases[f"{pipeline} {size}"] = partial(detect_pixels, path, size, pipeline, processor)
        cases[f"transformers {size}"] = partial(transformers_pixels, path, processor)
        cases[f"alone {size}"] = partial(processor_pixels, processor.image_processor, decoded)
    return cases


def small_photo_cases() -> dict[str, Callable[[], Any]]:
    from owlvit_cli.scenic.preprocess import preprocess

    small = np.random.default_rng(1).integers(0, 256, (*SMALL_PHOTO, 3), dtype=np.uint8)
    return {f"small {p}": partial(preprocess, small, TINY_SIZE, p) for p in SCENIC_PIPELINES}


def bench_photo(runs: int) -> list[dict[str, Any]]:
    """Rows (name, median_s, first_s, baseline_name, baseline_median_s, baseline_first_s,
    target, met) for a 4000×3000 JPEG through each preprocessing at each released size."""
    path = write_photo(PHOTO)
    photo = f"{PHOTO_WIDTH}×{PHOTO_HEIGHT} JPEG"
    with tempfile.TemporaryDirectory(prefix="owlvit-photo-bench-") as directory:
        processors = load_processors(Path(directory))  # first, as detect loads the model first
        seconds = rounds({**photo_cases(path, processors), **small_photo_cases()}, runs)
    rows = [
        row(
            f"decode {photo} (load_image)",
            seconds["decode"],
            ("PIL open + np.asarray", seconds["pil"]),
            target=False,
        )
    ]
    for size in SIZES:
        transformers = (BASELINE, seconds[f"transformers {size}"])
        for pipeline in (*SCENIC_PIPELINES, "processor"):
            name = f"detect --preprocessing {pipeline}, {size} px: decode + pixels ({photo})"
            rows.append(row(name, seconds[f"{pipeline} {size}"], transformers))
        name = f"transformers processor alone, {size} px (decoded array in: that path's floor)"
        rows.append(row(name, seconds[f"alone {size}"], target=False))
    for pipeline in SCENIC_PIPELINES:
        height, width = SMALL_PHOTO
        name = f"{pipeline} pixels, {width}×{height} array at {TINY_SIZE} px (the tiny test model)"
        rows.append(row(name, seconds[f"small {pipeline}"]))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    header = "measurement | median | first run | baseline | baseline median | baseline first"
    lines = [f"| {header} | target | met |", "|---|---:|---:|---|---:|---:|---|:-:|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(
            f"| {r['name']} | {_seconds(r['median_s'])} | {_seconds(r['first_s'])} | "
            f"{r['baseline_name']} | {_seconds(r['baseline_median_s'])} | "
            f"{_seconds(r['baseline_first_s'])} | {r['target']} | {met} |"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm rounds after the first (3)")
    args = parser.parse_args(argv)
    start_load = _load()
    rows = bench_photo(max(1, args.runs))
    print(f"{os.cpu_count()} CPUs · load average at start {start_load}, at end {_load()} · "
          f"runs {args.runs} + the first\n")  # fmt: skip
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
