"""The stock-level tolerances `verify` applies, by output name (`--atol NAME=VALUE` overrides).

Kept apart from `verify.run` so that `--help` and shell completion can name them without
importing numpy.
"""

from __future__ import annotations

STOCK_TOLERANCES = {
    "pred_logits": 2e-4,
    "pred_boxes": 1e-3,
    "objectness_logits": 1e-3,
    "class_embeddings": 1e-3,
    "query_embeddings": 1e-3,
    "feature_map": 1e-3,
    "image_class_embeddings": 1e-3,
    "top_k": 1e-3,
}
