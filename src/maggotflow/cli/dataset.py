"""`maggotflow dataset`: labelled intermediates -> a segment dataset (`maggotflow.dataset`).

Defaults come from `SegmentSpec` and `build_dataset`'s signature, not from this module.
"""

from __future__ import annotations

import argparse
import inspect

from maggotflow.cli import UsageError, add_hidden_alias, input_paths, parse_names, parse_synonyms, parse_weights
from maggotflow.dataset import BALANCING_STRATEGIES, SYNONYM_PRESETS, TRAIN, VALIDATION, build_dataset
from maggotflow.segments import SegmentSpec


def configure_parser(parser: argparse.ArgumentParser) -> None:
    spec = SegmentSpec()
    default = {name: p.default for name, p in inspect.signature(build_dataset).parameters.items()}
    parser.add_argument("out", help="dataset file to write (.h5)")
    parser.add_argument("inputs", nargs="*", help="labelled intermediates (from `maggotflow isolate`)")
    parser.add_argument("--input-list", help="text file listing more intermediates, one path per line")
    parser.add_argument("--labels", help="comma-separated label set, e.g. run,cast,back,hunch,roll,stop_large "
                                         "(default: every label found)")
    parser.add_argument("--synonyms", action="append",
                        help="name_in_file=task_name pairs, comma-separated, or a preset "
                             f"({', '.join(SYNONYM_PRESETS)}); repeatable")
    parser.add_argument("--target", help="single-behaviour tagger: e.g. roll -> labels roll, not_roll")
    parser.add_argument("--balancing", "--balancing-strategy", choices=BALANCING_STRATEGIES,
                        default=default["balancing"],
                        help="auto (weights by inverse frequency), maggotuba (subsampling) or none "
                             f"(default {default['balancing']})")
    parser.add_argument("--class-weights", help="comma-separated weights, one per label in label order")
    parser.add_argument("--validation-fraction", type=float, default=default["validation_fraction"],
                        help="share of files (or larvae, with one file) kept for validation "
                             f"(default {default['validation_fraction']:g})")
    parser.add_argument("--max-samples", type=int, help="cap on the number of samples written")
    parser.add_argument("--device", default="auto",
                        help="where segments are built: auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int, default=default["seed"],
                        help=f"random seed of split and subsampling (default {default['seed']})")
    parser.add_argument("--window", type=int, default=spec.window,
                        help=f"segment length in steps (default {spec.window})")
    parser.add_argument("--frame-interval", type=float, default=spec.frame_interval,
                        help=f"segment grid step in s (default {spec.frame_interval:g})")
    parser.add_argument("--n-points", type=int, default=spec.n_points,
                        help=f"body points per spine (default {spec.n_points})")
    parser.add_argument("--filter", action="append", metavar="KEY=VALUE",
                        help="keep only files whose metadata has KEY=VALUE (e.g. tracker=t15), as the workflow's "
                             "inputs.filter; repeatable: every KEY must match, a KEY given several times matches "
                             "any of its values")
    add_hidden_alias(parser, "--only", "filter", action="append")


def _metadata_wanted(items: list[str] | None) -> dict[str, list[str]]:
    """--filter KEY=VALUE items -> {KEY: [VALUE, ...]} (for `tracks.metadata_matches`)."""
    wanted: dict[str, list[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--filter {item!r} is not of the form KEY=VALUE")
        wanted.setdefault(key.strip(), []).append(value.strip())
    return wanted


def run_command(args: argparse.Namespace) -> int:
    dataset = build_dataset(
        input_paths(args), args.out,
        spec=SegmentSpec(window=args.window, frame_interval=args.frame_interval, n_points=args.n_points),
        labels=parse_names(args.labels), synonyms=parse_synonyms(args.synonyms), balancing=args.balancing,
        class_weights=parse_weights(args.class_weights), target=args.target,
        validation_fraction=args.validation_fraction, max_samples=args.max_samples, seed=args.seed,
        filter=_metadata_wanted(args.filter), device=args.device,
    )
    with dataset:
        train, val = dataset.class_counts(TRAIN), dataset.class_counts(VALIDATION)
        print(f"{args.out}: {len(dataset)} samples ({train.sum()} training, {val.sum()} validation), "
              f"split by {dataset.split_by}")
        for name, a, b, w in zip(dataset.labels, train, val, dataset.class_weights):
            print(f"  {name:<16} train {a:>8}  validation {b:>8}  weight {w:.4g}")
    return 0
