"""`owlvit detect`: end to end on tiny random models (detections meaningless, pipeline real),
box scaling on non-square images against a hand computation, pictures, and every error path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.detect.run import (
    Detector,
    detect,
    detect_text,
    load_detector,
)
from tests.helpers import SAMPLE, problem_lines, run_console_script

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
    result = cli("detect", *args, "--threshold", "0", "--json", "--output", picture,
                 "--clip-to-image")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert payload["preprocessing"] == "processor" and payload["clip_to_image"] is True
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
    assert "3 of 16 detections above 0 in" in result.stdout and "a house" in result.stdout
    assert problem_lines(result.stderr) == []  # off a terminal: the steps' plain lines alone
    detecting = r"detecting \(cpu, 1 image of 64×64, 16 patches, 1 query\): done, 4 layers in "
    assert re.search(detecting, result.stderr), result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
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
    result = detect(
        v2_dir, image_path, queries, threshold=0.0, detector=v2_detector, clip_to_image=True
    )
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


@pytest.mark.parametrize("size", [(40, 96), (96, 40)], ids=["tall", "wide"])
def test_default_output_is_transformers_post_processing(v2_dir, v2_detector, tmp_path, size):
    """Without --clip-to-image, boxes are exactly what post_process_grounded_object_detection
    gives for target size (h, w) (scaled by the longer side): boxes reaching past the image and
    boxes wholly in the padding included. --clip-to-image clips those and drops these."""
    import torch

    width, height = size
    image_path = write_noise(tmp_path / "noise.png", width, height, seed=4)
    queries = ["a house", "a cat"]
    processor, model = v2_detector.processor, v2_detector.model
    inputs = processor(text=queries, images=Image.open(image_path), return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    (found,) = processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(height, width)]
    )
    order = np.argsort(-found["scores"].numpy(), kind="stable")
    expected = found["boxes"].numpy()[order]

    plain = detect(v2_dir, image_path, queries, threshold=0.0, detector=v2_detector)
    got = np.array([d.box for d in plain.detections])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(
        [d.score for d in plain.detections], found["scores"].numpy()[order], atol=1e-6
    )
    limits = np.array([width, height, width, height])
    outside = (got < 0).any(axis=1) | (got > limits).any(axis=1)
    in_padding = (got[:, 0] >= width) | (got[:, 1] >= height)
    assert outside.any() and in_padding.any()  # the case the option exists for

    clipped = detect(
        v2_dir, image_path, queries, threshold=0.0, detector=v2_detector, clip_to_image=True
    )
    assert len(clipped.detections) == len(plain.detections) - in_padding.sum()
    kept = np.array([d.box for d in clipped.detections])
    np.testing.assert_allclose(kept, np.clip(got[~in_padding], 0, limits), atol=1e-9)


def test_json_equals_the_transformers_pipeline(v2_dir, tmp_path):
    """`owlvit detect --json` and `pipeline("zero-shot-object-detection")` (what the model card
    shows Hub users) give the same detections: same scores, same boxes (the pipeline truncates
    them to integers), same order. They agree for one query: the pipeline runs each query on
    its own and lists every (box, query) pair above the threshold, where detect (like
    post_process_grounded_object_detection) keeps the best query per box."""
    from transformers import pipeline

    image_path = write_noise(tmp_path / "wide.png", 120, 70, seed=5)
    proc = run_console_script("detect", v2_dir, image_path, "--query", "a cat",
                              "--threshold", "0.2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)["detections"]
    hub = pipeline("zero-shot-object-detection", model=str(v2_dir), device="cpu")
    theirs = hub(str(image_path), candidate_labels=["a cat"], threshold=0.2)
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose([d["score"] for d in ours], [t["score"] for t in theirs], atol=1e-5)
    for mine, hubs in zip(ours, theirs, strict=True):
        assert mine["query"] == hubs["label"]
        expected = [hubs["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
        assert np.abs(np.trunc(mine["box"]) - expected).max() <= 1, (mine, hubs)
    assert any(d["box"][3] > 70 for d in ours)  # boxes reach into the padding in both


@pytest.mark.parametrize("pipeline", ["notebook", "evaluator"])
def test_scenic_preprocessing_feeds_the_model_scenics_pixels(v2_detector, pipeline):
    """--preprocessing notebook|evaluator: the model sees scenic's pixels, normalised."""
    import torch

    from owlvit_cli.runtime.pixels import normalize_pixels
    from owlvit_cli.scenic.preprocess import preprocess

    seen: dict[str, Any] = {}

    def recording(**inputs: Any) -> Any:
        seen.update(inputs)
        return v2_detector.model(**inputs)

    recording.config = v2_detector.model.config  # type: ignore[attr-defined]
    detector = Detector(v2_detector.model_dir, recording, v2_detector.processor)
    pixels = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    detect_text(detector, pixels, ["x"], threshold=0.0, preprocessing=pipeline)
    size = v2_detector.model.config.vision_config.image_size
    expected = normalize_pixels(preprocess(pixels, size, pipeline)[None])
    assert torch.equal(seen["pixel_values"], torch.from_numpy(expected))


