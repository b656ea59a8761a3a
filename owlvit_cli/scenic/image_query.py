"""How scenic turns an example box into a query embedding, and how it cleans up the result.

This is scenic's notebook rule (`notebooks/inference.py: embed_image_query` and
`interactive.py`'s image-conditioning callback), in numpy so the Flax side and the
transformers side apply the very same selection to their own model outputs:

1. the model runs on the query image; each of its predicted boxes has a class embedding;
2. the boxes whose IoU with the user's box is within 80% of the best IoU are candidates
   (where no box overlaps it at all, generalized IoU decides, candidates within 120% of the
   best, negative, value);
3. DETR-style training leaves one "good" embedding per object and the rest background-like,
   so among the candidates the one least similar to the image's mean embedding is taken;
4. on the target image, each box is scored against the embedding (the class head, as for a
   text query), and greedy NMS at IoU 0.7 removes the boxes that overlap a better one.

transformers' `image_guided_detection` takes no box: it applies a similar rule with the whole
query image as the box (OWL-ViT v1) or takes the query image's most object-like box (OWLv2).

Boxes: the model predicts [cx, cy, w, h] relative to its square input, and every
preprocessing pads an image bottom/right to a square, so a box in an image's pixels is made
relative by dividing by the longer side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from owlvit_cli.errors import BadInputError

RELATIVE_IOU_THRESHOLD = 0.8  # candidates: IoU at least 80% of the best
GIOU_THRESHOLD_FACTOR = 1.2  # no overlap: gIoU within 120% of the best (negative) value
NMS_IOU_THRESHOLD = 0.7  # scenic's IMAGE_COND_NMS_IOU_THRESHOLD

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class QuerySelection:
    """The predicted box whose class embedding stands for the user's box."""

    index: int  # into the query image's predicted boxes
    embedding: np.ndarray  # [E], not normalised (the class head normalises queries)
    candidates: np.ndarray  # the indices that passed the IoU rule


def parse_box(text: str) -> Box:
    """`X0,Y0,X1,Y1` in pixels, as typed on a command line."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)):
        raise BadInputError(f"a query box is four numbers X0,Y0,X1,Y1 in pixels; got {text!r}")
    return values  # type: ignore[return-value]


def relative_box_yxyx(box: Box, height: int, width: int) -> np.ndarray:
    """A pixel box [x0, y0, x1, y1] on an image of this size as scenic's query box: [y0, x0,
    y1, x1] relative to the padded square. A box reaching past the image is clipped to it; one
    with no area inside the image is refused (it points at padding the model never saw as
    content)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise BadInputError(f"query box {_fmt(box)} is empty: X1 must exceed X0 and Y1 exceed Y0")
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise BadInputError(f"query box {_fmt(box)} lies outside the {width}×{height} query image")
    side = float(max(height, width))
    return np.array([cy0, cx0, cy1, cx1], np.float64) / side


def cxcywh_to_yxyx(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of one [4] box with each of [N, 4] boxes (both yxyx), and the union areas."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    union = area + areas - inter
    return inter / union, union


def generalized_box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """gIoU: IoU minus the share of the enclosing box that neither box covers."""
    iou, union = box_iou(box, boxes)
    top_left = np.minimum(box[:2], boxes[:, :2])
    bottom_right = np.maximum(box[2:], boxes[:, 2:])
    enclosing = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    return iou - (enclosing - union) / enclosing


def select_query_embedding(
    class_embeddings: np.ndarray, pred_boxes: np.ndarray, query_box_yxyx: np.ndarray
) -> QuerySelection:
    """scenic's choice among one image's [N, E] unnormalised class embeddings and [N, 4]
    predicted boxes (cxcywh, relative) for a relative yxyx query box."""
    embeddings = np.asarray(class_embeddings, np.float64)
    predicted = cxcywh_to_yxyx(np.asarray(pred_boxes, np.float64))
    query = np.asarray(query_box_yxyx, np.float64)
    ious, _ = box_iou(query, predicted)
    threshold = ious.max() * RELATIVE_IOU_THRESHOLD
    if np.all(ious == 0.0):
        ious = generalized_box_iou(query, predicted)
        threshold = ious.clip(None, 0.0).max() * GIOU_THRESHOLD_FACTOR
    candidates = np.flatnonzero(ious >= threshold)
    mean_similarity = embeddings[candidates] @ embeddings.mean(axis=0)
    index = int(candidates[np.argmin(mean_similarity)])
    return QuerySelection(index, np.asarray(class_embeddings)[index], candidates)


def nms_keep(scores: np.ndarray, pred_boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """scenic's greedy NMS over one image's boxes (cxcywh, relative): best score first, every
    box overlapping a kept one by more than `iou_threshold` is dropped. A boolean mask."""
    boxes = cxcywh_to_yxyx(np.asarray(pred_boxes, np.float64))
    scores = np.array(scores, np.float64)
    for i in np.argsort(-scores, kind="stable"):
        if not scores[i]:
            continue
        ious, _ = box_iou(boxes[i], boxes)
        ious[i] = -1.0
        scores[ious > iou_threshold] = 0.0
    return scores > 0.0


def suppressed_logits(
    logits: np.ndarray, pred_boxes: np.ndarray, iou_threshold: float = NMS_IOU_THRESHOLD
) -> np.ndarray:
    """One image's [N, Q] logits with the boxes NMS removes pushed to a score of 0, so any
    threshold post-processing then applies drops them."""
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64).max(axis=-1)))
    keep = nms_keep(scores, pred_boxes, iou_threshold)
    out = np.array(logits, copy=True)
    out[~keep] = np.finfo(out.dtype).min
    return out


def _fmt(box: Box) -> str:
    return ",".join(f"{v:g}" for v in box)
