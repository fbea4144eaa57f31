"""Held-out accuracy in and out of domain: train on one simulator regime, test on three.

The simulator's regimes (`maggotflow.simulation.REGIMES`) differ as two labs, trackers or
strains would: body model (spine points, where and how stiffly the body bends, peristaltic
length change), crawl speed and stride frequency, head-sweep amplitude, larva size, frame
rate, tracker noise and bout statistics. They were fixed before any model was measured on
them and are a robustness test, not a target: never tune them to the tagger.

What runs (CPU, the demo's budget unless BENCH_BUDGET says otherwise):
- data: BENCH_TRAIN_FILES (24) training + BENCH_TEST_FILES (8) held-out files of the
  training regime (BENCH_TRAIN_REGIME, A), and BENCH_TEST_FILES held-out files of every
  other regime of BENCH_TEST_REGIMES (A,B,C), 7 behaviours, all three track formats; data
  seed BENCH_DATA_SEED (2026; the other regimes use the next seeds);
- per seed of BENCH_SEEDS (0,1,2) and per tagger configuration of BENCH_CONFIGS: pretraining
  on the training files, dataset (its validation split is drawn with the same seed),
  two-stage fine-tuning, then scoring on the held-out files of each regime. Test files are
  never seen in pretraining, training, calibration or checkpoint choice;
- each trained tagger is scored with three decision rules taken from the same logits:
  `argmax` (no calibration), `calibrated` (the fitted logit offsets) and `as trained` (the
  decision stored in the tagger: offsets + the decoder that validation chose);
- baselines, on the same files: majority class, the kinematic-threshold cascade and
  gradient boosting on 36 windowed kinematic features (`benchmarks.baselines`), boosting
  with each seed; all fitted on the training split of the tagger's dataset;
- an end-to-end check: for the first configuration and seed, `predict_files` + `evaluate`
  on the training regime's held-out files must give the in-memory `as trained` figure.

Configurations (BENCH_CONFIGS, comma-separated names of CONFIGS below): `default` is
what the workflow trains by default; `balancing none`, `no decision fitting`, `default
without augmentation` and `full augmentation` change one thing of it; `previous default`
is the MaggotUBA recipe without post-rule and the `previous + ...` ones the steps from it
to the default.

Prints macro-F1 (over the behaviours with reference support, `maggotflow.metrics`) as
the median [min-max] over seeds for every model and test regime, per-behaviour F1
(medians), and the targets of docs/benchmarks.md. BENCH_JOBS (2) seeds/configurations run in parallel
processes of one torch thread each; BENCH_OUT writes every figure as JSON; BENCH_BASELINES=0
leaves the baselines out (quicker tagger experiments); BENCH_SPLIT=1 runs every
configuration in its own job (configurations otherwise share one pretraining per seed).

Budget knobs: BENCH_BUDGET (1: pretraining 600 steps, fine-tuning 200 + 800, as the demo;
4 multiplies all three), BENCH_FILTERS (32,32,16,16,16,8).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ENV = os.environ.get
SEEDS = [int(s) for s in ENV("BENCH_SEEDS", "0,1,2").split(",")]
TRAIN_REGIME = ENV("BENCH_TRAIN_REGIME", "A")
TEST_REGIMES = ENV("BENCH_TEST_REGIMES", "A,B,C").split(",")
N_TRAIN = int(ENV("BENCH_TRAIN_FILES", 24))
N_TEST = int(ENV("BENCH_TEST_FILES", 8))
DATA_SEED = int(ENV("BENCH_DATA_SEED", 2026))
BUDGET = float(ENV("BENCH_BUDGET", 1))
FILTERS = tuple(int(x) for x in ENV("BENCH_FILTERS", "32,32,16,16,16,8").split(","))
PRETRAIN_STEPS = int(600 * BUDGET)
STAGE1_STEPS, STAGE2_STEPS = int(200 * BUDGET), int(800 * BUDGET)
JOBS = int(ENV("BENCH_JOBS", 2))
OUT = ENV("BENCH_OUT")
BASELINES = ENV("BENCH_BASELINES", "1") != "0"  # 0: taggers only (quicker experiments)
SPLIT = ENV("BENCH_SPLIT", "0") == "1"  # 1: every configuration pretrains in its own job

# name -> what differs from the defaults: dataset balancing, pretrain/train settings.
# The MaggotUBA recipe without post-rule, and with decision fitting.
PREVIOUS = {"kinematic_features": False, "layers": (), "lr_stage1": 1e-3, "lr_stage2": 1e-4,
            "lr_schedule": "constant", "augment": "none", "calibrate": False, "decoding": "argmax"}
DECIDED = dict(PREVIOUS, calibrate=True, decoding="auto")
FAST = dict(DECIDED, lr_stage1=3e-3, lr_stage2=1e-3, lr_schedule="cosine")
CONFIGS: dict[str, dict] = {
    "default": {},
    # the network alone, the boosting kind alone, and the default validating every 100 steps
    # on the whole validation split
    "network only": {"train": {"candidates": ("network",)}},
    "boosting": {"train": {"candidates": ("boosting",)}},
    "validation on all": {"train": {"val_samples": 0}},
    "balancing none": {"balancing": "none"},
    "no decision fitting": {"train": {"calibrate": False, "decoding": "argmax"}},
    "default without augmentation": {"train": {"augment": "none"}},
    "full augmentation": {"pretrain": {"augment": "full"}, "train": {"augment": "full"}},
    # the steps from the previous recipe to the default (docs/benchmarks.md)
    "previous default": {"train": PREVIOUS},
    "previous + decision": {"train": DECIDED},
    "previous + decision, full augmentation": {"pretrain": {"augment": "full"}, "train": dict(DECIDED, augment="full")},
    "previous + decision, kinematic": {"train": dict(DECIDED, kinematic_features=True)},
    "previous + decision, fast": {"train": FAST},
}
CONFIG_NAMES = [c.strip() for c in ENV("BENCH_CONFIGS", "default,network only,boosting").split(",")]
DECISIONS = ("argmax", "calibrated", "as trained")


def _fimtrack():
    from maggotflow.formats import ReadOptions
    from maggotflow.simulation import FIMTRACK_FRAME_RATE_HZ, FIMTRACK_PIXELSIZE_UM

    return ReadOptions(framerate=FIMTRACK_FRAME_RATE_HZ, pixelsize_um=FIMTRACK_PIXELSIZE_UM)


def make_data(root: Path) -> dict:
    """Simulate and isolate every regime's files; return {"train": [...], "test": {regime: [...]}}."""
    from maggotflow.isolation import isolate
    from maggotflow.simulation import label_file_path, regime_config, simulate

    out = {"train": [], "test": {}}
    regimes = [TRAIN_REGIME] + [r for r in TEST_REGIMES if r != TRAIN_REGIME]
    for k, regime in enumerate(regimes):
        n = N_TRAIN + N_TEST if regime == TRAIN_REGIME else N_TEST
        files = simulate(root / "data" / regime, n, seed=DATA_SEED + k, config=regime_config(regime))
        iso = []
        for i, path in enumerate(files):
            target = root / "iso" / regime / f"{i}.h5"
            isolate(path, target, label_file_path(path), _fimtrack())
            iso.append(str(target))
        if regime == TRAIN_REGIME:
            out["train"], iso = iso[:N_TRAIN], iso[N_TRAIN:]
        out["test"][regime] = iso
    return out