@pytest.mark.parametrize("preprocessing", ["processor", "notebook", "evaluator"])
def test_one_forward_pass_per_text_detection(v2_dir, monkeypatch, preprocessing):
    """A detection runs each tower once, asking for no hidden states or attentions, with
    the model and pixels loaded alongside each other (`detect.loading`)."""
    from owlvit_cli.runtime import hf_model

    calls: list[tuple[str, dict[str, Any]]] = []
    load = hf_model.load_hf_model

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        model = load(*args, **kwargs)
        for name in ("vision_model", "text_model"):
            tower = getattr(model.base_model, name)
            tower.register_forward_hook(
                lambda _m, _a, kw, _o, name=name: calls.append((name, kw)), with_kwargs=True
            )
        return model

    monkeypatch.setattr(hf_model, "load_hf_model", counted_load)
    result = detect(v2_dir, SAMPLE, "a cat", 0.0, preprocessing=preprocessing)
    assert result.detections
    assert sorted(name for name, _ in calls) == ["text_model", "vision_model"]
    for _, kwargs in calls:
        assert not kwargs.get("output_hidden_states") and not kwargs.get("output_attentions")


def test_a_failed_load_is_raised_where_the_detector_is_asked_for(tmp_path):
    from owlvit_cli.detect.loading import DetectorLoading
    from owlvit_cli.errors import ModelDirError

    loading = DetectorLoading(tmp_path)
    with pytest.raises(ModelDirError, match="cannot load the saved processor"):
        loading.processor()
    with pytest.raises(ModelDirError, match="cannot load the saved processor"):
        loading.detector()


def test_preprocessing_changes_detections(cli, v2_dir):
    found = {}
    for pipeline in ("processor", "notebook", "evaluator"):
        result = cli("detect", v2_dir, SAMPLE, "--query", "a cat", "--threshold", "0",
                     "--json", "--preprocessing", pipeline)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        payload = json.loads(result.stdout)
        assert payload["preprocessing"] == pipeline
        found[pipeline] = [d["score"] for d in payload["detections"]]
    assert found["notebook"] != found["processor"] != found["evaluator"]


