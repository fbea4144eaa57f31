"""`maggotflow train-forest`: a dataset + a pretrained encoder -> a random-forest tagger (`maggotflow.forest`).

The settings options are `ForestConfig`'s fields (`maggotflow.cli.settings`); their
defaults are the dataclass's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.forest import ForestConfig, train_forest

HELP = {
    "n_trees": "number of trees",
    "max_depth": "maximum tree depth (none: unlimited)",
    "min_samples_leaf": "fewest training segments in a leaf",
    "max_samples": "training segments used at most",
    "seed": "random seed",
    "device": "where the encoder computes the latents: auto, cpu, cuda or cuda:N",
    "n_jobs": "scikit-learn threads for fitting",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset HDF5 (maggotflow dataset)")
    parser.add_argument("pretrained", type=Path, help="pretrained encoder instance (maggotflow pretrain)")
    parser.add_argument("out", type=Path, help="tagger instance folder to write")
    add_settings_options(parser, ForestConfig, HELP)


def run_command(args: argparse.Namespace) -> int:
    train_forest(args.dataset, args.out, args.pretrained, settings_from_args(ForestConfig, args),
                 log=lambda msg: print(msg, flush=True))
    return 0
