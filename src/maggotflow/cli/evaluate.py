"""`maggotflow evaluate`: predicted vs reference `.label` files -> metrics (`maggotflow.evaluation`)."""

from __future__ import annotations

import argparse
import inspect
import logging

from maggotflow.cli import UsageError
from maggotflow.cli import parse_names, parse_synonyms
from maggotflow.evaluation import evaluate, format_table, pair_directories, write_report

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    ignore_ends = inspect.signature(evaluate).parameters["ignore_ends"].default
    parser.add_argument("--predicted", nargs="+", metavar="LABEL", help="predicted .label files")
    parser.add_argument("--reference", nargs="+", metavar="LABEL",
                        help="reference .label files, paired with --predicted by position")
    parser.add_argument("--predicted-dir", help="folder of predicted .label files")
    parser.add_argument("--reference-dir", help="folder of reference .label files, paired by relative path "
                                                "(or by file name when unique)")
    parser.add_argument("--out", help="folder for metrics.json, per_label.csv, confusion.csv, confusion.png")
    parser.add_argument("--labels", help="comma-separated labels to evaluate (default: the labels the predicted "
                                         "files declare, i.e. the tagger's)")
    parser.add_argument("--synonyms", action="append",
                        help="name_in_file=task_name pairs or a preset (see `maggotflow dataset --help`)")
    parser.add_argument("--ignore-ends", type=float, default=ignore_ends, metavar="S",
                        help="do not evaluate reference steps within S seconds of their track's first or "
                             f"last time (default {ignore_ends:g})")


def _pairs(args: argparse.Namespace) -> list:
    """(predicted, reference) pairs from --predicted/--reference or from the two folders."""
    by_files = args.predicted is not None or args.reference is not None
    by_dirs = args.predicted_dir is not None or args.reference_dir is not None
    if by_files == by_dirs:
        raise UsageError("give either --predicted and --reference files, or --predicted-dir and --reference-dir")
    if by_files:
        if not args.predicted or not args.reference or len(args.predicted) != len(args.reference):
            raise UsageError(f"--predicted and --reference need the same number of files "
                             f"({len(args.predicted or [])} and {len(args.reference or [])} given)")
        return list(zip(args.predicted, args.reference))
    if not args.predicted_dir or not args.reference_dir:
        raise UsageError("--predicted-dir and --reference-dir go together")
    return pair_directories(args.predicted_dir, args.reference_dir)


def run_command(args: argparse.Namespace) -> int:
    report = evaluate(_pairs(args), labels=parse_names(args.labels), synonyms=parse_synonyms(args.synonyms),
                      ignore_ends=args.ignore_ends)
    print(format_table(report))
    if args.out:
        write_report(report, args.out)
        log.info("report written to %s", args.out)
    return 0
