"""Tagger presets (config/taggers/*.yaml): prediction cost and held-out macro-F1.

1. Prediction cost: for every preset, a model of the preset's real architecture (default
   encoder filters, the preset's window(s), latent size, classifier; the 20221228 ensemble
   with all its 50 members; random weights, since cost does not depend on them) tags the
   same realistic file on CPU (BENCH_PRESET_LARVAE larvae x BENCH_PRESET_SECONDS s at
   30 fps); printed as segments/s (median over BENCH_PRESET_ROUNDS rounds in which every
   preset is timed in turn; the ensemble once) and cost relative to `default`.
2. Accuracy: every preset is trained and evaluated by the workflow itself
   (`snakemake --config tagger=<name>`) in one project on simulated data (24 training + 8
   held-out files, 7 behaviours; the 6-behaviour presets map them with their synonyms), at
   a stated small CPU budget that overrides the presets' budgets (BENCH_PRESET_PRETRAIN,
   BENCH_PRESET_STAGE1/2 steps, encoder filters 32,32,16,16,16,8, 20 forest trees); the
   ensemble is cut to BENCH_PRESET_MEMBERS members per window for this part. Prints the
   held-out macro-F1 of each. Skip it with BENCH_PRESET_ACCURACY=0.
Torch runs on BENCH_THREADS threads (default 1; every workflow job of part 2 on 1).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from maggotflow.ensemble import Ensemble
from maggotflow.instance import ModelInstance
from maggotflow.kinematics import FEATURE_NAMES
from maggotflow.model import BoostedTrees, ClassifierConfig, EncoderConfig, ForestClassifier
from maggotflow.prediction import Predictor
from maggotflow.segments import SegmentSpec
from maggotflow.simulation import SimulationConfig, simulate

ENV = os.environ.get
REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "config" / "taggers").glob("*.yaml"))
LARVAE = int(ENV("BENCH_PRESET_LARVAE", 5))
SECONDS = float(ENV("BENCH_PRESET_SECONDS", 20))
PRETRAIN = int(ENV("BENCH_PRESET_PRETRAIN", 300))
STAGE1 = int(ENV("BENCH_PRESET_STAGE1", 100))
STAGE2 = int(ENV("BENCH_PRESET_STAGE2", 400))
MEMBERS = int(ENV("BENCH_PRESET_MEMBERS", 3))
ROUNDS = int(ENV("BENCH_PRESET_ROUNDS", 5))
SEVEN = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]


def load_preset(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / "taggers" / f"{name}.yaml").read_text())


def untrained_tagger(preset: dict, window: int) -> ModelInstance:
    """A tagger of the preset's architecture (random weights; a forest of random trees)."""
    segment = {"window": 20, "frame_interval": 0.1, "interpolate": True, **(preset.get("segment") or {})}
    segment["window"] = window
    from maggotflow.pretraining import PretrainConfig
    from maggotflow.training import TrainConfig

    spec = SegmentSpec(n_points=5, **segment)
    latent = (preset.get("pretrain") or {}).get("latent_dim", PretrainConfig().latent_dim)
    labels = preset.get("labels") or SEVEN
    encoder = EncoderConfig(window=window, latent_dim=latent)
    train = preset.get("train") or {}
    if list(train.get("candidates") or ()) == ["boosting"]:
        return untrained_boosting(spec, labels)
    if train.get("classifier", "dense") == "random_forest":
        trees, depth = train["forest"]["n_trees"], train["forest"]["max_depth"]
        nodes = 2 ** (depth + 1) - 1 if depth <= 12 else 4096  # real trees are far from full
        config = ClassifierConfig(latent_dim=latent, n_classes=len(labels), kind="random_forest",
                                  n_trees=trees, n_nodes=nodes, depth=depth)
        forest = ForestClassifier(config)
        g = torch.Generator().manual_seed(0)
        forest.feature.copy_(torch.randint(0, latent, forest.feature.shape, generator=g))
        forest.left.copy_(torch.randint(0, nodes, forest.left.shape, generator=g))
        forest.right.copy_(torch.randint(0, nodes, forest.right.shape, generator=g))
        return ModelInstance("tagger", spec, encoder, classifier_config=config, classifier=forest, labels=labels)
    layers = tuple(train.get("layers", TrainConfig().layers) or ())
    config = ClassifierConfig(latent_dim=latent, n_classes=len(labels), layers=layers,
                              features=len(FEATURE_NAMES) if train.get("kinematic_features", True) else 0)
    return ModelInstance("tagger", spec, encoder, classifier_config=config, labels=labels,
                         post_rule=train.get("post_rule"))


def untrained_boosting(spec: SegmentSpec, labels: list[str], rounds: int = 250, leaves: int = 31,
                       depth: int = 10) -> ModelInstance:
    """Boosted trees of the `boosting` preset's size (`rounds` x classes trees of `leaves`
    leaves walked `depth` levels: the defaults' upper end), random splits, no encoder run."""
    nodes = 2 * leaves - 1
    config = ClassifierConfig(latent_dim=1, n_classes=len(labels), kind="boosting", n_trees=rounds * len(labels),
                              n_nodes=nodes, depth=depth, features=len(FEATURE_NAMES), use_latent=False)
    trees = BoostedTrees(config)
    g = torch.Generator().manual_seed(0)
    trees.feature.copy_(torch.randint(0, len(FEATURE_NAMES), trees.feature.shape, generator=g))
    trees.left.copy_(torch.randint(0, nodes, trees.left.shape, generator=g))
    trees.right.copy_(torch.randint(0, nodes, trees.right.shape, generator=g))
    trees.tree_class.copy_(torch.arange(config.n_trees) % len(labels))
    placeholder = EncoderConfig(window=spec.window, n_points=spec.n_points, latent_dim=1, filters=(1,))
    return ModelInstance("tagger", spec, placeholder, classifier_config=config, classifier=trees, labels=labels)


