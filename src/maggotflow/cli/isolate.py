"""`maggotflow isolate`: one track file (+ labels) -> the per-file intermediate (maggotflow.isolation)."""

from __future__ import annotations

import argparse
import logging

from maggotflow.cli import add_read_options, read_options
from maggotflow.isolation import isolate

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trackfile", help="track file (.spine, trx.mat or FIMTrack .csv)")
    parser.add_argument("out", help="output intermediate (.h5)")
    parser.add_argument("--labels", dest="label_path", help="LarvaTagger .label file with this file's labels")
    add_read_options(parser)
    parser.add_argument("--no-sha1-check", action="store_true",
                        help="accept a label file made for another version of the track file")


def run_command(args: argparse.Namespace) -> int:
    run = isolate(args.trackfile, args.out, args.label_path, read_options(args), check_sha1=not args.no_sha1_check)
    n = sum(tr.n_steps for tr in run.tracks)
    log.info("%s: %d larvae, %d time steps -> %s", args.trackfile, len(run.tracks), n, args.out)
    return 0
