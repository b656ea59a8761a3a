"""`make demo`: the whole job on a built-in example, as a user would run it.

Builds a tiny OWLv2 checkpoint in scenic's released-v2 format (random weights: the tool
cannot download real ones here), then runs inspect → convert → verify → detect through the
real `owlvit` entry point, printing each command before its output, and ends with the
commands that do the same with a released checkpoint (the README's walkthrough, which
tests/test_docs.py holds to these lines).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import build_checkpoint

WORKDIR = Path("demo")
QUERIES = ("a house", "a red car", "a tree", "a cat")
RELEASED = "https://storage.googleapis.com/scenic-bucket/owl_vit/checkpoints/clip_vit_b32_b0203fc"
NEXT_STEPS = (
    f"curl -LO {RELEASED}",
    "owlvit convert clip_vit_b32_b0203fc owlvit-b32 --verify",
    'owlvit detect owlvit-b32 street.jpg --query "a bus" --query "a bicycle" --output found.png',
    "owlvit push owlvit-b32 owlvit-b32-scenic --dry-run",
    "owlvit push owlvit-b32 owlvit-b32-scenic",
)


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
    print_next_steps()


def print_next_steps() -> None:
    """What to type next, with a released checkpoint and a photo of your own."""
    venv_bin = Path(os.path.relpath(Path(sys.executable).parent))
    print(
        "\nNext, the same with a released checkpoint (583 MiB) and a photo of yours, street.jpg."
        f"\nPut owlvit on PATH first with `source {venv_bin / 'activate'}`,"
        f" or type {venv_bin / 'owlvit'} for owlvit.\n"
    )
    for line in NEXT_STEPS:
        print(f"  {line}")
    print("\nMore in README.md and docs/.")


if __name__ == "__main__":
    main()