def cost_table() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        track = simulate(Path(tmp), 1, seed=7, config=SimulationConfig(duration_s=SECONDS, larvae=(LARVAE, LARVAE),
                                                                       frame_rate_hz=(30.0, 30.0)))[0]
        from maggotflow.readers import read_input

        run = read_input(track)
        n = sum(t.n_steps for t in run.tracks)
        rates: dict[str, list[float]] = {}
        print(f"  prediction cost: one file, {len(run.tracks)} larvae, {n} time steps, CPU, "
              f"{torch.get_num_threads()} threads, default encoder filters; presets timed in turn "
              f"over {ROUNDS} rounds (median; the ensemble once), so load changes hit all alike")
        predictors = {}
        for name in PRESETS:
            preset = load_preset(name)
            torch.manual_seed(0)
            if preset.get("ensemble"):
                members = [untrained_tagger(preset, m["window"]) for m in preset["ensemble"]["members"]
                           for _ in range(m["count"])]
                model = Ensemble(members, post_rule=preset["train"].get("post_rule"))
            else:
                model = untrained_tagger(preset, (preset.get("segment") or {}).get("window", 20))
            predictors[name] = (Predictor(model, device="cpu"), bool(preset.get("ensemble")))
            if not preset.get("ensemble"):
                predictors[name][0].predict_run(run)  # warm-up
        for r in range(ROUNDS):
            for name, (predictor, is_ensemble) in predictors.items():
                if is_ensemble and r != ROUNDS // 2:
                    continue  # ~50x slower: timed once, in the middle round
                t0 = time.perf_counter()
                predictor.predict_run(run)
                rates.setdefault(name, []).append(n / (time.perf_counter() - t0))
        rates = {name: statistics.median(values) for name, values in rates.items()}
        base = rates.get("default", next(iter(rates.values())))
        for name, rate in rates.items():
            print(f"    {name:<12} {rate:>10,.0f} segments/s   cost x{base / rate:5.1f} of default")
    return rates


def accuracy_table() -> dict[str, float]:
    snakemake = Path(sys.executable).with_name("snakemake")
    overlay = {
        "inputs": {"track_dir": "data/train"}, "read": {"pixelsize_um": 100}, "device": "cpu",
        "evaluation": {"track_dir": "data/heldout"},
        "pretrain": {"steps": PRETRAIN, "filters": [32, 32, 16, 16, 16, 8]},
        "train": {"stage1_steps": STAGE1, "stage2_steps": STAGE2, "forest": {"n_trees": 20}},
        "predict": {"files_per_job": 8}, "report": {"ethograms": 0},
        "threads": {"dataset": 1, "pretrain": 1, "train": 1, "predict": 1},  # 1 torch thread per job: see docs/benchmarks.md
    }
    scores = {}
    print(f"\n  held-out macro-F1 (workflow, 24 training + 8 held-out simulated files; budget: pretraining "
          f"{PRETRAIN} steps, fine-tuning {STAGE1} + {STAGE2} steps, filters 32,32,16,16,16,8, 20 trees, "
          f"ensemble {MEMBERS} members per window):")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate(root / "data" / "train", 24, seed=11)
        simulate(root / "data" / "heldout", 8, seed=12)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}
        env["PATH"] = f"{snakemake.parent}{os.pathsep}{env.get('PATH', '')}"
        for name in PRESETS:
            preset = load_preset(name)
            config = dict(overlay)
            if preset.get("ensemble"):
                config["ensemble"] = {"members": [dict(m, count=MEMBERS) for m in preset["ensemble"]["members"]]}
            (root / "bench.yaml").write_text(yaml.safe_dump(config))
            cmd = [str(snakemake), "--config", f"tagger={name}", "-s", str(REPO / "Snakefile"),
                   "--configfile", "bench.yaml", "--cores", "2"]
            result = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0:
                print(f"    {name:<12} FAILED:\n{result.stdout[-2000:]}")
                continue
            metrics = json.loads((root / "results/evaluation/metrics.json").read_text())
            scores[name] = metrics["macro_f1"]
            labels = metrics.get("labels") or []
            print(f"    {name:<12} macro-F1 {metrics['macro_f1']:.3f}   ({len(labels) or '?'} labels)")
    return scores


def main() -> None:
    # One torch thread by default: on shared cores more threads wait for each other and make
    # the figures swing by several x (docs/benchmarks.md); BENCH_THREADS overrides.
    torch.set_num_threads(int(ENV("BENCH_THREADS", 1)))
    cost_table()
    if ENV("BENCH_PRESET_ACCURACY", "1") != "0":
        accuracy_table()


if __name__ == "__main__":
    main()
