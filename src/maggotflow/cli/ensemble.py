"""`maggotflow ensemble`: trained taggers -> one majority-vote ensemble folder (maggotflow.ensemble)."""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.ensemble import assemble


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="ensemble folder to write")
    parser.add_argument("members", nargs="+", type=Path, help="tagger instance folders (maggotflow train)")
    parser.add_argument("--post-rule", default=None, help="none or ABC->AAC, applied to the voted labels")


def run_command(args: argparse.Namespace) -> int:
    ensemble = assemble(args.members, args.out, args.post_rule)
    print(f"wrote ensemble of {len(ensemble.members)} taggers to {args.out}")
    return 0
