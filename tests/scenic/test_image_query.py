"""scenic's choice of an image query's embedding, against the notebook's own logic written out
again here from scenic's source (`notebooks/inference.py: embed_image_query`,
`interactive.py`'s NMS loop, `box_utils.box_iou` / `generalized_box_iou`), one box at a time."""

from __future__ import annotations

import numpy as np
import pytest

from owlvit_cli.errors import BadInputError
from owlvit_cli.scenic.image_query import (
    nms_keep,
    parse_box,
    relative_box_yxyx,
    select_query_embedding,
    suppressed_logits,
)


def notebook_iou(a: list[float], b: list[float]) -> tuple[float, float]:
    """box_utils.box_iou for one pair of yxyx boxes: (iou, union)."""
    inter_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union, union


def notebook_giou(a: list[float], b: list[float]) -> float:
    iou, union = notebook_iou(a, b)
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iou - (hull - union) / hull


def notebook_embed_image_query(
    class_embeddings: np.ndarray, pred_boxes: np.ndarray, query_box_yxyx: list[float]
) -> int:
    """embed_image_query's selection, statement by statement."""
    yxyx = [[cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2] for cx, cy, w, h in pred_boxes]
    ious = np.array([notebook_iou(query_box_yxyx, b)[0] for b in yxyx])
    iou_thresh = np.max(ious) * 0.8
    if np.all(ious == 0.0):
        ious = np.array([notebook_giou(query_box_yxyx, b) for b in yxyx])
        iou_thresh = np.max(ious.clip(None, 0.0)) * 1.2
    selected_inds = (ious >= iou_thresh).nonzero()[0]
    assert selected_inds.size
    selected_embeddings = class_embeddings[selected_inds]
    mean_embedding = np.mean(class_embeddings, axis=0)
    mean_sim = np.einsum("d,id->i", mean_embedding, selected_embeddings)
    return int(selected_inds[np.argmin(mean_sim)])


def notebook_nms(scores: np.ndarray, pred_boxes: np.ndarray, threshold: float) -> np.ndarray:
    scores = scores.copy()
    yxyx = [[cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2] for cx, cy, w, h in pred_boxes]
    for i in np.argsort(-scores):
        if not scores[i]:
            continue
        ious = np.array([notebook_iou(yxyx[i], b)[0] for b in yxyx])
        ious[i] = -1.0
        scores[ious > threshold] = 0.0
    return scores


def random_predictions(seed: int, n: int = 64, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.1, 0.9, (n, 2))
    sizes = rng.uniform(0.02, 0.3, (n, 2))
    return rng.normal(size=(n, width)).astype(np.float32), np.concatenate([centers, sizes], 1)


@pytest.mark.parametrize("seed", range(20))
def test_selection_matches_the_notebook(seed: int):
    embeddings, boxes = random_predictions(seed)
    rng = np.random.default_rng(1000 + seed)
    y0, x0 = rng.uniform(0, 0.7, 2)
    query = [y0, x0, y0 + rng.uniform(0.05, 0.3), x0 + rng.uniform(0.05, 0.3)]
    chosen = select_query_embedding(embeddings, boxes, np.array(query))
    assert chosen.index == notebook_embed_image_query(embeddings, boxes, query)
    np.testing.assert_array_equal(chosen.embedding, embeddings[chosen.index])
    assert chosen.index in chosen.candidates


def test_a_box_overlapping_no_prediction_falls_back_to_generalized_iou():
    embeddings, boxes = random_predictions(7, n=8)
    boxes[:, :2] = np.clip(boxes[:, :2], 0.3, 0.5)  # every prediction near the middle
    boxes[:, 2:] = 0.05
    query = [0.9, 0.9, 0.95, 0.95]  # a corner no predicted box reaches
    chosen = select_query_embedding(embeddings, boxes, np.array(query))
    assert chosen.index == notebook_embed_image_query(embeddings, boxes, query)


def test_the_least_mean_like_candidate_wins():
    """Two boxes on the query box: the one whose embedding is unlike the image's mean."""
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]])
    embeddings = np.array([[1.0, 0.0], [-1.0, 0.2], [1.0, 0.0]])  # mean is (1/3, 0.07)
    chosen = select_query_embedding(embeddings, boxes, np.array([0.4, 0.4, 0.6, 0.6]))
    assert chosen.index == 1 and sorted(chosen.candidates) == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_the_notebook_loop(seed: int):
    _, boxes = random_predictions(seed, n=40)
    scores = np.random.default_rng(seed).uniform(0, 1, 40)
    expected = notebook_nms(scores, boxes, 0.3) > 0
    np.testing.assert_array_equal(nms_keep(scores, boxes, 0.3), expected)
    assert 0 < expected.sum() < 40  # the case does suppress something


def test_suppressed_boxes_score_zero():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]])
    logits = np.array([[2.0], [1.0], [0.5]], np.float32)
    out = suppressed_logits(logits, boxes, 0.7)
    assert out[0, 0] == 2.0 and out[2, 0] == 0.5
    assert out[1, 0] == np.finfo(np.float32).min  # sigmoid 0: under any threshold


def test_pixel_boxes_are_relative_to_the_padded_square():
    # A 640×448 image is padded to 640×640: y is divided by 640 too, not by 448.
    np.testing.assert_allclose(
        relative_box_yxyx((320, 224, 640, 448), 448, 640), [0.35, 0.5, 0.7, 1.0]
    )
    # A box reaching past the image is clipped to it.
    np.testing.assert_allclose(relative_box_yxyx((-10, 0, 100, 900), 200, 100), [0, 0, 1, 0.5])


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((10, 10, 10, 50), "is empty"),
        ((50, 10, 10, 60), "is empty"),
        ((700, 10, 800, 60), "outside the 640×448 query image"),
        ((-50, -50, -1, -1), "outside"),
    ],
)
def test_boxes_that_cannot_stand_for_anything_are_refused(box, message):
    with pytest.raises(BadInputError, match=message):
        relative_box_yxyx(box, 448, 640)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,4,5", "1,2,nan,4", ""])
def test_box_text_is_four_numbers(text):
    with pytest.raises(BadInputError, match="four numbers X0,Y0,X1,Y1"):
        parse_box(text)
    assert parse_box(" 1, 2.5 ,3,4") == (1.0, 2.5, 3.0, 4.0)
