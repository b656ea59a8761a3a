"""The numbers where scenic's model differs from transformers' (docs/owlvit-spec.md §8), kept
apart from the Flax model so the transformers side can apply them without importing jax."""

from __future__ import annotations

# scenic builds its merged class-token LayerNorm with Flax's default epsilon.
MERGED_LAYERNORM_EPSILON = 1e-6