def test_extreme_aspect_ratio(v2_dir, tmp_path):
    """A 10000×10 picture: scenic's pipelines handle it in the model's input size; the saved
    processor would build a 10000×10000 square, so processor mode refuses it in one line."""
    image_path = tmp_path / "sliver.png"
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 256, (10000, 10, 3), dtype=np.uint8)).save(image_path)
    for pipeline in ("notebook", "evaluator"):
        proc = run_console_script("detect", v2_dir, image_path, "--query", "x", "--json",
                                  "--preprocessing", pipeline, "--clip-to-image")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        payload = json.loads(proc.stdout)
        assert payload["image_size"] == {"width": 10, "height": 10000}
        assert_boxes_inside(payload)
    refused = run_console_script("detect", v2_dir, image_path, "--query", "x")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "10000×10000 square" in refused.stderr and "--preprocessing" in refused.stderr
    assert len(problem_lines(refused.stderr)) == 1


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
                 "--json", "-o", tmp_path / "found.jpg", "--clip-to-image")  # fmt: skip
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
    assert len(payload["detections"]) == 2 and payload["total"] == 16
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
    "both queries": ("MODEL SAMPLE --query x --image-query SAMPLE", "one kind of query"),
    "bad image query": ("MODEL SAMPLE --image-query NOTIMG", "not an image"),
    "threshold below 0": ("MODEL SAMPLE --query x --threshold -0.1", "between 0 and 1"),
    "threshold above 1": ("MODEL SAMPLE --query x --threshold 1.5", "between 0 and 1"),
    "threshold nan": ("MODEL SAMPLE --query x --threshold nan", "between 0 and 1"),
    "max detections 0": ("MODEL SAMPLE --query x --max-detections 0", "at least 1"),
    "unknown preprocessing": ("MODEL SAMPLE --query x --preprocessing skimage", "notebook"),
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
    lines = problem_lines(result.stderr)
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


@pytest.fixture(scope="module")
def many_boxes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny v2 model with 8-pixel patches: 64 boxes, more than a picture draws by default."""
    from dataclasses import replace

    from owlvit_cli.convert.run import convert_checkpoint
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    tiny = VARIANTS["v2-tiny"]
    spec = replace(tiny, vision=replace(tiny.vision, patch_size=8))
    root = tmp_path_factory.mktemp("many-boxes")
    ckpt = build_checkpoint(root / "ckpt", spec, "v2")
    convert_checkpoint(ckpt, root / "model")
    return root / "model"


def test_capped_counts_say_how_many_there_were(many_boxes_dir: Path):
    args = ("detect", many_boxes_dir, SAMPLE, "--query", "a cat", "--threshold", "0")
    table = run_console_script(*args, "--max-detections", "5")
    assert table.returncode == 0, table.stderr
    assert "5 of 64 detections above 0 in" in table.stdout
    payload = json.loads(run_console_script(*args, "--max-detections", "5", "--json").stdout)
    assert payload["total"] == 64 and len(payload["detections"]) == 5


def test_picture_shows_the_best_25_unless_told(many_boxes_dir: Path, tmp_path: Path):
    args = ("detect", many_boxes_dir, SAMPLE, "--query", "a cat", "--threshold", "0")
    human = run_console_script(*args, "-o", tmp_path / "default.png")
    assert human.returncode == 0, human.stderr
    assert "with the best 25 of 64 boxes (--max-detections N draws N)" in human.stdout
    # Uncapped, the table lists every detection and its title says no "of".
    assert "64 detections above 0 in" in human.stdout and "│ 64 │" in human.stdout
    payload = json.loads(run_console_script(*args, "-o", tmp_path / "j.png", "--json").stdout)
    assert payload["drawn"] == 25 and len(payload["detections"]) == payload["total"] == 64
    told = run_console_script(*args, "--max-detections", "25", "-o", tmp_path / "25.png")
    assert told.returncode == 0 and "with the best" not in told.stdout
    # Drawing all 64 would differ from drawing the best 25.
    with Image.open(tmp_path / "default.png") as drawn, Image.open(tmp_path / "25.png") as best:
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(best))


def test_a_photo_far_larger_than_the_input_is_bounded(v2_dir, tmp_path):
    """The saved Owlv2 processor blurs the padded square with a kernel that grows with the
    downscale: a 3000×2000 photo at the tiny model's 64 px would cost some 520 G
    multiply-adds (many minutes). Processor mode refuses it before loading the model, in one
    line; scenic's pipelines take it at the cost of its pixels."""
    image_path = write_noise(tmp_path / "photo.png", 3000, 2000)
    refused = run_console_script("detect", v2_dir, image_path, "--query", "x")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "blurs a 3000×3000 square" in refused.stderr and "--preprocessing" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = run_console_script("detect", v2_dir, image_path, "--query", "x", "--json",
                              "--preprocessing", "notebook")  # fmt: skip
    assert done.returncode == 0, done.stderr
