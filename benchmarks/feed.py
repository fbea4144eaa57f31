"""Feed: what the reading side of tagging delivers, measured without a GPU.

1. Producer only. FEED_FILES hard links of one realistic `.spine` (BENCH_LARVAE larvae x
   BENCH_DURATION s at 30 fps; default 100 x 300 s: 694,618 segments, 149 MB, the io
   benchmark's file) are read as a CUDA tagging job reads them: `readers.prepared_files`
   with 0 reader processes (the producer thread alone: the single-reader path), 1 and 2,
   each file cut into chunks of raw pieces as `Predictor` hands them to the GPU (segments
   left for the device to build), and a consumer that drops every chunk (the model replaced
   by a no-op). Printed per setting: segments/s and MB/s, medians of BENCH_REPEATS rounds
   taken in alternation (the machine is shared), then the ratio 2 workers / 1 worker.
   Targets: `1 worker` >= 1,000,000 segments/s, `2 workers` >= 1.8x one.
2. End to end on the CPU. `predict_files` with the default architecture (random weights:
   speed does not depend on them) on FEED_E2E_LARVAE larvae x 60 s, on this machine's
   allocated cores, in each split between reader processes and torch threads that does not
   oversubscribe them: 0 readers and all cores to torch (what `readers="auto"` picks on the
   CPU), 0 readers and 1 thread, 1 reader and the other cores to torch. Printed against
   the best single-process setting (0 readers).
The files are read from the page cache (written just before): this measures parsing and
checking, not a disk.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import row
from maggotflow.formats import ReadOptions
from maggotflow.formats.spine import write_spine
from maggotflow.simulation import SimulationConfig, simulate_run

ENV = os.environ.get
LARVAE = int(ENV("BENCH_LARVAE", 100))
DURATION = float(ENV("BENCH_DURATION", 300))
REPEATS = int(ENV("BENCH_REPEATS", 3))
FILES = int(ENV("FEED_FILES", 4))
E2E_LARVAE = int(ENV("FEED_E2E_LARVAE", 20))
SEGMENTS_TARGET = 1_000_000
SCALING_TARGET = 1.8


def write_copies(root: Path, larvae: int, duration: float, copies: int, seed: int) -> list[Path]:
    """One simulated .spine (no .outline) and `copies` - 1 hard links to it, in folders of their own."""
    config = SimulationConfig(duration_s=duration, larvae=(larvae, larvae), frame_rate_hz=(30.0, 30.0))
    run = simulate_run(np.random.default_rng(seed), config, {"id": "20200101_000000"})
    name = "20200101_000000@g@e@t15@p@100.spine"
    first = root / "0" / name
    first.parent.mkdir(parents=True)
    write_spine(run, first, write_outline=False)
    paths = [first]
    for i in range(1, copies):
        (root / str(i)).mkdir()
        os.link(first, root / str(i) / name)
        paths.append(root / str(i) / name)
    os.sync()  # written to disk now, not while it is read (writeback costs CPU)
    return paths


def default_tagger(folder: Path) -> Path:
    """The default architecture with random weights, saved as a tagger folder."""
    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec

    labels = ["run", "cast", "back", "hunch", "roll", "stop", "small_motion"]
    encoder = EncoderConfig()
    classifier = ClassifierConfig(latent_dim=encoder.latent_dim, n_classes=len(labels))
    ModelInstance("tagger", SegmentSpec(), encoder, classifier_config=classifier, labels=labels).save(folder)
    return folder


def feed_seconds(predictor, paths: list[Path], readers: int) -> tuple[float, int]:
    """Wall time of the producer over `paths` with a no-op consumer, and the segments fed."""
    start = time.perf_counter()
    # The producer as a CUDA job runs it (raw pieces: segments built on the device); the
    # consumer only counts each chunk's time steps.
    segments = sum(predictor.feed(enumerate(paths), ReadOptions(), readers))
    return time.perf_counter() - start, segments


def producer_rows(root: Path, tagger: Path) -> None:
    from maggotflow.prediction import Predictor

    paths = write_copies(root / "feed", LARVAE, DURATION, FILES, seed=0)
    mb = FILES * paths[0].stat().st_size / 1e6
    predictor = Predictor(tagger, device="cpu", batch_size=8192)
    predictor.build_on_device = True  # chunks of raw pieces, as on CUDA
    settings = {"0 workers (producer thread)": 0, "1 worker": 1, "2 workers": 2}
    times: dict[str, list[float]] = {name: [] for name in settings}
    segments = 0
    for _ in range(REPEATS):
        for name, readers in settings.items():
            seconds, segments = feed_seconds(predictor, paths, readers)
            times[name].append(seconds)
    print(f"  producer only: {FILES} x {mb / FILES:.0f} MB .spine, {segments:,} segments, no-op consumer")
    rate = {}
    for name, readers in settings.items():
        seconds = statistics.median(times[name])
        rate[name] = segments / seconds
        target = f"target >= {SEGMENTS_TARGET:,}" if readers == 1 else ""
        row(name, rate[name], "segments/s", f"{mb / seconds:,.0f} MB/s, median of {REPEATS} {target}")
    ratio = rate["2 workers"] / rate["1 worker"]
    print(f"  {'2 workers / 1 worker':<48} {ratio:>12.2f} {'':<12} target >= {SCALING_TARGET}; "
          f"1 worker / producer thread {rate['1 worker'] / rate['0 workers (producer thread)']:.2f}")


def end_to_end_rows(root: Path, tagger: Path) -> None:
    from maggotflow.prediction import predict_files
    from maggotflow.threads import allocated_cores

    cores = allocated_cores()
    (path,) = write_copies(root / "e2e", E2E_LARVAE, 60.0, 1, seed=1)
    settings = {f"0 readers, {cores} torch threads (auto)": (0, cores), "0 readers, 1 torch thread": (0, 1)}
    if cores > 1:
        settings[f"1 reader, {cores - 1} torch thread{'s' if cores > 2 else ''}"] = (1, cores)
    out = root / "e2e.label"
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(REPEATS):
        for name, (readers, limit) in settings.items():
            start = time.perf_counter()
            predict_files(tagger, [path], out_paths=[out], device="cpu", readers=readers, cores=limit,
                          overwrite=True)
            times[name].append(time.perf_counter() - start)
    from maggotflow.readers import read_input

    steps = sum(track.n_steps for track in read_input(path).tracks)
    print(f"  end to end on the CPU: {cores} allocated core(s), {steps:,} segments, default architecture")
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    best_single = max(r for name, r in rate.items() if name.startswith("0 readers"))
    for name, r in rate.items():
        row(f"predict, {name}", r, "segments/s", f"x{r / best_single:.2f} of the best single-process setting")


def main() -> None:
    import torch

    logger = logging.getLogger("maggotflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a warning per file and round (e.g. head/tail evidence) is noise here
    threads = torch.get_num_threads()
    print(f"  load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPU(s)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            tagger = default_tagger(root / "tagger")
            producer_rows(root, tagger)
            if E2E_LARVAE > 0:
                end_to_end_rows(root, tagger)
    finally:
        logger.setLevel(level)
        torch.set_num_threads(threads)
