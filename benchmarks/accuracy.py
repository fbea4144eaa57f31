"""Held-out accuracy on simulator data, against two baselines.

Simulates BENCH_TRAIN_FILES (24) training and BENCH_TEST_FILES (8) held-out files (7
behaviours, all three track formats), pretrains, builds the dataset (balancing `auto`),
fine-tunes in two stages and tags the held-out files, all on CPU at the demo budget; then
prints per-behaviour precision/recall/F1 and macro-F1 of the tagger, of a majority-class
baseline and of a kinematic-threshold baseline (benchmarks/baselines.py) on the same files.

Budget knobs (environment): BENCH_PRETRAIN_STEPS, BENCH_STAGE1_STEPS, BENCH_STAGE2_STEPS,
BENCH_FILTERS (comma-separated conv filters), BENCH_SEED.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.baselines import ThresholdTagger, kinematic_features
from maggotflow.dataset import Dataset, build_dataset
from maggotflow.evaluation import evaluate, format_table
from maggotflow.formats import ReadOptions
from maggotflow.formats.label import label_file_for_run, write_label_file
from maggotflow.isolation import isolate, read_isolated
from maggotflow.prediction import predict_files
from maggotflow.pretraining import PretrainConfig, pretrain
from maggotflow.segments import build_segments
from maggotflow.simulation import SimulationConfig, label_file_path, simulate
from maggotflow.training import TrainConfig, train_tagger

ENV = os.environ.get
N_TRAIN = int(ENV("BENCH_TRAIN_FILES", 24))
N_TEST = int(ENV("BENCH_TEST_FILES", 8))
SEED = int(ENV("BENCH_SEED", 2026))
FILTERS = tuple(int(x) for x in ENV("BENCH_FILTERS", "32,32,16,16,16,8").split(","))
PRETRAIN_STEPS = int(ENV("BENCH_PRETRAIN_STEPS", 600))
STAGE1_STEPS = int(ENV("BENCH_STAGE1_STEPS", 200))
STAGE2_STEPS = int(ENV("BENCH_STAGE2_STEPS", 800))
FIMTRACK = ReadOptions(framerate=30.0, pixelsize_um=100.0)  # the simulator's FIMTrack settings


def _baseline_labels(dataset: Dataset, runs, out_dir: Path, kind: str) -> list[Path]:
    """Write baseline predictions for `runs` as .label files; return their paths."""
    labels = list(dataset.labels)
    train = dataset.train_indices()
    truth = np.asarray(dataset.label)[train]
    if kind == "majority":
        majority = int(np.bincount(truth, minlength=len(labels)).argmax())
    else:
        feats = kinematic_features(dataset.read_segments(train), dataset.spec.frame_interval)
        tagger = ThresholdTagger(labels).fit(feats, truth)
    paths = []
    for i, run in enumerate(runs):
        per_larva = {}
        for track in run.tracks:
            if kind == "majority":
                pred = np.full(track.n_steps, majority)
            else:
                pred = tagger.predict(kinematic_features(build_segments(track, dataset.spec), dataset.spec.frame_interval))
            per_larva[track.id] = [(labels[j],) for j in pred]
        path = out_dir / kind / f"{i}.label"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_label_file(path, label_file_for_run(run, names=labels, labels=per_larva))
        paths.append(path)
    return paths


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = simulate(root / "data", N_TRAIN + N_TEST, seed=SEED, config=SimulationConfig())
        iso = []
        for i, path in enumerate(files):
            out = root / "iso" / f"{i}.h5"
            isolate(path, out, label_file_path(path), FIMTRACK)
            iso.append(out)
        train_iso, test_iso = iso[:N_TRAIN], iso[N_TRAIN:]
        refs = [label_file_path(p) for p in files[N_TRAIN:]]
        t_data = time.perf_counter() - t0
        print(f"  simulated and isolated {len(files)} files in {t_data:.0f} s", flush=True)
        quiet = lambda *_: None  # noqa: E731
        t0 = time.perf_counter()
        pretrain(train_iso, None, root / "pretrained",
                 PretrainConfig(steps=PRETRAIN_STEPS, filters=FILTERS, seed=SEED, device="cpu"), log=quiet)
        t_pre = time.perf_counter() - t0
        print(f"  pretrained {PRETRAIN_STEPS} steps in {t_pre:.0f} s", flush=True)
        t0 = time.perf_counter()
        build_dataset(train_iso, root / "dataset.h5", balancing="auto", seed=SEED)
        train_tagger(root / "dataset.h5", root / "tagger", root / "pretrained",
                     TrainConfig(stage1_steps=STAGE1_STEPS, stage2_steps=STAGE2_STEPS, seed=SEED, device="cpu"),
                     log=quiet)
        t_train = time.perf_counter() - t0
        print(f"  dataset + fine-tuning {STAGE1_STEPS} + {STAGE2_STEPS} steps in {t_train:.0f} s", flush=True)
        t0 = time.perf_counter()
        predicted = predict_files(root / "tagger", test_iso, out_paths=[root / "pred" / f"{i}.label" for i in range(N_TEST)], device="cpu")
        t_pred = time.perf_counter() - t0
        dataset = Dataset.load(root / "dataset.h5", in_memory=True)
        runs = [read_isolated(p) for p in test_iso]
        print(f"  {N_TRAIN} training + {N_TEST} held-out simulated files, 7 behaviours, seed {SEED}, CPU")
        print(f"  encoder filters {FILTERS}; pretraining {PRETRAIN_STEPS} steps, fine-tuning "
              f"{STAGE1_STEPS} + {STAGE2_STEPS} steps")
        print(f"  time: data {t_data:.0f} s, pretraining {t_pre:.0f} s, dataset + training {t_train:.0f} s, "
              f"prediction {t_pred:.0f} s")
        results = {"tagger": evaluate(list(zip(predicted, refs)), labels=list(dataset.labels))}
        for kind in ("majority", "kinematic thresholds"):
            paths = _baseline_labels(dataset, runs, root, kind.split()[0])
            results[kind] = evaluate(list(zip(paths, refs)), labels=list(dataset.labels))
        print("\n  tagger on held-out files:")
        print("\n".join("    " + line for line in format_table(results["tagger"]).splitlines()))
        print("\n  macro-F1 on the same held-out files:")
        for name, report in results.items():
            print(f"    {name:<22} {report.macro_f1:.3f}")
        print("\n  per-behaviour F1:   " + "  ".join(f"{n[:10]:>10}" for n in dataset.labels))
        for name, report in results.items():
            f1 = [report.per_label[n]["f1"] for n in dataset.labels]
            print(f"    {name:<16}" + "  ".join(f"{v:>10.3f}" for v in f1))
