"""`python -m owlvit_cli` runs the same app as the `owlvit` console script."""

from owlvit_cli.cli.app import main

if __name__ == "__main__":
    main()
