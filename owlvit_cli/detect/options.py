"""What `detect` accepts and its defaults, in a module that imports nothing, so that the CLI's
options take their defaults from here without loading numpy or PIL."""

DEFAULT_THRESHOLD = 0.1
PREPROCESSINGS = ("processor", "notebook", "evaluator")
DEFAULT_PREPROCESSING = "processor"

# transformers' default for image-guided detection: one-shot queries light up many
# overlapping boxes around each match, text queries do not (and HF applies no NMS there).
DEFAULT_NMS_THRESHOLD = 0.3
