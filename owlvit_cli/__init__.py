"""owlvit: convert scenic OWL-ViT / OWLv2 checkpoints to transformers, verify, publish."""

__version__ = "0.1.0"
