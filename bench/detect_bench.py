"""`owlvit detect` against what a user pays with transformers alone.

The baseline is a fresh Python process that imports `pipeline`, builds
`pipeline("zero-shot-object-detection", model=HF_DIR)` and calls it once on the same image and
query: what the model card's snippet costs. Each `owlvit detect --json` run (one per
preprocessing) is a fresh process too, as a user would start it, and the runs are interleaved
with the baseline's (order rotated each round) so that load from other users of a shared
machine lands on both alike. Figures are medians; peak RSS comes from `os.wait4` on each child.

Usage: .venv/bin/python bench/detect_bench.py [--runs 5] [--model HF_DIR] (default: the
forwards section's v2 B/16 fixture, built once)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forwards import fixture
from measure import MIB, OWLVIT, PYTHON, ROOT, Sample, run_measured

OUT = ROOT / "bench" / "out" / "detect"
QUERY = "a photo of a cat"
PREPROCESSINGS = ("processor", "notebook", "evaluator")
TARGET_RATIO = 1.1
PIPELINE_NAME = "transformers pipeline (start, import, load, one call)"
SAMPLE_IMAGE = ROOT / "owlvit_cli" / "assets" / "sample.png"
# The card's snippet as a script: a user's whole process, output printed as a user would.
PIPELINE_SCRIPT = """\
import sys
from transformers import pipeline

detector = pipeline("zero-shot-object-detection", model=sys.argv[1])
print(detector(sys.argv[2], candidate_labels=[sys.argv[3]], threshold=0.1))
"""
# Both sides offline: a Hub lookup (or its timeout) is no part of what is compared. The
# console script runs this checkout's package, wherever the venv's own install points.
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CHILD_ENV["PYTHONPATH"] = PYTHONPATH


def measure(cmd: Sequence[str | Path]) -> Sample:
    """One child process, offline, this checkout's package; stdout discarded."""
    OUT.mkdir(parents=True, exist_ok=True)
    return run_measured(cmd, env=CHILD_ENV)


def pipeline_command(hf_dir: Path, image: Path) -> list[str | Path]:
    script = OUT / "pipeline_detect.py"
    OUT.mkdir(parents=True, exist_ok=True)
    if not script.exists() or script.read_text() != PIPELINE_SCRIPT:
        script.write_text(PIPELINE_SCRIPT)
    return [PYTHON, script, hf_dir, image, QUERY]


def detect_command(hf_dir: Path, image: Path, preprocessing: str) -> list[str | Path]:
    return [OWLVIT, "detect", hf_dir, image, "--query", QUERY, "--json",
            "--preprocessing", preprocessing]  # fmt: skip


def bench_detect(hf_dir: Path, image: Path, runs: int) -> list[dict[str, Any]]:
    """A row per preprocessing (median of `runs` fresh `owlvit detect` processes) beside the
    pipeline's median over the same rounds, and the pipeline's own row."""
    commands = {"pipeline": pipeline_command(hf_dir, image)}
    commands |= {p: detect_command(hf_dir, image, p) for p in PREPROCESSINGS}
    for cmd in commands.values():  # warm-up: files into the page cache, .pyc written
        measure(cmd)
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(runs):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(measure(commands[name]))
    label = f"{image.name} {image_size(image)}"
    rows = [row(f"{PIPELINE_NAME}, {label}", samples["pipeline"])]
    for preprocessing in PREPROCESSINGS:
        name = f"owlvit detect --preprocessing {preprocessing}, {label}"
        rows.append(row(name, samples[preprocessing], samples["pipeline"]))
    return rows


def row(name: str, samples: list[Sample], base: list[Sample] | None = None) -> dict[str, Any]:
    """A measurement beside its baseline; `cpu_s` and `wall_s` (every run) say how much of a
    difference the machine's other users may have made."""
    median = statistics.median(s.seconds for s in samples)
    base_median = None if base is None else statistics.median(s.seconds for s in base)
    ratio = None if base_median is None else median / base_median
    return {
        "name": name,
        "median_s": median,
        "baseline_name": None if base is None else "pipeline",
        "baseline_median_s": base_median,
        "ratio": ratio,
        "peak_rss_mib": max(s.max_rss for s in samples) / MIB,
        "target": None if base is None else f"≤ {TARGET_RATIO}× pipeline",
        "met": None if ratio is None else ratio <= TARGET_RATIO,
        "cpu_s": statistics.median(s.cpu for s in samples),
        "wall_s": [round(s.seconds, 2) for s in samples],
    }


def image_size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return f"{image.width}×{image.height}"


def bench_images() -> list[Path]:
    """A 640×480 JPEG made from the bundled sample picture and a 1920×1080 photo-like one
    (the sample scaled up, with sensor-like noise so JPEG decoding costs what a photo's does)."""
    import numpy as np
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    small, large = OUT / "sample-640x480.jpg", OUT / "photo-1920x1080.jpg"
    with Image.open(SAMPLE_IMAGE) as sample:
        rgb = sample.convert("RGB")
    if not small.exists():
        rgb.resize((640, 480), Image.Resampling.BICUBIC).save(small, quality=90)
    if not large.exists():
        big = np.asarray(rgb.resize((1920, 1080), Image.Resampling.BICUBIC), np.int16)
        noise = np.random.default_rng(0).normal(0, 6, big.shape).astype(np.int16)
        Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(large, quality=90)
    return [small, large]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| measurement | median | baseline | baseline median | ratio | peak RSS | target | met "
        "| CPU (median) | every run |",
        "|---|---:|---|---:|---:|---:|---|:-:|---:|---|",
    ]
    for r in rows:
        base = "–" if r["baseline_median_s"] is None else f"{r['baseline_median_s']:.2f} s"
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['name']} | {r['median_s']:.2f} s | {r['baseline_name'] or ''} | {base} | "
            f"{ratio} | {r['peak_rss_mib']:,.0f} MiB | {r['target'] or ''} | {met} | "
            f"{r['cpu_s']:.1f} s | {', '.join(map(str, r['wall_s']))} |"
        )
    return "\n".join(lines)


def conditions(runs: int) -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return (
        f"commit {commit} · {os.cpu_count()} CPUs · load average at start {load} · "
        f"median of {runs} interleaved runs after one warm-up run each (files in page cache)"
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, action="append", help="HF_DIR (repeatable)")
    parser.add_argument("--image", type=Path, action="append", help="default: both bench images")
    args = parser.parse_args(argv)
    print(conditions(args.runs), flush=True)
    rows = []
    for hf_dir in args.model or [fixture("v2-b16")[1]]:
        for image in args.image or bench_images():
            found = bench_detect(hf_dir, image, args.runs)
            print(f"\n{hf_dir.name}\n\n{markdown(found)}", flush=True)
            rows += found
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
