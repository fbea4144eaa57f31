"""`maggotflow pretrain`: intermediates -> a pretrained encoder instance (`maggotflow.pretraining`).

The settings options are `PretrainConfig`'s fields (`maggotflow.cli.settings`); their
defaults are the dataclass's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maggotflow.cli.settings import add_settings_options, settings_from_args
from maggotflow.pretraining import PretrainConfig, pretrain

HELP = {
    "steps": "optimisation steps",
    "batch_size": "segments per step",
    "lr": "Adam learning rate",
    "grad_clip": "gradient norm clip",
    "eval_every": "validate every N steps (also before training and at the end)",
    "val_batches": "validation set size in batches",
    "seed": "random seed",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "samples_per_file": "max training segments per file",
    "max_segments": "max training segments in all, bounds memory",
    "val_fraction": "share held out when --val is not given",
    "window": "time steps per window",
    "frame_interval": "window step in s",
    "n_points": "body points",
    "interpolate": "windows of native frames, no resampling (the 20220418 prototype)",
    "latent_dim": "latent vector size",
    "filters": "conv filters per block, comma separated",
    "body_kernel": "kernel along the body",
    "time_kernel": "kernel along time (none: the window)",
    "context": "windows predicted on each side",
    "mixed_precision": "full float32 on CUDA too",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", nargs="+", required=True, type=Path, metavar="H5",
                        help="training intermediates (from `maggotflow isolate`); labels are ignored")
    parser.add_argument("--val", nargs="*", default=[], type=Path, metavar="H5",
                        help="validation intermediates (default: hold out files, or larvae of a single file)")
    parser.add_argument("--out", required=True, type=Path, help="model instance folder to write")
    add_settings_options(parser, PretrainConfig, HELP)


def run_command(args: argparse.Namespace) -> int:
    config = settings_from_args(PretrainConfig, args)
    pretrain(args.train, args.val, args.out, config, log=lambda msg: print(msg, flush=True))
    return 0
