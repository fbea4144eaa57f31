"""`maggotflow train-forest`: dataset + pretrained encoder -> a random-forest tagger (`maggotflow.forest`);
one option per `ForestConfig` field (`maggotflow.cli.settings`), its comment there as the help."""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.forest import ForestConfig, train_forest


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset HDF5 (maggotflow dataset)")
    parser.add_argument("pretrained", type=Path, help="pretrained encoder instance (maggotflow pretrain)")
    parser.add_argument("out", type=Path, help="tagger instance folder to write")
    add_settings_options(parser, ForestConfig)


def run_command(args: argparse.Namespace) -> int:
    train_forest(args.dataset, args.out, args.pretrained, settings_from_args(ForestConfig, args),
                 log=lambda msg: print(msg, flush=True))
    return 0
