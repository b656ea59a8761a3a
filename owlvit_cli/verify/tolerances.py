"""The tolerances `verify` applies: mapping level, stock level by output name and stored dtype
(`--atol NAME=VALUE` overrides), and the processor level under --strict-processor.

Kept apart from `verify.compare` so that `--help` and shell completion can name them without
importing numpy.
"""

from __future__ import annotations

MAPPING_ATOL = 1e-5  # scaled by the magnitude of the output
MAPPING_RULE = f"{MAPPING_ATOL:g} × max(1, max |reference|)"

# float32: what the two modelling differences allow (tanh GELU, LayerNorm eps).
STOCK_TOLERANCES = {
    "pred_logits": 2e-4,
    "pred_boxes": 1e-3,
    "objectness_logits": 1e-3,
    "class_embeddings": 1e-3,
    "query_embeddings": 1e-3,
    "feature_map": 1e-3,
    "image_class_embeddings": 1e-3,
    "top_k": 1e-3,
    "image_query_embedding": 1e-3,
    "image_query_logits": 2e-4,
}

# float16 / bfloat16: the model as transformers loads it by default (weights and compute in
# the stored dtype) against the float32 Flax model. Measured on the scenic reference
# checkpoints and a full-size random B/32: about 2.5× the largest difference seen, rounded up
# to 1, 2 or 5 × 10^n; `top_k` (a score gap and a box difference) follows the logits.
# docs/verification.md gives the figures and the method. Absolute, like the float32 ones.
STOCK_TOLERANCES_BY_DTYPE = {
    "float32": STOCK_TOLERANCES,
    "float16": {
        "pred_logits": 5e-2,
        "pred_boxes": 5e-3,
        "objectness_logits": 5e-3,
        "class_embeddings": 1e-2,
        "query_embeddings": 5e-3,
        "feature_map": 1e-1,
        "image_class_embeddings": 5e-2,
        "top_k": 5e-2,
        "image_query_embedding": 5e-2,
        "image_query_logits": 5e-2,
    },
    "bfloat16": {
        "pred_logits": 2e-1,
        "pred_boxes": 2e-2,
        "objectness_logits": 5e-2,
        "class_embeddings": 5e-2,
        "query_embeddings": 2e-2,
        "feature_map": 1.0,
        "image_class_embeddings": 5e-1,
        "top_k": 2e-1,
        "image_query_embedding": 5e-1,
        "image_query_logits": 2e-1,
    },
}
DEFAULT_SOURCE = "measured default for {dtype}"
ATOL_SOURCE = "--atol"

STRICT_PROCESSOR_TOLERANCES = {"pixels": 1e-3, "input_ids": 0.0, "top_k": 1e-3}
