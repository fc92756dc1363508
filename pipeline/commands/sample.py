"""`facezoom sample`: write the built-in sample clip (a real, public-domain face, with audio), or its first frame."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import UserError


def register(commands, add_config_args) -> None:
    sample = commands.add_parser("sample", help="write the built-in sample clip (a real face, with audio)")
    sample.set_defaults(handler=cmd_sample)
    sample.add_argument("-o", "--output", required=True,
                        help="where to write the clip (.mp4, .mkv, .mov), or its first frame, where the face is small (.png, .jpg)")
    sample.add_argument("--seconds", type=float, default=4.0, help="length (default 4)")


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.media.sample import write_sample

    if not 0.5 <= args.seconds <= 600:
        raise UserError(f"--seconds must be in 0.5..600, got {args.seconds}")
    output = Path(args.output)
    still = output.suffix.lower() in (".png", ".jpg", ".jpeg")
    if not still and output.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise UserError(f"the sample is H.264 with AAC audio (.mp4, .mkv or .mov) or a still (.png, .jpg), not {output.name!r}")
    from pipeline.media.files import check_outputs

    check_outputs({}, {"the output": output}, overwrite=args.overwrite)  # the output policy: an existing file needs -y
    if still:
        from pipeline.media.sample import camera_frames
        from pipeline.media.stills import write_image

        write_image(output, next(camera_frames(seconds=args.seconds)))
        if not args.quiet:
            print(f"facezoom: wrote the sample's first frame to {output}", file=sys.stderr)
        return 0
    write_sample(output, seconds=args.seconds)
    if not args.quiet:
        print(f"facezoom: wrote the sample clip to {output}", file=sys.stderr)
    return 0
