"""Track-file I/O and segment throughput on files of realistic size.

Default: one file of 100 larvae x 5 min at 30 fps (about 900,000 larva-steps) in each of
.spine and trx.mat, written by the simulator. Prints read throughput (MB/s, median of
repeats) and segments built per second.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, row
from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.spine import write_spine
from maggotflow.formats.trx import write_trx
from maggotflow.segments import SegmentSpec, build_segments
from maggotflow.simulation import SimulationConfig, simulate_run

LARVAE = int(os.environ.get("BENCH_LARVAE", 100))
DURATION = float(os.environ.get("BENCH_DURATION", 300))


def main() -> None:
    config = SimulationConfig(duration_s=DURATION, larvae=(LARVAE, LARVAE), frame_rate_hz=(30.0, 30.0))
    run = simulate_run(np.random.default_rng(0), config, {"id": "20200101_000000"})
    steps = sum(tr.n_steps for tr in run.tracks)
    print(f"  input: {len(run.tracks)} larvae, {steps:,} larva-steps ({DURATION:.0f} s at 30 fps)")
    with tempfile.TemporaryDirectory() as tmp:
        spine = Path(tmp) / "20200101_000000@g@e@t15@p@100.spine"
        write_spine(run, spine, write_outline=False)
        trx = Path(tmp) / "t15" / "g@e" / "p" / "20200101_000000" / "trx.mat"
        write_trx(run, trx)
        options = ReadOptions()
        for name, path in (("spine", spine), ("trx.mat", trx)):
            size_mb = path.stat().st_size / 1e6
            seconds = median_time(lambda: read_run(path, options), repeats=3)
            row(f"read {name} ({size_mb:.0f} MB)", size_mb / seconds, "MB/s", f"median {seconds:.2f} s")
    spec = SegmentSpec()
    seconds = median_time(lambda: [build_segments(tr, spec) for tr in run.tracks], repeats=3)
    row("segments built (2 s windows, all steps)", steps / seconds, "segments/s", f"median {seconds:.2f} s")
