"""`maggotflow predict`: tag track files with a tagger or ensemble, writing `.label` files (maggotflow.prediction)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maggotflow.cli import UsageError, add_read_options, input_paths, read_options
from maggotflow.prediction import predict_files


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("model", type=Path, help="tagger model instance or ensemble folder (maggotflow train / ensemble)")
    add("inputs", nargs="*", type=Path,
        help="track files (.spine, trx.mat, FIMTrack .csv) or intermediates (.h5 from `maggotflow isolate`)")
    add("--input-list", type=Path, help="text file listing more inputs, one path per line")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="output folder: <track file stem>.label per input")
    out.add_argument("--out-paths", nargs="+", type=Path, help="one output .label path per input, in order")
    add("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    add("--batch-size", type=int, default=None, help="segments per forward pass (default 128 on CPU, 8192 on CUDA)")
    add("--readers", type=reader_count, default="auto",
        help="reader processes (read and check track files while the model runs): a number, or auto "
             "(default: on a GPU all allocated cores but one from 3 cores on, on the CPU none: torch takes every core)")
    add("--keep-going", action="store_true", help="skip bad input files, report them at the end (exit 1)")
    replace = parser.add_mutually_exclusive_group()
    replace.add_argument("--overwrite", action="store_true",
                         help="replace maggotflow's own earlier predictions (a .label that maggotflow did not "
                              "write is never replaced)")
    replace.add_argument("--no-overwrite", action="store_true",
                         help="refuse to replace any existing .label (the default; kept for old scripts)")
    add_read_options(parser)


def reader_count(text: str) -> int | str:
    """`--readers`: "auto" or a whole number >= 0."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 0, got {text!r}")
    return value


def run_command(args: argparse.Namespace) -> int:
    inputs = input_paths(args)
    if not inputs:
        raise UsageError("no input file given")
    failures: list[Exception] = []
    try:
        written = predict_files(
            args.model, inputs, out_dir=args.out, out_paths=args.out_paths, batch_size=args.batch_size,
            device=args.device, read_options=read_options(args), overwrite=args.overwrite,
            readers=args.readers, cores=args.threads,
            on_error=(lambda path, err: failures.append(err)) if args.keep_going else None,
        )
        print(f"wrote {len(written)} .label file(s)", flush=True)
    finally:  # the inputs skipped so far are listed also when an error stops the run
        if failures:
            print(f"maggotflow predict: {len(failures)} of {len(inputs)} input(s) failed:", file=sys.stderr)
            for err in failures:
                print(f"  {err}", file=sys.stderr)
    return 1 if failures else 0