def larva_set(paths: list[str], spec, labels: list[str]) -> list[tuple]:
    """Per larva of the files: (segments, truth class per step, times)."""
    from maggotflow.isolation import read_isolated
    from maggotflow.segments import build_segments, larva_length

    index = {n: i for i, n in enumerate(labels)}
    larvae = []
    for path in paths:
        for track in read_isolated(path).tracks:
            length = larva_length(track)
            if not np.isfinite(length) or length <= 0:
                continue
            truth = np.array([index.get(step[0], -1) if step else -1 for step in track.labels])
            larvae.append((build_segments(track, spec, length=length), truth, track.t))
    return larvae


def scores(larvae: list[tuple], predicted: list[np.ndarray], k: int) -> tuple[float, list[float]]:
    from maggotflow.metrics import confusion_matrix, macro_f1, per_class_scores

    truth = np.concatenate([lv[1] for lv in larvae])
    pred = np.concatenate(predicted)
    keep = truth >= 0
    cm = confusion_matrix(truth[keep], pred[keep], k)
    return macro_f1(cm), per_class_scores(cm).f1.tolist()


def larva_logits(instance, segments: np.ndarray) -> np.ndarray:
    import torch

    tagger = instance.tagger()
    out = []
    with torch.inference_mode():
        for i in range(0, segments.shape[0], 1024):
            out.append(tagger(torch.from_numpy(segments[i:i + 1024])).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(instance.labels)), np.float32)


