"""The image-conditioned check: both models choose a query embedding from the same example
boxes (scenic's notebook rule, `owlvit_cli.scenic.image_query`) and score every verified image
against it. Each side works from its own outputs of the pass verify already ran (class
embeddings, boxes, feature map), so the check costs the class head, not another forward."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from owlvit_cli.scenic.image_query import select_query_embedding
from owlvit_cli.verify.inputs import VerifyInputs

# (feature_map [B, gh, gw, D], query embeddings [B, Q, E]) → logits [B, N, Q]
ClassHead = Callable[[np.ndarray, np.ndarray], np.ndarray]


def with_image_query(
    outputs: dict[str, np.ndarray], inputs: VerifyInputs, class_head: ClassHead
) -> dict[str, np.ndarray]:
    """One side's outputs with `image_query_box` (the predicted box each example chose),
    `image_query_embedding` [Q, E] and `image_query_logits` [B, N, Q] added."""
    q = inputs.query_image_index
    embeddings = outputs["class_embeddings_unnormalized"][q]
    boxes = outputs["pred_boxes"][q]
    chosen = [select_query_embedding(embeddings, boxes, box) for box in inputs.query_boxes_yxyx]
    query = np.stack([c.embedding for c in chosen]).astype(np.float32)
    batch = outputs["feature_map"].shape[0]
    logits = class_head(outputs["feature_map"], np.broadcast_to(query, (batch, *query.shape)))
    return {
        **outputs,
        "image_query_box": np.array([c.index for c in chosen]),
        "image_query_embedding": query,
        "image_query_logits": np.asarray(logits, np.float32),
    }
