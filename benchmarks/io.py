"""Track-file I/O and segment throughput on files of realistic size.

Default: one run of 100 larvae x 5 min at 30 fps (about 900,000 larva-steps), written by the
simulator as .spine + .outline, FIMTrack csv and trx.mat. `reading_rows()` prints, per text
format, parse MB/s (file bytes -> validated table: `spine.read_table`, `fimtrack.read_cells`)
and whole `read_run` MB/s (table -> Run: grouping, plausibility bridging, orientation, Track
checks, sha1), medians of repeats; the .outline rows time the .outline alone (parse) and the
.spine read with and without it (`ReadOptions.outlines`). `main()` adds trx.mat reading and
segments built per second.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, row
from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.fimtrack import read_cells, write_fimtrack
from maggotflow.formats.spine import read_table, write_spine
from maggotflow.formats.trx import write_trx
from maggotflow.segments import SegmentSpec, build_segments
from maggotflow.simulation import SimulationConfig, simulate_run
from maggotflow.tracks import Run

LARVAE = int(os.environ.get("BENCH_LARVAE", 100))
DURATION = float(os.environ.get("BENCH_DURATION", 300))
REPEATS = int(os.environ.get("BENCH_REPEATS", 3))


def simulated_run() -> Run:
    config = SimulationConfig(duration_s=DURATION, larvae=(LARVAE, LARVAE), frame_rate_hz=(30.0, 30.0))
    return simulate_run(np.random.default_rng(0), config, {"id": "20200101_000000"})


def on_frame_grid(run: Run, fps: float = 30.0) -> Run:
    """The run's times moved onto a frame grid starting at 0 s (FIMTrack files have frames)."""
    t0 = min(track.t[0] for track in run.tracks)
    return Run(run.metadata, [tr.replace(t=np.rint((tr.t - t0) * fps) / fps, outline=None) for tr in run.tracks])


def throughput(name: str, path: Path, fn) -> None:
    size_mb = path.stat().st_size / 1e6
    seconds = median_time(fn, repeats=REPEATS, warmup=0)  # the file was just written: in the page cache
    row(f"{name} ({size_mb:.0f} MB)", size_mb / seconds, "MB/s", f"median {seconds:.2f} s")


def reading_rows(run: Run, folder: Path) -> None:
    """Parse and read_run MB/s of .spine, .outline and FIMTrack csv files of `run` in `folder`."""
    spine = folder / "20200101_000000@g@e@t15@p@100.spine"
    write_spine(run, spine)  # and the .outline next to it
    outline = spine.with_suffix(".outline")
    fim = folder / "20200101_000000@g@e@t15@p@100.csv"
    write_fimtrack(on_frame_grid(run), fim, framerate=30.0, pixelsize_um=100.0)
    spines_only = ReadOptions(outlines=False)
    fim_options = ReadOptions(framerate=30.0, pixelsize_um=100.0)
    throughput("parse .spine", spine, lambda: read_table(spine, "spine"))
    throughput("read_run .spine (outlines off)", spine, lambda: read_run(spine, spines_only))
    throughput("parse .outline", outline, lambda: read_table(outline, "outline"))
    both_mb = (spine.stat().st_size + outline.stat().st_size) / 1e6
    seconds = median_time(lambda: read_run(spine), repeats=REPEATS, warmup=0)
    row(f"read_run .spine + .outline ({both_mb:.0f} MB)", both_mb / seconds, "MB/s", f"median {seconds:.2f} s")
    throughput("parse FIMTrack csv", fim, lambda: read_cells(fim))
    throughput("read_run FIMTrack csv", fim, lambda: read_run(fim, fim_options))


def main() -> None:
    run = simulated_run()
    steps = sum(tr.n_steps for tr in run.tracks)
    print(f"  input: {len(run.tracks)} larvae, {steps:,} larva-steps ({DURATION:.0f} s at 30 fps)")
    logger = logging.getLogger("maggotflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a warning per repeat (e.g. head/tail evidence) is noise here
    try:
        with tempfile.TemporaryDirectory() as tmp:
            reading_rows(run, Path(tmp))
            trx = Path(tmp) / "t15" / "g@e" / "p" / "20200101_000000" / "trx.mat"
            write_trx(run, trx)
            throughput("read trx.mat", trx, lambda: read_run(trx, ReadOptions()))
    finally:
        logger.setLevel(level)
    spec = SegmentSpec()
    seconds = median_time(lambda: [build_segments(tr, spec) for tr in run.tracks], repeats=3)
    row("segments built (2 s windows, all steps)", steps / seconds, "segments/s", f"median {seconds:.2f} s")
