"""Pictures of detections: colours per query, the input left alone, side-by-side pairs."""

from __future__ import annotations

from PIL import Image

from owlvit_cli.runtime.detection import Detection
from owlvit_cli.runtime.draw import PALETTE, draw_detections, draw_side_by_side
from tests.helpers import sample_pixels


def test_draw_detections_colours_per_query_and_leaves_input_alone():
    pixels = sample_pixels()
    original = Image.fromarray(pixels)
    before = original.tobytes()
    detections = [
        Detection("a house", 0, 0.8, (60.0, 100.0, 300.0, 330.0)),
        Detection("a car", 2, 0.4, (300.0, 290.0, 500.0, 420.0)),
        Detection("edge", 1, 0.2, (-50.0, -20.0, 700.0, 500.0)),  # beyond the image
        Detection("flat", 1, 0.1, (10.0, 10.0, 10.0, 10.0)),  # degenerate
    ]
    drawn = draw_detections(original, detections)
    assert original.tobytes() == before and drawn.size == original.size
    # The house box's left edge (mid-height, clear of labels) carries query 0's colour.
    assert drawn.getpixel((61, 215)) == PALETTE[0]
    assert drawn.getpixel((301, 380)) == PALETTE[2]
    # Dicts work too, with arrays in, and tiny images still get a legible label.
    tiny = draw_detections(pixels[:40, :60], [{"box": [5, 5, 30, 30], "label": "x", "score": 1}])
    assert tiny.size == (60, 40)


def test_draw_side_by_side_pairs_colours():
    pixels = sample_pixels()
    height, width = pixels.shape[:2]
    left = [{"box": [60, 100, 300, 330], "label": "a house", "score": 0.81},
            {"box": [300, 290, 500, 420], "label": "a car", "score": 0.4}]  # fmt: skip
    right = [{"box": [300, 290, 500, 420], "label": "a car", "score": 0.39}]
    picture = draw_side_by_side(pixels, left, right, "scenic (Flax)", "transformers")
    assert isinstance(picture, Image.Image)
    assert picture.height > height and picture.width > 2 * width
    top = picture.height - height
    right_x = picture.width - width
    assert picture.getpixel((61, top + 215)) == PALETTE[0]  # house, left panel
    car_left = picture.getpixel((301, top + 380))
    car_right = picture.getpixel((right_x + 301, top + 380))
    assert car_left == car_right == PALETTE[1]  # same label, same colour in both panels
    assert picture.getpixel((right_x + 61, top + 215)) == tuple(pixels[215, 61])  # no house
