"""The test suite; its layout mirrors owlvit_cli/."""
