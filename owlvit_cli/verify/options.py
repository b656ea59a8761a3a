"""verify's defaults, in a module that imports nothing, so that the CLI's options take them
from here without loading numpy."""

from typing import Final

# scenic's evaluator preprocessing is the one behind its published COCO/LVIS numbers (v1 and
# v2), so by default verify proves the model on the inputs those numbers were measured with.
DEFAULT_PREPROCESSING: Final = "evaluator"
DEFAULT_TOP_K = 5  # detections compared, best first