def run_taggers(task: dict) -> list[dict]:
    """One seed and the configurations sharing one pretraining: train and score them."""
    import torch

    torch.set_num_threads(1)
    from maggotflow.dataset import build_dataset
    from maggotflow.decoding import Decision
    from maggotflow.instance import ModelInstance
    from maggotflow.pretraining import PretrainConfig, pretrain
    from maggotflow.training import TrainConfig, train_tagger

    seed, root, data = task["seed"], Path(task["root"]), task["data"]
    quiet = lambda *_: None  # noqa: E731
    t0 = time.perf_counter()
    work = root / f"s{seed}-{task['key']}"
    pre = CONFIGS[task["configs"][0]].get("pretrain", {})
    pretrain([Path(p) for p in data["train"]], None, work / "pretrained",
             PretrainConfig(steps=PRETRAIN_STEPS, filters=FILTERS, seed=seed, device="cpu", **pre), log=quiet)
    t_pre = time.perf_counter() - t0
    results, tests = [], {}
    for name in task["configs"]:
        cfg = CONFIGS[name]
        t1 = time.perf_counter()
        folder = work / name.replace(" ", "_")
        build_dataset(data["train"], folder / "dataset.h5", balancing=cfg.get("balancing", "auto"), seed=seed).close()
        instance = train_tagger(folder / "dataset.h5", folder / "tagger", work / "pretrained",
                                TrainConfig(stage1_steps=STAGE1_STEPS, stage2_steps=STAGE2_STEPS, seed=seed,
                                            device="cpu", **cfg.get("train", {})), log=quiet)
        instance = ModelInstance.load(folder / "tagger")
        labels, k = instance.labels, len(instance.labels)
        provenance = instance.provenance
        results.append({"choice": True, "seed": seed, "config": name, "chosen": provenance.get("chosen"),
                        "candidates": provenance.get("candidates"), "epochs": provenance.get("epochs"),
                        "validation_seconds": provenance.get("validation_seconds"),
                        "seconds": provenance.get("seconds")})
        decisions = {"argmax": Decision.identity(k), "calibrated": Decision(instance.decision.offsets),
                     "as trained": instance.decision}
        for regime, paths in data["test"].items():
            if regime not in tests:
                tests[regime] = larva_set(paths, instance.segment_spec, labels)
            larvae = tests[regime]
            logits = [larva_logits(instance, lv[0]) for lv in larvae]
            for dname, decision in decisions.items():
                predicted = decision.decode_many(logits, [lv[2] for lv in larvae])
                f1, per = scores(larvae, predicted, k)
                results.append({"model": f"maggotflow {name}, {dname}", "config": name, "decision": dname,
                                "seed": seed, "regime": regime, "macro_f1": f1, "f1": per, "labels": labels,
                                "decoder": instance.decision.decoder, "strength": instance.decision.strength})
        if task.get("end_to_end") and name == task["configs"][0]:
            results.append(_end_to_end(folder / "tagger", data["test"][TRAIN_REGIME], labels, seed, name))
        results.append({"timing": True, "seed": seed, "config": name, "pretrain_s": t_pre,
                        "train_and_score_s": time.perf_counter() - t1})
    return results


def _end_to_end(tagger: Path, paths: list[str], labels: list[str], seed: int, name: str) -> dict:
    """predict_files + evaluate on the held-out files (the path users take)."""
    from maggotflow.evaluation import evaluate
    from maggotflow.prediction import predict_files

    out = [tagger.parent / "pred" / f"{i}.label" for i in range(len(paths))]
    predict_files(tagger, [Path(p) for p in paths], out_paths=out, device="cpu")
    refs = [_reference_label(p) for p in paths]
    report = evaluate(list(zip(out, refs)), labels=labels)
    return {"end_to_end": True, "seed": seed, "config": name, "macro_f1": report.macro_f1}


def _reference_label(intermediate: str) -> Path:
    """The simulator's .label file of the track file an intermediate was made from."""
    import h5py

    from maggotflow.simulation import label_file_path

    with h5py.File(intermediate, "r") as f:
        source = f.attrs["source_path"]
    return label_file_path(Path(source))


