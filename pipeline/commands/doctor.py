"""`facezoom doctor`: what a bug report needs (versions, CPU and GPU, cached weights, paths)."""

from __future__ import annotations

import argparse


def register(commands, add_config_args) -> None:
    p = commands.add_parser("doctor", help="print versions, devices, cached weights and paths (for a bug report)")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from pipeline.environment import describe

    rows = describe()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0
