"""`maggotflow segments`: per larva of an intermediate, its segments' count and value range
(a quick inspection of `maggotflow.segments`)."""

from __future__ import annotations

import argparse

from maggotflow.isolation import read_isolated
from maggotflow.segments import SegmentSpec, build_segments


def configure_parser(parser: argparse.ArgumentParser) -> None:
    spec = SegmentSpec()
    parser.add_argument("intermediate", help="per-file HDF5 intermediate (from `maggotflow isolate`)")
    parser.add_argument("--window", type=int, default=spec.window, help=f"steps per segment (default {spec.window})")
    parser.add_argument("--frame-interval", type=float, default=spec.frame_interval,
                        help=f"grid step in s (default {spec.frame_interval:g})")
    parser.add_argument("--n-points", type=int, default=spec.n_points,
                        help=f"body points per spine (default {spec.n_points})")


def run_command(args: argparse.Namespace) -> int:
    spec = SegmentSpec(window=args.window, frame_interval=args.frame_interval, n_points=args.n_points)
    run = read_isolated(args.intermediate)
    for track in run.tracks:
        seg = build_segments(track, spec)
        print(f"larva {track.id}: {seg.shape[0]} segments of shape {seg.shape[1:]}, "
              f"x in [{seg[:, 0].min():.2f}, {seg[:, 0].max():.2f}] larva lengths")
    return 0
