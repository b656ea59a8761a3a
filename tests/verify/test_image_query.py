"""verify's image-conditioned check: both models choose the query embedding for the same
example boxes and score every image with it; rows at every level and dtype, and a different
choice fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from owlvit_cli.verify.compare import image_query_rows
from owlvit_cli.verify.inputs import SAMPLE_QUERY_BOX, VerifyOptions
from owlvit_cli.verify.run import run_verification
from tests.helpers import SAMPLE, problem_lines, reference_checkpoint, run_console_script

ROWS = ("image_query_box", "image_query_embedding", "image_query_logits", "image_query_top_k")


def rows_of(report: dict, level: str) -> dict[str, dict]:
    return {r["name"]: r for r in report["outputs"] if r["level"] == level}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["v1_release", "v2_release"])
def test_rows_at_every_level_and_dtype(converted, name, dtype):
    ckpt = reference_checkpoint(name)
    report = run_verification(ckpt, converted(ckpt, dtype), VerifyOptions()).report
    assert report["passed"], report["failed"]
    for level in ("mapping", "stock"):
        rows = rows_of(report, level)
        assert set(ROWS) <= set(rows), level
        assert rows["image_query_box"]["max_abs"] == 0.0  # the very same predicted box
    if dtype != "float32":  # what storing the weights in bfloat16 does to this path
        precision = rows_of(report, "precision")
        assert {"image_query_embedding", "image_query_logits"} <= set(precision)
    query = report["image_query"]
    assert query["image"] == "sample.png" and query["boxes"] == [list(SAMPLE_QUERY_BOX)]
    assert query["box_index"]["flax"] == query["box_index"]["stock"]


def test_a_different_choice_fails_and_says_which():
    ref = {
        "image_query_box": np.array([3, 7]),
        "image_query_logits": np.zeros((1, 9, 2), np.float32),
        "pred_boxes": np.full((1, 9, 4), 0.5, np.float32),
    }
    other = {**ref, "image_query_box": np.array([3, 8])}
    box, top = image_query_rows("stock", ref, other, 5, 1e-3)
    assert not box.passed and box.max_abs == 1.0
    assert box.note == "Flax chose [3, 7], transformers [3, 8]"
    assert top.passed
    same, _ = image_query_rows("stock", ref, ref, 5, 1e-3)
    assert same.passed and same.note == ""


def test_console_script_takes_an_example_box(tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint("v2-tiny")
    args = ["verify", ckpt, converted(ckpt), "--image-query", SAMPLE]
    proc = run_console_script(*args, "--query-box", "80,100,300,330", "--query-box",
                              "520,30,600,110", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["image_query"]["boxes"] == [[80, 100, 300, 330], [520, 30, 600, 110]]
    assert len(report["image_query"]["box_index"]["flax"]) == 2
    assert report["images"] == ["sample.png"]  # the query image is the first image: not twice


@pytest.mark.parametrize(
    ("box", "message"),
    [("1,2,3", "four numbers"), ("700,0,800,50", "outside the 640×448"), ("5,5,5,9", "empty")],
)
def test_bad_boxes_exit_2(tiny_checkpoint, converted, box, message):
    ckpt = tiny_checkpoint("v2-tiny")
    proc = run_console_script("verify", ckpt, converted(ckpt), "--query-box", box)
    assert proc.returncode == 2, proc.stderr
    lines = problem_lines(proc.stderr)  # the steps' progress lines aside
    assert len(lines) == 1 and message in lines[0], lines
