"""`maggotflow train`: a dataset (+ a pretrained encoder) -> a tagger instance (`maggotflow.training`).

The settings options are `TrainConfig`'s fields (`maggotflow.cli.settings`); their defaults
are the dataclass's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.training import TrainConfig, train_tagger

HELP = {
    "stage1_steps": "classifier-only steps, encoder frozen",
    "stage2_steps": "fine-tuning steps, encoder + classifier",
    "batch_size": "segments per step",
    "lr_stage1": "learning rate of stage 1",
    "lr_stage2": "learning rate of stage 2",
    "grad_clip": "gradient norm clip",
    "eval_every": "validate every N steps",
    "seed": "random seed",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "layers": "widths of the classifier's hidden dense layers, comma separated, e.g. 64,32 "
              "(none: a single dense layer)",
    "dropout": "classifier dropout",
    "latent_dim": "latent size of a random encoder (ignored with --pretrained)",
    "filters": "conv filters of a random encoder, comma separated (ignored with --pretrained)",
    "post_rule": "post-prediction rule stored in the tagger: ABC->AAC (or ABC-AAC) or none",
    "class_weights": "comma-separated class weights overriding the dataset's (none: the dataset's)",
    "select_by": "best checkpoint by validation macro_f1 (ties: loss) or by validation loss",
    "mixed_precision": "full float32 on CUDA too",
    "bootstrap": "bagging: train on a bootstrap resample of the training samples (ensemble members, with --seed)",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="labelled segment dataset (from `maggotflow dataset`)")
    parser.add_argument("--out", required=True, type=Path, help="model instance folder to write")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="pretrained model instance (from `maggotflow pretrain`, or a tagger whose encoder is "
                             "reused); without it the encoder starts from random weights")
    add_settings_options(parser, TrainConfig, HELP)


def run_command(args: argparse.Namespace) -> int:
    config = settings_from_args(TrainConfig, args)
    train_tagger(args.dataset, args.out, args.pretrained, config, log=lambda msg: print(msg, flush=True))
    return 0
