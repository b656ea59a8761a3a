"""`make demo`: the whole job on a built-in example, as a user would run it.

Builds a tiny OWLv2 checkpoint in scenic's released-v2 format (random weights: the tool
cannot download real ones here), then runs inspect → convert → verify → detect through the
real `owlvit` entry point, printing each command before its output.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import build_checkpoint

WORKDIR = Path("demo")
QUERIES = ("a house", "a red car", "a tree", "a cat")


def owlvit(*args: object) -> None:
    """Run one CLI command in a fresh process and stop the demo if it fails."""
    words = [str(a) for a in args]
    print(f"\n$ owlvit {shlex.join(words)}", flush=True)
    code = subprocess.call([sys.executable, "-m", "owlvit_cli", *words])
    if code != 0:
        sys.exit(code)


def main() -> None:
    from owlvit_cli.verify.inputs import sample_image_path

    WORKDIR.mkdir(exist_ok=True)
    checkpoint = WORKDIR / "owl2-tiny-random_checkpoint"
    if not checkpoint.exists():
        print(f"building a tiny random OWLv2 checkpoint in scenic's format: {checkpoint}")
        build_checkpoint(checkpoint, VARIANTS["v2-tiny"], layout="v2", seed=0)
    model_dir = WORKDIR / "owl2-tiny-hf"
    owlvit("inspect", checkpoint, "--depth", "3")
    owlvit("convert", checkpoint, model_dir, "--overwrite")
    owlvit("verify", checkpoint, model_dir, "--record")
    query_args = [word for query in QUERIES for word in ("--query", query)]
    picture = WORKDIR / "detections.png"
    owlvit(
        "detect",
        model_dir,
        sample_image_path(),
        *query_args,
        "--threshold",
        "0.05",
        "--output",
        picture,
    )
    print(f"\ndemo done: model in {model_dir}/, picture in {picture}")


if __name__ == "__main__":
    main()
