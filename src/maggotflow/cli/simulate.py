"""`maggotflow simulate`: write synthetic labelled experiments (maggotflow.simulation.simulate).

Prints the track files written, one per line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from maggotflow.simulation import (
    LABEL_SETS,
    REGIMES,
    SIMULATED_FORMATS,
    SimulationConfig,
    regime_config,
    simulate,
)


def _larvae_range(text: str) -> tuple[int, int]:
    """`--larvae`: 'MIN-MAX' or 'N' -> (MIN, MAX) with 1 <= MIN <= MAX."""
    try:
        lo, _, hi = text.partition("-")
        lo_n, hi_n = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 8-15) or N, got {text!r}") from None
    if not 1 <= lo_n <= hi_n:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX, got {text!r}")
    return lo_n, hi_n


def _format_list(text: str) -> tuple[str, ...]:
    """`--formats`: a comma-separated, non-empty subset of SIMULATED_FORMATS."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in SIMULATED_FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(
            f"formats must be a comma-separated subset of {','.join(SIMULATED_FORMATS)}, got {text!r}"
        )
    return formats


def _positive(kind: type) -> Any:
    """An argparse type: `kind(text)`, refused unless > 0."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    return parse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", metavar="OUTDIR", type=Path, help="directory to write the experiments into")
    parser.add_argument(
        "--files", type=_positive(int), default=6, metavar="N", help="number of track files (default 6)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed (default 0); file i depends only on (S, i)"
    )
    parser.add_argument(
        "--duration", type=_positive(float), default=SimulationConfig.duration_s, metavar="SECONDS",
        help=f"length of each experiment in s (default {SimulationConfig.duration_s:g})",
    )
    parser.add_argument(
        "--larvae", type=_larvae_range, default=SimulationConfig.larvae, metavar="MIN-MAX",
        help="larvae per file (default {}-{})".format(*SimulationConfig.larvae),
    )
    parser.add_argument(
        "--formats", type=_format_list, default=SIMULATED_FORMATS, metavar="LIST",
        help=f"track formats, cycled over files (default {','.join(SIMULATED_FORMATS)})",
    )
    parser.add_argument(
        "--labels", choices=tuple(LABEL_SETS), default=SimulationConfig.label_set,
        help=f"label set: 7 = {', '.join(LABEL_SETS['7'])}; 6 = {', '.join(LABEL_SETS['6'])} "
        f"(default {SimulationConfig.label_set})",
    )
    parser.add_argument(
        "--regime", choices=tuple(REGIMES), default="A",
        help="simulation regime (maggotflow.simulation.REGIMES): A = reference lab; B = small, fast larvae, "
        "coarse noisy tracker; C = large, slow larvae, fine fast tracker (default A)",
    )


def run_command(args: argparse.Namespace) -> int:
    config = regime_config(args.regime, duration_s=args.duration, larvae=tuple(args.larvae), label_set=args.labels)
    for path in simulate(args.outdir, args.files, seed=args.seed, formats=args.formats, config=config):
        print(path)
    return 0