def run_baselines(task: dict) -> list[dict]:
    """Majority, thresholds (first seed only: deterministic) and gradient boosting (per seed)."""
    from benchmarks.baselines import BoostingTagger, ThresholdTagger, kinematic_features
    from maggotflow.dataset import Dataset, build_dataset
    from maggotflow.kinematics import window_features

    seed, root, data = task["seed"], Path(task["root"]), task["data"]
    t0 = time.perf_counter()
    path = root / f"baselines-s{seed}" / "dataset.h5"
    build_dataset(data["train"], path, balancing="none", seed=seed).close()
    ds = Dataset.load(path, in_memory=True)
    labels, k, spec = list(ds.labels), len(ds.labels), ds.spec
    train = ds.train_indices()
    x, truth = ds.read_segments(train), np.asarray(ds.label)[train]
    boosting = BoostingTagger().fit(window_features(x, spec.frame_interval), truth, seed=seed)
    thresholds = ThresholdTagger(labels).fit(kinematic_features(x, spec.frame_interval), truth)
    majority = int(np.bincount(truth, minlength=k).argmax())
    results = []
    for regime, paths in data["test"].items():
        larvae = larva_set(paths, spec, labels)
        models = {"gradient boosting": lambda s: boosting.predict(window_features(s, spec.frame_interval))}
        if task["first"]:
            models["majority"] = lambda s: np.full(s.shape[0], majority)
            models["kinematic thresholds"] = lambda s: thresholds.predict(kinematic_features(s, spec.frame_interval))
        for name, predict in models.items():
            f1, per = scores(larvae, [predict(lv[0]) for lv in larvae], k)
            results.append({"model": name, "seed": seed, "regime": regime, "macro_f1": f1, "f1": per,
                            "labels": labels})
    results.append({"timing": True, "seed": seed, "config": "baselines", "train_and_score_s": time.perf_counter() - t0})
    return results


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def _median(rows: list[dict], model: str, regime: str) -> float | None:
    values = [r["macro_f1"] for r in rows if r.get("model") == model and r.get("regime") == regime]
    return statistics.median(values) if values else None


