"""`facezoom sample`: write the built-in sample clip (a real, public-domain face, with audio)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import UserError


def register(commands, add_config_args) -> None:
    sample = commands.add_parser("sample", help="write the built-in sample clip (a real face, with audio)")
    sample.set_defaults(handler=cmd_sample)
    sample.add_argument("-o", "--output", required=True, help="where to write the clip (.mp4)")
    sample.add_argument("--seconds", type=float, default=4.0, help="length (default 4)")


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.media.sample import write_sample

    if not 0.5 <= args.seconds <= 600:
        raise UserError(f"--seconds must be in 0.5..600, got {args.seconds}")
    output = Path(args.output)
    if output.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise UserError(f"the sample is H.264 with AAC audio: write it to .mp4, .mkv or .mov, not {output.name!r}")
    from pipeline.media.files import check_outputs

    check_outputs({}, {"the output": output}, overwrite=args.overwrite)  # the output policy: an existing file needs -y
    write_sample(output, seconds=args.seconds)
    if not args.quiet:
        print(f"facezoom: wrote the sample clip to {output}", file=sys.stderr)
    return 0
