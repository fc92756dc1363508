"""The command line: `cli.py` parses arguments and dispatches; one thin module per command."""
