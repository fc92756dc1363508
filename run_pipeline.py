#!/usr/bin/env python3
"""facezoom's command line; `python run_pipeline.py --help`. The same as the `facezoom` command."""

import sys

from pipeline.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
