"""`facezoom presets`: the presets `--config NAME` takes, and what each is for."""

from __future__ import annotations

import argparse


def register(commands, add_config_args) -> None:
    p = commands.add_parser("presets", help="list the shipped presets (--config NAME) and what each is for")
    p.set_defaults(handler=cmd_presets)


def cmd_presets(args: argparse.Namespace) -> int:
    from pipeline.config.presets import presets

    for name, what in presets().items():
        print(f"{name}: {what}")
    return 0
