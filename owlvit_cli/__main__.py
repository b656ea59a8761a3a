"""`python -m owlvit_cli` runs the same app as the `owlvit` console script, with the signal
handlers installed before the app's imports (a signal at start-up ends the run as any other)."""

if __name__ == "__main__":
    from owlvit_cli.cli import process

    process.install_signal_handlers()
    from owlvit_cli.cli.app import main

    main()