def report(rows: list[dict]) -> None:
    scored = [r for r in rows if "model" in r]
    models = list(dict.fromkeys(r["model"] for r in scored))
    regimes = [TRAIN_REGIME] + [r for r in TEST_REGIMES if r != TRAIN_REGIME]
    print(f"\n  macro-F1 on held-out files, trained on regime {TRAIN_REGIME}; median [min-max] over seeds "
          f"{','.join(map(str, SEEDS))}")
    print(f"    {'model':<44}" + "".join(f"{TRAIN_REGIME + '->' + r:>22}" for r in regimes))
    for model in models:
        cells = []
        for regime in regimes:
            values = [r["macro_f1"] for r in scored if r["model"] == model and r["regime"] == regime]
            cells.append(_summary(values) if values else "-")
        print(f"    {model:<44}" + "".join(f"{c:>22}" for c in cells))
    labels = scored[0]["labels"]
    for regime in regimes:
        print(f"\n  per-behaviour F1, test regime {regime} (median over seeds)")
        print(f"    {'model':<44}" + "".join(f"{n[:11]:>12}" for n in labels))
        for model in models:
            per = [r["f1"] for r in scored if r["model"] == model and r["regime"] == regime]
            if per and (not model.startswith("maggotflow") or model.endswith("as trained")):
                med = np.median(np.array(per), axis=0)
                print(f"    {model:<44}" + "".join(f"{v:>12.3f}" for v in med))
    decoders = [(r["config"], r["seed"], r["decoder"], r["strength"]) for r in scored
                if r.get("decision") == "as trained" and r["regime"] == TRAIN_REGIME]
    print("\n  decoder chosen on validation: " + "; ".join(
        f"{c} seed {s}: {d}" + (f" (strength {g:g})" if d == "hmm" else "") for c, s, d, g in decoders))
    for r in rows:
        if r.get("end_to_end"):
            inmem = [x["macro_f1"] for x in scored if x.get("config") == r["config"] and x["seed"] == r["seed"]
                     and x.get("decision") == "as trained" and x["regime"] == TRAIN_REGIME]
            print(f"  end-to-end check ({r['config']}, seed {r['seed']}): predict_files + evaluate "
                  f"macro-F1 {r['macro_f1']:.3f}, in memory {inmem[0]:.3f}")
    for r in rows:
        if r.get("choice") and r.get("candidates"):
            print(f"  {r['config']} seed {r['seed']}: kept {r['chosen']}; validation macro-F1 (training time) "
                  + ", ".join(f"{n} {c['val_macro_f1']:.3f} ({c['seconds']:.0f} s)" for n, c in r["candidates"].items())
                  + (f"; {r['epochs']:.2f} epochs" if r.get("epochs") is not None else "")
                  + (f"; validation {r['validation_seconds']:.0f} s of {r['seconds']:.0f} s of network training"
                     if r.get("validation_seconds") is not None else ""))
    timing = [r for r in rows if r.get("timing")]
    print("  time per job and configuration (pretraining is shared by the configurations of a job): " + "; ".join(
        f"{r['config']} s{r['seed']} {r.get('pretrain_s', 0):.0f} s pretraining + {r['train_and_score_s']:.0f} s"
        for r in timing))
    default = "maggotflow default, as trained"
    if default in models:
        print("\n  targets (the tagger against gradient boosting), medians:")
        own, gb = _median(scored, default, TRAIN_REGIME), _median(scored, "gradient boosting", TRAIN_REGIME)
        kind = _median(scored, "maggotflow boosting, as trained", TRAIN_REGIME)
        if gb is not None:
            print(f"    {TRAIN_REGIME}->{TRAIN_REGIME}: default {own:.3f} vs gradient boosting {gb:.3f} "
                  f"(target >= {gb - 0.005:.3f}: {'met' if own >= gb - 0.005 else 'MISSED'})")
        if kind is not None:
            print(f"    {TRAIN_REGIME}->{TRAIN_REGIME}: default {own:.3f} vs the boosting kind {kind:.3f} "
                  f"(target >= {kind - 0.005:.3f}: {'met' if own >= kind - 0.005 else 'MISSED'})")
        print("\n  targets (in-regime and across regimes), medians:")
        own = _median(scored, default, TRAIN_REGIME)
        print(f"    in-regime macro-F1 of the default tagger {own:.3f} (target >= 0.90)")
        for regime in regimes[1:]:
            ours, gb = _median(scored, default, regime), _median(scored, "gradient boosting", regime)
            if ours is not None and gb is not None:
                print(f"    {TRAIN_REGIME}->{regime}: {ours:.3f} vs gradient boosting {gb:.3f} "
                      f"(margin {ours - gb:+.3f}, target >= +0.05); {own - ours:.3f} below in-regime (target <= 0.08)")
        none = "maggotflow balancing none, as trained"
        if none in models:
            for regime in regimes:
                a, b = _median(scored, default, regime), _median(scored, none, regime)
                print(f"    {TRAIN_REGIME}->{regime}: balancing auto {a:.3f} vs none {b:.3f} (target: auto >= none)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = make_data(root)
        print(f"  simulated and isolated {N_TRAIN} + {N_TEST} files of regime {TRAIN_REGIME} and {N_TEST} of each "
              f"of {', '.join(r for r in TEST_REGIMES if r != TRAIN_REGIME)} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        print(f"  budget x{BUDGET:g}: pretraining {PRETRAIN_STEPS} steps, fine-tuning {STAGE1_STEPS} + "
              f"{STAGE2_STEPS} steps, filters {FILTERS}; seeds {SEEDS}; configurations {CONFIG_NAMES}; "
              f"{JOBS} parallel jobs", flush=True)
        groups: dict[str, list[str]] = {}
        for name in CONFIG_NAMES:
            if name not in CONFIGS:
                raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
            key = json.dumps(CONFIGS[name].get("pretrain", {}), sort_keys=True)
            if SPLIT:  # one job per configuration (each pretrains: same seed, same encoder)
                key = name
            groups.setdefault(key, []).append(name)
        tasks = []
        for seed in SEEDS:
            if BASELINES:
                tasks.append((run_baselines, {"seed": seed, "root": str(root), "data": data,
                                              "first": seed == SEEDS[0]}))
            for i, names in enumerate(groups.values()):
                tasks.append((run_taggers, {"seed": seed, "root": str(root), "data": data, "key": f"p{i}",
                                            "configs": names, "end_to_end": seed == SEEDS[0] and i == 0}))
        rows: list[dict] = []
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one thread each
        with ProcessPoolExecutor(max_workers=JOBS, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(fn, task) for fn, task in tasks]
            for future in futures:
                rows.extend(future.result())
                print(f"  ... {sum(f.done() for f in futures)} of {len(futures)} jobs done "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
        report(rows)
        print(f"  total {time.perf_counter() - t0:.0f} s")
        if OUT:
            Path(OUT).write_text(json.dumps(rows, indent=1))
