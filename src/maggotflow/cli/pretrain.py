"""`maggotflow pretrain`: intermediates -> a pretrained encoder instance (`maggotflow.pretraining`);
one option per `PretrainConfig` field (`maggotflow.cli.settings`), its comment there as the help."""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.pretraining import PretrainConfig, pretrain


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", nargs="+", required=True, type=Path, metavar="H5",
                        help="training intermediates (from `maggotflow isolate`); labels are ignored")
    parser.add_argument("--val", nargs="*", default=[], type=Path, metavar="H5",
                        help="validation intermediates (default: hold out files, or larvae of a single file)")
    parser.add_argument("--out", required=True, type=Path,
                        help="model instance folder to write: new, empty, or an earlier model folder holding only "
                             "maggotflow's files (replaced); a folder with any file of yours is refused before "
                             "training")
    add_settings_options(parser, PretrainConfig)


def run_command(args: argparse.Namespace) -> int:
    config = settings_from_args(PretrainConfig, args)
    pretrain(args.train, args.val, args.out, config, log=lambda msg: print(msg, flush=True))
    return 0
