"""`owlvit detect --image-query IMG --query-box ...`: scenic's image-conditioned detection on the
converted model, against the scenic-exact Flax model doing the same selection, scoring and NMS
(both OWL versions), saved embeddings, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.scenic.image_query import relative_box_yxyx, select_query_embedding
from owlvit_cli.verify.tolerances import STOCK_TOLERANCES
from tests.helpers import SAMPLE, reference_checkpoint, run_console_script

CAR = "300,295,500,414"
HOUSE = "80,100,300,330"


def flax_image_conditioned(
    checkpoint: Path, query: Path, boxes: list[str], target: Path, threshold: float
) -> tuple[list[int], list[dict]]:
    """The Flax model's own image-conditioned detections, as scenic's notebook computes them."""
    from owlvit_cli.checkpoint.inspection import checkpoint_spec
    from owlvit_cli.checkpoint.reader import open_checkpoint
    from owlvit_cli.scenic.flax_model import FlaxRunner
    from owlvit_cli.scenic.image_query import nms_keep, parse_box
    from owlvit_cli.scenic.preprocess import load_image, preprocess

    with open_checkpoint(checkpoint) as ckpt:
        spec = checkpoint_spec(ckpt)
        runner = FlaxRunner(spec, ckpt.params_tree(np.float32))
    size = spec.vision.image_size
    query_image, target_image = load_image(query), load_image(target)
    out = runner.image_embed(preprocess(query_image, size, "notebook")[None])
    chosen = [
        select_query_embedding(
            out["class_embeddings_unnormalized"][0],
            out["pred_boxes"][0],
            relative_box_yxyx(parse_box(box), *query_image.shape[:2]),
        )
        for box in boxes
    ]
    queries = np.stack([c.embedding for c in chosen])[None]
    found = runner.detect_with_embeddings(
        preprocess(target_image, size, "notebook")[None], queries, np.ones(queries.shape[:2])
    )
    logits = found["pred_logits"][0]
    scores = 1 / (1 + np.exp(-logits.max(axis=1).astype(np.float64)))
    keep = nms_keep(scores, found["pred_boxes"][0], 0.7) & (scores > threshold)
    side = max(target_image.shape[:2])
    detections = []
    for i in np.flatnonzero(keep):
        cx, cy, w, h = found["pred_boxes"][0][i]
        box = [(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side]
        detections.append({"score": scores[i], "box": box, "query_index": int(logits[i].argmax())})
    detections.sort(key=lambda d: -d["score"])
    return [c.index for c in chosen], detections


@pytest.mark.parametrize("name", ["v1_release", "v2_release"])
def test_detections_equal_the_flax_models(cli, converted, name, tmp_path):
    checkpoint = reference_checkpoint(name)
    hf_dir = converted(checkpoint)
    street = tmp_path / "street.png"  # another picture of another size as the target
    Image.open(SAMPLE).resize((500, 380)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(street)
    boxes = [CAR, HOUSE]
    args = [hf_dir, street, "--image-query", SAMPLE, "--query-box", CAR, "--query-box", HOUSE]
    result = cli("detect", *args, "--preprocessing", "notebook", "--threshold", "0.05", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    indices, expected = flax_image_conditioned(checkpoint, SAMPLE, boxes, street, 0.05)
    assert payload["mode"] == "image_box" and payload["nms_threshold"] == 0.7
    assert [b["box_index"] for b in payload["query_boxes"]] == indices
    assert payload["queries"] == [f"sample.png@{CAR}", f"sample.png@{HOUSE}"]
    found = payload["detections"]
    assert expected and len(found) == len(expected)
    tol = STOCK_TOLERANCES["image_query_logits"]
    for got, want in zip(found, expected, strict=True):
        assert got["query_index"] == want["query_index"]
        assert abs(got["score"] - want["score"]) <= tol
        np.testing.assert_allclose(got["box"], want["box"], atol=1e-3 * 500)


def test_saved_embedding_gives_the_same_detections(cli, converted, tmp_path):
    hf_dir = converted(reference_checkpoint("v2_release"))
    saved = tmp_path / "car.npy"
    first = cli("detect", hf_dir, SAMPLE, "--image-query", SAMPLE, "--query-box", CAR,
                "--save-query-embedding", saved, "--threshold", "0", "--json")  # fmt: skip
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["saved_query_embedding"] == str(saved)
    embedding = np.load(saved)
    assert embedding.dtype == np.float32 and embedding.shape == (1, 8)
    again = cli("detect", hf_dir, SAMPLE, "--query-embedding", saved, "--threshold", "0", "--json")
    assert again.exit_code == 0, again.stderr
    before, after = json.loads(first.stdout), json.loads(again.stdout)
    assert after["mode"] == "embedding" and after["queries"] == ["car.npy"]
    assert [d["box"] for d in after["detections"]] == [d["box"] for d in before["detections"]]
    assert [d["score"] for d in after["detections"]] == [d["score"] for d in before["detections"]]
    assert not list(tmp_path.glob(".*owlvit-tmp*"))


def test_python_api_takes_a_box_and_returns_the_embedding(converted):
    from owlvit_cli import detect_objects, embed_image_query

    hf_dir = converted(reference_checkpoint("v1_release"))
    embedding = embed_image_query(hf_dir, SAMPLE, (300, 295, 500, 414))
    assert embedding.shape == (16,)
    result = detect_objects(hf_dir, SAMPLE, image_query=SAMPLE, query_boxes=[(300, 295, 500, 414)])
    np.testing.assert_array_equal(result.image_queries.embeddings[0], embedding)


def test_without_a_box_transformers_rule_stays(cli, converted):
    hf_dir = converted(reference_checkpoint("v2_release"))
    result = cli("detect", hf_dir, SAMPLE, "--image-query", SAMPLE, "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["mode"] == "image" and payload["nms_threshold"] == 0.3
    assert payload["query_boxes"] == []


def test_human_output_names_the_chosen_box(cli, converted):
    hf_dir = converted(reference_checkpoint("v2_release"))
    result = cli("detect", hf_dir, SAMPLE, "--image-query", SAMPLE, "--query-box", CAR)
    assert result.exit_code == 0, result.stderr
    assert f"query sample.png@{CAR}: predicted box " in result.stdout


ERRORS = {
    "box without image": (["--query-box", CAR], "needs the query image it is drawn on"),
    "degenerate box": (["--image-query", "SAMPLE", "--query-box", "10,10,10,50"], "is empty"),
    "box outside": (["--image-query", "SAMPLE", "--query-box", "700,0,800,50"], "outside the"),
    "bad box text": (["--image-query", "SAMPLE", "--query-box", "1,2,3"], "four numbers"),
    "images without boxes": (
        ["--image-query", "SAMPLE", "--image-query", "SAMPLE"],
        "several query images need a query box each",
    ),
    "images and boxes unpaired": (
        ["--image-query", "SAMPLE", "--image-query", "SAMPLE"] + ["--query-box", CAR] * 3,
        "2 query images and 3 query boxes",
    ),
    "save without box": (
        ["--image-query", "SAMPLE", "--save-query-embedding", "OUT/e.npy"],
        "needs a query box",
    ),
    "text and embedding": (["--query", "x", "--query-embedding", "NPY8"], "one kind of query"),
    "wrong width": (["--query-embedding", "NPY16"], "16 wide, this model's are 8"),
    "not an array": (["--query-embedding", "SAMPLE"], "not a readable .npy array"),
    "npz": (["--query-embedding", "NPZ"], "an .npz archive"),
    "directory": (["--query-embedding", "OUT"], "is a directory, not a regular file"),
    "missing": (["--query-embedding", "OUT/nope.npy"], "nope.npy: no such file"),
    "over the photo": (
        ["--image-query", "SAMPLE", "--query-box", CAR, "--save-query-embedding", "SAMPLE"],
        "input",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_exit_2_with_one_line(converted, tmp_path, case):
    hf_dir = converted(reference_checkpoint("v2_release"))
    np.save(tmp_path / "q16.npy", np.ones((1, 16), np.float32))
    np.save(tmp_path / "q8.npy", np.ones((2, 8), np.float32))
    np.savez(tmp_path / "q.npz", a=np.ones(3))
    places = {"SAMPLE": str(SAMPLE), "NPY16": str(tmp_path / "q16.npy"),
              "NPY8": str(tmp_path / "q8.npy"), "NPZ": str(tmp_path / "q.npz")}  # fmt: skip
    args, expected = ERRORS[case]
    args = [places.get(a, a.replace("OUT", str(tmp_path))) for a in args]
    proc = run_console_script("detect", hf_dir, SAMPLE, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    assert proc.stdout == ""
    assert not (tmp_path / "e.npy").exists()
