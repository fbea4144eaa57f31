"""Track-file I/O and segment throughput on files of realistic size.

Default: one run of 100 larvae x 5 min at 30 fps (about 900,000 larva-steps), written by the
simulator as .spine + .outline, FIMTrack csv and trx.mat. `reading_rows()` prints, per text
format, parse MB/s (file bytes -> validated table: `spine.read_table`, `fimtrack.read_cells`)
and whole `read_run` MB/s (table -> Run: grouping, plausibility bridging, orientation, Track
checks, sha1), medians of repeats of the wall time; the .spine parse also per CPU second
(`time.process_time`, every thread of the process: MB/s per core, the figure that matters on
a shared node) and names its fast parser (`spine.fast_spine_parser`: pyarrow or pandas). The
.outline rows time the .outline alone (parse) and the .spine read with and without it
(`ReadOptions.outlines`). `main()` adds trx.mat reading and segments built per second on the
CPU, one thread (`segment_rows()`): numpy per whole larva and in prediction's chunks of 4,096
centres, and torch (`build_segments_torch`) on the same chunks, each batched over the chunk's
larvae.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import median_time, row
from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.fimtrack import read_cells, write_fimtrack
from maggotflow.formats.spine import fast_spine_parser, read_table, write_spine
from maggotflow.formats.trx import write_trx
from maggotflow.segments import SegmentSpec, build_segments, build_segments_torch, larva_length
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


def wall_and_cpu(fn) -> tuple[float, float]:
    """Median wall time and median CPU time (s, `time.process_time`: every thread) of REPEATS
    calls of `fn()`, without warm-up (the file was just written: in the page cache)."""
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def reading_rows(run: Run, folder: Path) -> None:
    """Parse and read_run MB/s of .spine, .outline and FIMTrack csv files of `run` in `folder`."""
    spine = folder / "20200101_000000@g@e@t15@p@100.spine"
    write_spine(run, spine)  # and the .outline next to it
    outline = spine.with_suffix(".outline")
    fim = folder / "20200101_000000@g@e@t15@p@100.csv"
    write_fimtrack(on_frame_grid(run), fim, framerate=30.0, pixelsize_um=100.0)
    spines_only = ReadOptions(outlines=False)
    fim_options = ReadOptions(framerate=30.0, pixelsize_um=100.0)
    os.sync()  # the files just written reach the disk now, not while they are read (writeback costs CPU)
    spine_mb = spine.stat().st_size / 1e6
    parser = fast_spine_parser()  # imports pyarrow, once per process, before the timing
    wall, cpu = wall_and_cpu(lambda: read_table(spine, "spine"))
    row(f"parse .spine ({spine_mb:.0f} MB)", spine_mb / wall, "MB/s",
        f"median {wall:.2f} s; CPU {spine_mb / cpu:.0f} MB/s per core ({parser})")
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
            os.sync()
            throughput("read trx.mat", trx, lambda: read_run(trx, ReadOptions()))
    finally:
        logger.setLevel(level)
    segment_rows(run)


def chunks(run: Run, size: int = 4096) -> list[list[tuple]]:
    """(track, length, centres) pieces in chunks of `size` centres spanning larvae, as
    prediction cuts them (`Predictor`, MIN_CHUNK)."""
    out, current, filled = [], [], 0
    for track in run.tracks:
        start, length = 0, larva_length(track)
        while start < track.n_steps:
            count = min(size - filled, track.n_steps - start)
            current.append((track, length, track.t[start:start + count]))
            filled, start = filled + count, start + count
            if filled == size:
                out.append(current)
                current, filled = [], 0
    return out + ([current] if current else [])


def segment_rows(run: Run) -> None:
    """Segments/s on the CPU, one torch thread: numpy per larva and per chunk, torch per chunk."""
    import torch

    steps = sum(tr.n_steps for tr in run.tracks)
    spec = SegmentSpec()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = median_time(lambda: [build_segments(tr, spec) for tr in run.tracks], repeats=REPEATS)
        row("segments built, numpy, whole larvae", steps / seconds, "segments/s", f"median {seconds:.2f} s")
        pieces = chunks(run)
        seconds = median_time(lambda: [build_segments(tr, spec, length=n, centres=c) for chunk in pieces
                                       for tr, n, c in chunk], repeats=REPEATS)
        row("segments built, numpy, chunks of 4,096", steps / seconds, "segments/s", f"median {seconds:.2f} s")
        seconds = median_time(lambda: [build_segments_torch(chunk, spec, "cpu") for chunk in pieces], repeats=REPEATS)
        row("segments built, torch on CPU, chunks of 4,096", steps / seconds, "segments/s",
            f"median {seconds:.2f} s, 1 thread (on CUDA: benchmarks gpu)")
    finally:
        torch.set_num_threads(threads)
