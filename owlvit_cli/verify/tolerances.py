"""The tolerances `verify` applies: mapping level, stock level by output name (`--atol
NAME=VALUE` overrides), and the processor level under --strict-processor.

Kept apart from `verify.compare` so that `--help` and shell completion can name them without
importing numpy.
"""

from __future__ import annotations

MAPPING_ATOL = 1e-5  # scaled by the magnitude of the output
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
STRICT_PROCESSOR_TOLERANCES = {"pixels": 1e-3, "input_ids": 0.0, "top_k": 1e-3}
