"""Pixels as transformers takes them: scenic normalises inside its model, transformers before
it, so the same [0, 1] NHWC pixels reach both models once normalised here."""

from __future__ import annotations

from typing import Any

import numpy as np

from owlvit_cli.scenic import semantics

CLIP_MEAN = np.array(semantics.CLIP_MEAN, np.float32)
CLIP_STD = np.array(semantics.CLIP_STD, np.float32)


def normalize_pixels(pixels_nhwc: np.ndarray) -> np.ndarray:
    """scenic normalises inside its model; transformers takes normalised NCHW pixels."""
    return ((pixels_nhwc - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).astype(np.float32)


def processor_pixels(image_processor: Any, image: np.ndarray) -> Any:
    """The saved image processor's NCHW tensor for a uint8 RGB [H, W, 3] image. The array is
    handed over as it is, its channels named: a PIL image would be copied twice more on the
    way in (0.2 s for a 12 Mpx photo) for the same pixels out, and an array left to guess
    would be read channels-first when it is three (or one) pixels tall."""
    batch = image_processor(
        images=np.asarray(image, np.uint8), input_data_format="channels_last", return_tensors="pt"
    )
    return batch["pixel_values"]
