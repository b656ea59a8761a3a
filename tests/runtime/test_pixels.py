"""The saved processor is fed arrays with their channels named: the same pixels out as from a
PIL image of the same picture, however few rows the picture has."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.runtime.pixels import processor_pixels


@pytest.mark.parametrize("shape", [(3, 50), (1, 9), (40, 3), (37, 61)])
def test_processor_pixels_equal_those_of_a_pil_image(shape: tuple[int, int]) -> None:
    import torch
    from transformers import Owlv2ImageProcessor

    processor = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
    ours = processor_pixels(processor, image)
    assert ours.shape == (1, 3, 32, 32)
    assert torch.equal(ours, expected)
