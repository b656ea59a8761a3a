"""`owlvit detect`: end to end on tiny random models (detections meaningless, pipeline real),
box scaling on non-square images against a hand computation, pictures, and every error path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.detect.run import (
    PALETTE,
    Detection,
    Detector,
    detect,
    detect_text,
    draw_detections,
    draw_side_by_side,
    load_detector,
)
from tests.helpers import run_console_script

SAMPLE = Path(__file__).parents[2] / "owlvit_cli" / "assets" / "sample.png"
SAMPLE_SIZE = (640, 448)


@pytest.fixture(scope="module", params=["v1-tiny", "v2-tiny"])
def model_dir(request: pytest.FixtureRequest, tiny_checkpoint, converted) -> Path:
    return converted(tiny_checkpoint(request.param))


@pytest.fixture(scope="module")
def v2_dir(tiny_checkpoint, converted) -> Path:
    return converted(tiny_checkpoint("v2-tiny"))


@pytest.fixture(scope="module")
def v2_detector(v2_dir: Path) -> Detector:
    return load_detector(v2_dir)


def write_noise(path: Path, width: int, height: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def assert_boxes_inside(payload: dict[str, Any]) -> None:
    width, height = payload["image_size"]["width"], payload["image_size"]["height"]
    for item in payload["detections"]:
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, item


def test_text_detection_json_and_picture(cli, model_dir, tmp_path):
    picture = tmp_path / "out.png"
    queries = ["a house", "a cat", "a red car"]
    args = [model_dir, SAMPLE, *(a for q in queries for a in ("--query", q))]
    result = cli("detect", *args, "--threshold", "0", "--json", "--output", picture)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert payload["image"] == str(SAMPLE) and payload["mode"] == "text"
    assert payload["image_size"] == {"width": SAMPLE_SIZE[0], "height": SAMPLE_SIZE[1]}
    assert payload["queries"] == queries and payload["threshold"] == 0.0
    assert payload["detections"], "threshold 0 keeps every box inside the image"
    scores = [d["score"] for d in payload["detections"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for item in payload["detections"]:
        assert item["query"] == queries[item["query_index"]]
    assert_boxes_inside(payload)
    assert payload["output"] == str(picture)
    with Image.open(picture) as drawn:
        assert drawn.format == "PNG" and drawn.size == SAMPLE_SIZE
    assert not list(tmp_path.glob(".*owlvit-tmp*"))  # atomic write left nothing behind

    none = cli("detect", *args, "--threshold", "1", "--json")
    assert none.exit_code == 0, none.stderr
    assert json.loads(none.stdout)["detections"] == []


def test_human_table_and_max_detections(cli, v2_dir):
    result = cli("detect", v2_dir, SAMPLE, "--query", "a house", "--threshold", "0",
                 "--max-detections", "3")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "3 detections above 0" in result.stdout and "a house" in result.stdout
    assert result.stderr == ""  # no spinner off a terminal
    empty = cli("detect", v2_dir, SAMPLE, "--query", "a house", "--threshold", "1")
    assert empty.exit_code == 0 and "no detections above 1" in empty.stdout


@pytest.mark.parametrize("size", [(40, 96), (96, 40)], ids=["tall", "wide"])
def test_non_square_boxes_match_hand_computation(v2_dir, v2_detector, tmp_path, size):
    """Boxes are relative to the padded square: scale both axes by the longer side, clip to
    the image, drop boxes wholly in the padding. Per-axis scaling would stretch them."""
    import torch

    width, height = size
    image_path = write_noise(tmp_path / "noise.png", width, height)
    queries = ["a house", "a cat"]
    result = detect(v2_dir, image_path, queries, threshold=0.0, detector=v2_detector)
    assert result.image_size == (width, height)

    processor, model = v2_detector.processor, v2_detector.model
    pixels = np.array(Image.open(image_path).convert("RGB"))
    inputs = processor(
        text=queries, images=pixels, return_tensors="pt", input_data_format="channels_last"
    )
    with torch.inference_mode():
        outputs = model(**inputs)
    logits = outputs.logits[0].double().numpy()  # [patches, queries]
    cx, cy, w, h = outputs.pred_boxes[0].double().numpy().T
    side = max(width, height)
    raw = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * side
    boxes = np.clip(raw, 0, [width, height, width, height])
    scores = 1 / (1 + np.exp(-logits.max(axis=1)))
    labels = logits.argmax(axis=1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = np.argsort(-scores[keep], kind="stable")
    expected_boxes, expected_scores = boxes[keep][order], scores[keep][order]

    got_boxes = np.array([d.box for d in result.detections])
    assert len(result.detections) == keep.sum() > 0
    np.testing.assert_allclose(got_boxes, expected_boxes, atol=1e-3)
    np.testing.assert_allclose([d.score for d in result.detections], expected_scores, atol=1e-6)
    assert [d.query_index for d in result.detections] == list(labels[keep][order])
    # The check has teeth: clipping happened, and per-axis scaling would give other boxes.
    assert (raw != boxes).any()
    stretched = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * [
        width, height, width, height
    ]  # fmt: skip
    assert not np.allclose(np.clip(stretched, 0, [width, height] * 2)[keep][order], got_boxes)


def test_three_row_image_is_not_read_sideways(v2_detector):
    """Given a [3, W, 3] array, the processor guesses channels-first; we must not let it."""
    import torch

    seen: dict[str, Any] = {}

    def recording(**inputs: Any) -> Any:
        seen.update(inputs)
        return v2_detector.model(**inputs)

    detector = Detector(v2_detector.model_dir, recording, v2_detector.processor)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 50, 3), dtype=np.uint8)
    detect_text(detector, pixels, ["x"], threshold=0.0)
    expected = detector.processor(
        images=pixels, text=["x"], return_tensors="pt", input_data_format="channels_last"
    )["pixel_values"]
    assert torch.equal(seen["pixel_values"], expected)


def test_image_query_mode(cli, model_dir, tmp_path):
    crop = tmp_path / "crop.png"
    Image.open(SAMPLE).crop((60, 90, 300, 330)).save(crop)
    result = cli("detect", model_dir, SAMPLE, "--image-query", crop, "--threshold", "0",
                 "--json", "-o", tmp_path / "found.jpg")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["mode"] == "image" and payload["queries"] == [str(crop)]
    assert payload["query_image"] == str(crop) and payload["nms_threshold"] == 0.3
    assert payload["detections"]
    assert all(d["query_index"] == 0 and d["query"] == str(crop) for d in payload["detections"])
    assert_boxes_inside(payload)
    boxes = np.array([d["box"] for d in payload["detections"]])
    assert max_pairwise_iou(boxes) <= 0.3 + 1e-6  # NMS ran
    with Image.open(tmp_path / "found.jpg") as drawn:
        assert drawn.format == "JPEG" and drawn.size == SAMPLE_SIZE


def max_pairwise_iou(boxes: np.ndarray) -> float:
    best = 0.0
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            best = max(best, inter / union)
    return best


def test_long_query_warns_on_stderr(cli, v2_dir):
    long_query = "a photo of a very small and rather fluffy orange cat sitting on a red mat"
    result = cli("detect", v2_dir, SAMPLE, "--query", long_query, "--json")
    assert result.exit_code == 0, result.stderr
    assert "reads only the first 16" in result.stderr
    assert json.loads(result.stdout)["warnings"]


def test_console_script_json(v2_dir):
    proc = run_console_script("detect", v2_dir, SAMPLE, "--query", "a cat", "--threshold", "0",
                              "--max-detections", "2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert len(payload["detections"]) == 2
    assert "\x1b[" not in proc.stdout + proc.stderr


# Placeholders: MODEL a converted tiny model, SAMPLE the sample picture, DIR an empty directory,
# NOTIMG a text file named .png.
ERROR_CASES = {
    "missing model dir": ("DIR/nope SAMPLE --query x", "no such"),
    "not a model dir": ("DIR SAMPLE --query x", "config.json"),
    "missing image": ("MODEL DIR/x.png --query x", "no such"),
    "unreadable image": ("MODEL NOTIMG --query x", "not an image"),
    "image is a dir": ("MODEL DIR --query x", "directory"),
    "empty query": ("MODEL SAMPLE --query x --query ''", "query 2 is empty"),
    "blank query": ("MODEL SAMPLE --query '  '", "query 1 is empty"),
    "no query": ("MODEL SAMPLE", "--query"),
    "both queries": ("MODEL SAMPLE --query x --image-query SAMPLE", "not both"),
    "bad image query": ("MODEL SAMPLE --image-query NOTIMG", "not an image"),
    "threshold below 0": ("MODEL SAMPLE --query x --threshold -0.1", "between 0 and 1"),
    "threshold above 1": ("MODEL SAMPLE --query x --threshold 1.5", "between 0 and 1"),
    "threshold nan": ("MODEL SAMPLE --query x --threshold nan", "between 0 and 1"),
    "max detections 0": ("MODEL SAMPLE --query x --max-detections 0", "at least 1"),
    "unknown suffix": ("MODEL SAMPLE --query x -o out.xyz", "'.xyz'"),
    "no suffix": ("MODEL SAMPLE --query x -o out", "no suffix"),
    "output parent missing": ("MODEL SAMPLE --query x -o DIR/a/b.png", "does not exist"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_exit_2_with_one_line(cli, v2_dir, tmp_path, case):
    import shlex

    (tmp_path / "DIR").mkdir()
    (tmp_path / "notes.png").write_text("not a picture\n")
    places = {
        "MODEL": str(v2_dir),
        "SAMPLE": str(SAMPLE),
        "NOTIMG": str(tmp_path / "notes.png"),
        "DIR": str(tmp_path / "DIR"),
    }
    command, expected = ERROR_CASES[case]
    args = [_expand(word, places) for word in shlex.split(command)]
    result = cli("detect", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def _expand(word: str, places: dict[str, str]) -> str:
    head, sep, rest = word.partition("/")
    return places.get(head, head) + sep + rest


def test_debug_shows_traceback(cli, v2_dir, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture\n")
    result = cli("detect", v2_dir, not_image, "--query", "x", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr


# --- pictures ---------------------------------------------------------------------------------


def sample_pixels() -> np.ndarray:
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


def test_draw_detections_colours_per_query_and_leaves_input_alone():
    pixels = sample_pixels()
    original = Image.fromarray(pixels)
    before = original.tobytes()
    detections = [
        Detection("a house", 0, 0.8, (60.0, 100.0, 300.0, 330.0)),
        Detection("a car", 2, 0.4, (300.0, 290.0, 500.0, 420.0)),
        Detection("edge", 1, 0.2, (-50.0, -20.0, 700.0, 500.0)),  # beyond the image
        Detection("flat", 1, 0.1, (10.0, 10.0, 10.0, 10.0)),  # degenerate
    ]
    drawn = draw_detections(original, detections)
    assert original.tobytes() == before and drawn.size == original.size
    # The house box's left edge (mid-height, clear of labels) carries query 0's colour.
    assert drawn.getpixel((61, 215)) == PALETTE[0]
    assert drawn.getpixel((301, 380)) == PALETTE[2]
    # Dicts work too, with arrays in, and tiny images still get a legible label.
    tiny = draw_detections(pixels[:40, :60], [{"box": [5, 5, 30, 30], "label": "x", "score": 1}])
    assert tiny.size == (60, 40)


def test_draw_side_by_side_pairs_colours():
    pixels = sample_pixels()
    height, width = pixels.shape[:2]
    left = [{"box": [60, 100, 300, 330], "label": "a house", "score": 0.81},
            {"box": [300, 290, 500, 420], "label": "a car", "score": 0.4}]  # fmt: skip
    right = [{"box": [300, 290, 500, 420], "label": "a car", "score": 0.39}]
    picture = draw_side_by_side(pixels, left, right, "scenic (Flax)", "transformers")
    assert isinstance(picture, Image.Image)
    assert picture.height > height and picture.width > 2 * width
    top = picture.height - height
    right_x = picture.width - width
    assert picture.getpixel((61, top + 215)) == PALETTE[0]  # house, left panel
    car_left = picture.getpixel((301, top + 380))
    car_right = picture.getpixel((right_x + 301, top + 380))
    assert car_left == car_right == PALETTE[1]  # same label, same colour in both panels
    assert picture.getpixel((right_x + 61, top + 215)) == tuple(pixels[215, 61])  # no house
