"""`maggotflow train`: a dataset (+ a pretrained encoder) -> a tagger instance (`maggotflow.training`);
one option per `TrainConfig` field (`maggotflow.cli.settings`), its comment there as the help."""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.training import TrainConfig, train_tagger


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="labelled segment dataset (from `maggotflow dataset`)")
    parser.add_argument("--out", required=True, type=Path,
                        help="model instance folder to write: new, empty, or an earlier model folder holding only "
                             "maggotflow's files (replaced); a folder with any file of yours is refused before "
                             "training")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="pretrained model instance (from `maggotflow pretrain`, or a tagger whose encoder is "
                             "reused); without it the encoder starts from random weights")
    add_settings_options(parser, TrainConfig)


def run_command(args: argparse.Namespace) -> int:
    config = settings_from_args(TrainConfig, args)
    train_tagger(args.dataset, args.out, args.pretrained, config, log=lambda msg: print(msg, flush=True))
    return 0
