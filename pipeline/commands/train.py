"""`facezoom train`: train the feed-forward PFSR generator on a folder of face pictures.

The work is `pipeline/training/train.py`'s; this module parses, calls it and prints."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline.commands.common import setting_inputs
from pipeline.errors import UserError
from pipeline.training.train import FaceSet, collect_faces, find_images, train_pfsr

log = logging.getLogger(__name__)


def register(commands, add_config_args) -> None:
    """Add the `train` command to the CLI's subparsers (imports nothing heavy)."""
    p = commands.add_parser("train", help="train a PFSR generator (sr.backend=ffsr) on a folder of face images")
    p.set_defaults(handler=cmd_train)
    p.add_argument("input", help="folder of face photos (searched recursively; the pictures zoom and enhance read)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (published PFSR layout)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                   help="continue from CKPT (default: from --output), with its weights, optimiser state and step count")
    p.add_argument("--channels", default=None,
                   help="'published' (512,256,128,64: loads like the released weights; default) or four widths, e.g. 64,32,16,8")
    p.add_argument("--stage-iters", type=int, default=None, help="steps per stage at full strength (default 30000)")
    p.add_argument("--fade-iters", type=int, default=None, help="steps of each fade-in between stages (default 20000)")
    p.add_argument("--batch-size", type=int, default=None, help="faces per step (default 16)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--attention-weight", type=float, default=None, help="weight of the landmark-attention loss (default 1)")
    p.add_argument("--save-every", type=int, default=None, help="steps between checkpoints (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="seed of initial weights, batches and flips (default 0)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (checkpoint saved; continue with --resume)")
    p.add_argument("--min-face", type=float, default=64.0,
                   help="skip faces whose detected box is narrower than this many source pixels (default 64: about the width "
                        "at which a 128x128 aligned crop needs no upsampling)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--faces-cache", metavar="FILE.npz", help="reuse the aligned faces saved in this file, or save them there")
    add_config_args(p)


def cmd_train(args: argparse.Namespace) -> int:
    from models.pfsr_train import TrainConfig, parse_channels
    from pipeline.config import load_config
    from pipeline.stages.detect import FaceDetector

    # 1. Settings: the detector's from the config (as `video` uses them), training's from the flags.
    cfg = load_config(args.config, args.overrides)
    given = {"batch_size": args.batch_size, "learning_rate": args.lr, "stage_iters": args.stage_iters, "fade_iters": args.fade_iters,
             "attention_weight": args.attention_weight, "save_every": args.save_every, "seed": args.seed}
    try:
        train_cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None}, flip=not args.no_flip)
        channels = parse_channels(args.channels) if args.channels is not None else None
    except ValueError as err:
        raise UserError(str(err)) from None
    output = Path(args.output)
    resume = None if args.resume is None else Path(args.resume or args.output)
    if resume is not None and not resume.is_file():
        raise UserError(f"--resume: {resume} does not exist")
    _check_paths(Path(args.input), output, resume=resume, cache=Path(args.faces_cache) if args.faces_cache else None,
                 overwrite=args.overwrite, settings=setting_inputs(args, cfg))
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {args.max_steps}")  # before the faces are searched for

    # 2. Faces, framed exactly as the video pipeline frames them.
    cache = Path(args.faces_cache) if args.faces_cache else None
    if cache is not None and cache.is_file():
        faces = FaceSet.load(cache)
        log.info("read %d aligned faces from %s", len(faces), cache)
    else:
        paths = find_images(args.input)
        faces = collect_faces(paths, FaceDetector(cfg.detect), min_face=args.min_face, progress=not args.quiet)
        if cache is not None:
            faces.save(cache)
    if not args.quiet:
        print(f"facezoom: training on {len(faces)} faces", file=sys.stderr)

    # 3. Train and report.
    summary = train_pfsr(faces, output, cfg=train_cfg, channels=channels, resume=resume, max_steps=args.max_steps,
                         device=args.device, progress=not args.quiet)
    if not args.quiet:
        if summary["steps_run"] == 0:
            print(f"facezoom: {resume} already completed this schedule ({summary['total']} steps); nothing to do", file=sys.stderr)
        else:
            print(f"facezoom: wrote {output} at step {summary['iterations']} of {summary['total']} ({summary['phase']}); "
                  f"loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}", file=sys.stderr)
            if summary["iterations"] >= summary["total"]:
                print(f"facezoom: use it with: facezoom video IN -o OUT --set sr.backend=ffsr --set sr.generator={output}", file=sys.stderr)
    return 0


def _check_paths(source: Path, output: Path, *, resume: Path | None, cache: Path | None, overwrite: bool,
                 settings: dict[str, Path]) -> None:
    """The output policy for training, before the faces are searched for: the checkpoint is not
    an input (the folder, the faces cache, another --resume checkpoint), and an existing one is
    replaced only when it is the one --resume continues, or with -y."""
    from pipeline.media.files import check_distinct, check_new_output

    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name such as {output / 'pfsr.ckpt'}")
    continued = resume is not None and output.exists() and os.path.samefile(resume, output)
    if output.exists() and not continued and not overwrite:
        raise UserError(f"{output} exists; pass --resume to continue training it, -y (--overwrite) to replace it, "
                        "or choose another --output")
    inputs = {"the input folder": source, **settings, **({"the faces cache (--faces-cache)": cache} if cache is not None else {}),
              **({"the --resume checkpoint": resume} if resume is not None and not continued else {})}
    check_distinct(inputs, {"the checkpoint (--output)": output})
    check_new_output(output, what="the checkpoint (--output)", overwrite=True)  # its folder takes a file: /proc, read-only
