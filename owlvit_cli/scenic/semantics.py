"""The numbers both models are built with, and where scenic's differs from transformers'
(docs/owlvit-spec.md §8), kept apart from the Flax model so the transformers side can use
them without importing jax."""

from __future__ import annotations

# Every other LayerNorm, on both sides: OpenAI CLIP's (PyTorch's default), kept by scenic's CLIP
# port and written into the transformers config as `layer_norm_eps`.
CLIP_LAYERNORM_EPSILON = 1e-5

# scenic builds its merged class-token LayerNorm with Flax's default epsilon.
MERGED_LAYERNORM_EPSILON = 1e-6

# CLIP's per-channel normalisation: scenic applies it inside its model, transformers before it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
