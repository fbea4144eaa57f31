"""Peak memory (RSS) of prediction on one very large file, and of pretraining and dataset
building over many files.

Each measurement runs in a fresh Python process (`python -m benchmarks.memory --child ...`)
that prints its own peak RSS (`resource.getrusage`, ru_maxrss), so the figures include the
interpreter, numpy, torch and h5py (~0.3-0.4 GB before any data).

1. predict (target: peak below 2 GB). `maggotflow predict` on one simulated experiment of
   300 larvae x 10 min at 30 fps:
   - "as simulated": larvae enter late and leave early, frames drop (~2.8 M time steps), the
     `.spine` (~600 MB) beside its `.outline` (~1.4 GB), which prediction does not need;
   - "every larva, every frame": no partial tracks, gaps or dropped frames, 5.4 M time steps
     (`.spine` ~1.2 GB, no `.outline`), the largest such file can be.
   The tagger is shaped as training makes it (default segments, kinematic features, hidden
   layer, an HMM decoder: every step's class probabilities are kept until its larva is
   decoded), with random weights and a small encoder (filters 8-8-4-4-4-4, latent 4;
   BENCH_MEMORY_ENCODER=default for the full one): the encoder's activations are per batch
   (128 segments on CPU) and do not change the peak, but the default encoder would take
   ~10-20 minutes per file on 2 cores.
2. pretraining and dataset building over 100 and 1,000 files (BENCH_MEMORY_FILES), each a
   small simulated experiment (copies of BENCH_MEMORY_DISTINCT distinct intermediates under
   different names), with the same caps on the data kept (`max_segments` / `max_samples`
   20,000): the peak must not grow with the number of files beyond the data kept.

Files are written once to BENCH_CACHE (default: a folder in the system's temporary
directory) and reused; the first run spends a few minutes writing them.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV = os.environ.get
CACHE = Path(ENV("BENCH_CACHE", Path(tempfile.gettempdir()) / "maggotflow-bench-memory"))
FILE_COUNTS = [int(n) for n in ENV("BENCH_MEMORY_FILES", "100,1000").split(",") if n.strip()]
DISTINCT = int(ENV("BENCH_MEMORY_DISTINCT", 20))
CAP = 20_000
MIB = 1024 ** 2


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (ru_maxrss is in KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------------- inputs
def _big_file(name: str, full: bool) -> Path:
    """The 300-larva, 10-minute, 30 fps experiment (cached)."""
    from maggotflow.formats.spine import write_spine
    from maggotflow.simulation import SimulationConfig, simulate_run

    path = CACHE / name / "20200101_000000@g@e@t15@p@300.spine"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(partial_track_probability=0.0, short_track_probability=0.0, gaps_per_minute=0.0,
                 dropped_frame_probability=(0.0, 0.0)) if full else {}
    config = SimulationConfig(duration_s=600.0, larvae=(300, 300), frame_rate_hz=(30.0, 30.0), **extra)
    t0 = time.perf_counter()
    run = simulate_run(np.random.default_rng(13), config, {"id": "20200101_000000"})
    write_spine(run, path, write_outline=not full)
    print(f"  (wrote {path.parent.name}: {sum(tr.n_steps for tr in run.tracks):,} steps in "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def _tagger() -> Path:
    """A tagger shaped as `maggotflow train` makes it (kinematic features, hidden layer, an
    HMM decoder, which keeps every step's class probabilities until a larva is decoded),
    random weights, a small encoder unless BENCH_MEMORY_ENCODER=default."""
    from maggotflow.decoding import Decision
    from maggotflow.instance import ModelInstance
    from maggotflow.kinematics import FEATURE_NAMES
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec
    from maggotflow.training import TrainConfig

    full = ENV("BENCH_MEMORY_ENCODER", "small") == "default"
    path = CACHE / ("tagger-default-hmm" if full else "tagger-small-hmm")
    if not path.exists():
        labels = ["run", "cast", "back", "hunch", "roll", "stop"]
        spec, train, k = SegmentSpec(), TrainConfig(), len(labels)
        encoder = EncoderConfig() if full else EncoderConfig(filters=(8, 8, 4, 4, 4, 4), latent_dim=4)
        classifier = ClassifierConfig(latent_dim=encoder.latent_dim, n_classes=k, layers=train.layers,
                                      features=len(FEATURE_NAMES), frame_interval=spec.frame_interval)
        decision = Decision(np.zeros(k), decoder="hmm", mean_duration=np.ones(k),
                            jump=(np.ones((k, k)) - np.eye(k)) / (k - 1))
        ModelInstance("tagger", spec, encoder, classifier_config=classifier, labels=labels,
                      decision=decision).save(path)
    return path


def _many_files(n: int) -> list[Path]:
    """`n` labelled intermediates: copies of DISTINCT simulated ones under their own names."""
    from maggotflow.isolation import isolate
    from maggotflow.simulation import SimulationConfig, label_file_path, simulate

    distinct = CACHE / f"distinct-{DISTINCT}"
    if not (distinct / "done").exists():
        shutil.rmtree(distinct, ignore_errors=True)
        config = SimulationConfig(duration_s=60.0, larvae=(4, 6), frame_rate_hz=(15.0, 30.0))
        tracks = simulate(distinct / "sim", DISTINCT, seed=3, config=config, formats=("spine",))
        for i, track in enumerate(tracks):
            isolate(track, distinct / f"{i:03d}.h5", label_file_path(track))
        (distinct / "done").write_text("")
    sources = sorted(distinct.glob("*.h5"))
    folder = CACHE / f"files-{n}-of-{DISTINCT}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.h5"
        if not path.exists():
            try:
                os.link(sources[i % len(sources)], path)
            except OSError:  # no hard links here: a copy
                shutil.copy(sources[i % len(sources)], path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- children
def _child(argv: list[str]) -> None:
    """Run one measured job in this (fresh) process and print its figures as JSON."""
    kind, *rest = argv
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    figures: dict = {}
    if kind == "predict":
        from maggotflow.prediction import predict_files

        tagger, track, out = rest
        written = predict_files(tagger, [track], out_dir=out, device="cpu", overwrite=True)
        figures["label_mb"] = written[0].stat().st_size / 1e6
    elif kind == "pretrain":
        from maggotflow.pretraining import PretrainConfig, pretrain

        out, *files = rest
        config = PretrainConfig(steps=5, batch_size=64, eval_every=5, val_batches=2, max_segments=CAP,
                                device="cpu", latent_dim=4, filters=(8, 8, 4, 4, 4, 4))
        pretrain([Path(p) for p in files], None, out, config, log=lambda s: None)
        figures["kept_mb"] = CAP * 2 * 5 * 60 * 4 / 1e6
    elif kind == "dataset":
        from maggotflow.dataset import build_dataset

        out, *files = rest
        with build_dataset(files, out, max_samples=CAP, seed=0) as ds:
            figures["kept_mb"] = len(ds) * 2 * 5 * 20 * 4 / 1e6
    figures["seconds"] = time.perf_counter() - t0
    figures["peak_rss"] = peak_rss_bytes()
    print("FIGURES " + json.dumps(figures), flush=True)


def _measure(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", *map(str, args)],
                          capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("FIGURES "):
            return json.loads(line[len("FIGURES "):])
    raise RuntimeError(f"memory benchmark child {args[0]} failed:\n{done.stderr[-3000:]}")


# ---------------------------------------------------------------------------- main
def main() -> None:
    from benchmarks.common import row

    CACHE.mkdir(parents=True, exist_ok=True)
    tagger = _tagger()
    print(f"  cache {CACHE}; 1 torch thread; peak RSS of a fresh process per job (target predict < 2 GB = 1,907 MiB)")
    for name, full in (("as-simulated", False), ("every-frame", True)):
        track = _big_file(name, full)
        outline = track.with_suffix(".outline")
        sizes = f"{track.stat().st_size / 1e6:.0f} MB .spine" + (
            f" + {outline.stat().st_size / 1e6:.0f} MB .outline" if outline.exists() else "")
        with tempfile.TemporaryDirectory() as out:
            figures = _measure("predict", tagger, track, out)
        verdict = "< 2 GB" if figures["peak_rss"] < 2e9 else "OVER 2 GB"
        row(f"predict 300 larvae x 10 min, {name}", figures["peak_rss"] / MIB, "MiB peak RSS",
            f"{verdict}; {sizes}; {figures['seconds']:.0f} s")
    for n in FILE_COUNTS:
        files = _many_files(n)
        with tempfile.TemporaryDirectory() as out:
            pre = _measure("pretrain", Path(out) / "pretrained", *files)
            data = _measure("dataset", Path(out) / "dataset.h5", *files)
        row(f"pretraining over {n:,} files", pre["peak_rss"] / MIB, "MiB peak RSS",
            f"{CAP:,} segments kept ({pre['kept_mb']:.0f} MB); {pre['seconds']:.0f} s")
        row(f"dataset building over {n:,} files", data["peak_rss"] / MIB, "MiB peak RSS",
            f"{CAP:,} samples kept ({data['kept_mb']:.0f} MB); {data['seconds']:.0f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
    else:
        main()
