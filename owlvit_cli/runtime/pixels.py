"""Pixels as transformers takes them: scenic normalises inside its model, transformers before
it, so the same [0, 1] NHWC pixels reach both models once normalised here."""

from __future__ import annotations

import numpy as np

from owlvit_cli.scenic import semantics

CLIP_MEAN = np.array(semantics.CLIP_MEAN, np.float32)
CLIP_STD = np.array(semantics.CLIP_STD, np.float32)


def normalize_pixels(pixels_nhwc: np.ndarray) -> np.ndarray:
    """scenic normalises inside its model; transformers takes normalised NCHW pixels."""
    return ((pixels_nhwc - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).astype(np.float32)
