"""`facezoom weights`: list, download, verify or locate model weights (`models/weights.py`'s registry)."""

from __future__ import annotations

import argparse


def register(commands, add_config_args) -> None:
    weights = commands.add_parser("weights", help="list, download, verify or locate model weights")
    weights.set_defaults(handler=cmd_weights)
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every registry entry: size, licence, source, whether it is cached")
    fetch = actions.add_parser("fetch", help="download an entry into the cache and verify it (again, if the cached file is damaged)")
    fetch.add_argument("name")
    verify = actions.add_parser("verify", help="hash cached files (all, or one) against their expected SHA-256")
    verify.add_argument("name", nargs="?")
    where = actions.add_parser("path", help="print where an entry's file lives (or must be placed)")
    where.add_argument("name")


def cmd_weights(args: argparse.Namespace) -> int:
    from models import weights

    if args.action == "list":
        for e in weights.REGISTRY.values():
            if e.package:
                cached = "installed" if weights.is_present(e.name) else f"not installed: `{e.install}`"
            else:
                cached = "cached" if weights.is_present(e.name) else "not cached" + (" (placed by hand)" if e.manual_only else "")
            default = " (default)" if e.name == weights.DEFAULT else ""
            print(f"{e.name}{default}: {e.description}")
            print(f"    {e.approx_size}, {cached}; licence: {e.licence}")
            print(f"    source: {e.source}")
            print(f"    url: {e.url}")
        print(f"cache folder: {weights.cache_dir() / 'weights'} (set FACEZOOM_HOME to move it)")
        return 0
    if args.action == "fetch":
        print(weights.fetch(args.name, progress=not args.quiet, repair=True))  # a damaged cached file is fetched again
        return 0
    if args.action == "path":
        print(weights.path_for(args.name))
        return 0
    reports = weights.verify(args.name)
    if not reports:
        print(f"no registry weights are cached in {weights.cache_dir() / 'weights'}")
    for r in reports:
        print(f"{r.name}: {r.status}: {r.detail} ({r.path})")
    return 2 if any(r.status in ("mismatch", "missing") for r in reports) else 0
