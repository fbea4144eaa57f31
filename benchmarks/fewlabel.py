"""Few-label adaptation: a tagger trained on regime A, then 1, 5, 20 labelled larvae of B or C.

The realistic remedy for a new lab or tracker is to label a little of its own data. This
benchmark measures what that buys on the simulator (`maggotflow.simulation.REGIMES`), as
macro-F1 against the number of labelled larvae of the target regime.

What runs (CPU, one torch thread per job, the demo's budget unless BENCH_BUDGET says otherwise):
- data (data seed BENCH_DATA_SEED, 2026): BENCH_TRAIN_FILES (24) training + BENCH_TEST_FILES
  (8) held-out files of regime A, and BENCH_TEST_FILES held-out files of each target regime
  of BENCH_TARGET_REGIMES (B,C): the same files as `benchmarks.accuracy` (same seeds); plus,
  per target regime, a pool of BENCH_POOL_FILES (6) labelled files simulated with other seeds
  (data seed + 100 + regime's rank) from which the labelled larvae are drawn. Test files are
  never used in pretraining, training, calibration or the choice of a candidate;
- base, per seed of BENCH_SEEDS (0,1,2): pretraining on A's training files, the A dataset
  (validation split drawn with the seed) and the default tagger (`train_tagger`, default
  TrainConfig: it fits the network, boosting and combined candidates and keeps the best on
  validation), and the boosting kind (`candidates=("boosting",)`) on the same dataset.
  These are the 0-larvae column;
- adaptation, per seed, target regime and N of BENCH_LARVAE (1,5,20): N larvae drawn
  (seeded: a permutation of the pool's eligible larvae, the first N, so the 1 is among the 5
  and the 5 among the 20) among the pool's larvae with at least BENCH_MIN_LABELLED_S (30 s)
  of labelled time; an intermediate holding only them; its dataset (`build_dataset`,
  balancing auto) splits validation by larva (20 %, at least one larva). A single larva is
  cut into time blocks of about BENCH_BLOCK_S (15 s) that stand as larvae, so that one block
  validates and the others train (no window crosses a block's edge). When no validation
  unit can leave every class in training, the dataset has no validation ("none" in the
  table of splits): the final state is kept, with no decision fitting;
- three arms (BENCH_ARMS) train on that dataset, at the same budget:
  `fine-tune`: `train_tagger(..., pretrained=<the A tagger>)` (what `tagging-backend
  finetune` does: the A tagger's encoder, and its classifier when labels and shape match,
  are the start; candidates as by default, the kept one is reported); `from scratch`:
  `pretrained=None` (a random encoder, the demo's filters); `boosting`: the boosting kind.
  Optional arms: `fine-tune, network only` and `from scratch, network only` (candidates
  network only), `fine-tune from the encoder` (A's pretrained encoder, not its tagger);
- scoring on the target regime's held-out files: per-larva logits, the tagger's own
  decision (`decode_many`), macro-F1 over the behaviours with reference support
  (`maggotflow.metrics`), as `benchmarks.accuracy` does. A tagger trained on larvae that
  never show a behaviour does not know it: that behaviour then scores F1 0.

Prints per target regime a table (rows: arm; columns: labelled larvae, 0 = the A tagger as
it is), macro-F1 median [min-max] over seeds, with the base's A->A figure; per-behaviour F1
(medians) at 0 larvae and at the largest N; the candidate kept per arm; the behaviours the
few larvae show; the validation splits; the time per job. BENCH_JOBS (2) jobs run in
parallel processes of one torch thread each; BENCH_OUT writes every row as JSON.

Budget knobs: BENCH_BUDGET (1: pretraining 600 steps, fine-tuning 200 + 800, as the demo;
a fraction for quick checks), BENCH_ADAPT_BUDGET (the adaptation's factor, BENCH_BUDGET's
by default: 0.25 gives 50 + 200 steps, which on 1-20 larvae is 1 to 20+ epochs),
BENCH_FILTERS (32,32,16,16,16,8).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.accuracy import larva_logits, larva_set, scores

ENV = os.environ.get
SEEDS = [int(s) for s in ENV("BENCH_SEEDS", "0,1,2").split(",")]
TRAIN_REGIME = "A"
TARGET_REGIMES = ENV("BENCH_TARGET_REGIMES", "B,C").split(",")
LARVAE = [int(n) for n in ENV("BENCH_LARVAE", "1,5,20").split(",")]
N_TRAIN = int(ENV("BENCH_TRAIN_FILES", 24))
N_TEST = int(ENV("BENCH_TEST_FILES", 8))
N_POOL = int(ENV("BENCH_POOL_FILES", 6))
MIN_LABELLED_S = float(ENV("BENCH_MIN_LABELLED_S", 30))
BLOCK_S = float(ENV("BENCH_BLOCK_S", 15))
DATA_SEED = int(ENV("BENCH_DATA_SEED", 2026))
POOL_SEED_OFFSET = 100  # pool files: data seed + 100 + regime's rank (the test files use data seed + rank)
BUDGET = float(ENV("BENCH_BUDGET", 1))
FILTERS = tuple(int(x) for x in ENV("BENCH_FILTERS", "32,32,16,16,16,8").split(","))
PRETRAIN_STEPS = max(1, int(600 * BUDGET))
STAGE1_STEPS, STAGE2_STEPS = max(1, int(200 * BUDGET)), max(1, int(800 * BUDGET))
# Adaptation to the few larvae (every arm): its own budget factor, BENCH_BUDGET's by default.
ADAPT_BUDGET = float(ENV("BENCH_ADAPT_BUDGET", BUDGET))
ADAPT_STEPS = max(1, int(200 * ADAPT_BUDGET)), max(1, int(800 * ADAPT_BUDGET))
JOBS = int(ENV("BENCH_JOBS", 2))
OUT = ENV("BENCH_OUT")
VALIDATION_FRACTION = 0.2  # the dataset's default: one larva in five validates

# arm -> where its training starts ("tagger": the A tagger, "encoder": A's pretrained
# encoder, None: random) and what differs from the default TrainConfig.
ARMS: dict[str, dict] = {
    "fine-tune": {"start": "tagger", "train": {}},
    "from scratch": {"start": None, "train": {}},
    "boosting": {"start": None, "train": {"candidates": ("boosting",)}},
    "fine-tune, network only": {"start": "tagger", "train": {"candidates": ("network",)}},
    "from scratch, network only": {"start": None, "train": {"candidates": ("network",)}},
    "fine-tune from the encoder": {"start": "encoder", "train": {}},
}
ARM_NAMES = [a.strip() for a in ENV("BENCH_ARMS", "fine-tune,from scratch,boosting").split(",")]
# The 0-larvae column: which base model stands for an arm (None: the arm needs labelled larvae).
BASE_OF_ARM = {"fine-tune": "tagger", "fine-tune, network only": "tagger", "fine-tune from the encoder": "tagger",
               "boosting": "boosting", "from scratch": None, "from scratch, network only": None}


# ---------------------------------------------------------------------------- data
def read_options():
    """How the simulated FIMTrack csv files are read (frame rate, pixel size)."""
    from maggotflow.formats import ReadOptions
    from maggotflow.simulation import FIMTRACK_FRAME_RATE_HZ, FIMTRACK_PIXELSIZE_UM

    return ReadOptions(framerate=FIMTRACK_FRAME_RATE_HZ, pixelsize_um=FIMTRACK_PIXELSIZE_UM)


def simulate_isolated(root: Path, name: str, regime: str, n_files: int, seed: int) -> list[str]:
    """Simulate `n_files` of `regime` (data seed `seed`) and isolate them with their labels."""
    from maggotflow.isolation import isolate
    from maggotflow.simulation import label_file_path, regime_config, simulate

    files = simulate(root / "data" / name, n_files, seed=seed, config=regime_config(regime))
    out = []
    for i, path in enumerate(files):
        target = root / "iso" / name / f"{i}.h5"
        isolate(path, target, label_file_path(path), read_options())
        out.append(str(target))
    return out


def make_data(root: Path) -> dict:
    """{"train": A's training files, "test": {regime: held-out files}, "pool": {regime: files}}.

    A's files and the target regimes' test files are those of `benchmarks.accuracy` (same
    seeds: regime rank k in A,B,C uses data seed + k); the pools use data seed + 100 + k.
    """
    ranks = {r: k for k, r in enumerate(["A", "B", "C"])}
    a = simulate_isolated(root, "A", TRAIN_REGIME, N_TRAIN + N_TEST, DATA_SEED)
    data = {"train": a[:N_TRAIN], "test": {TRAIN_REGIME: a[N_TRAIN:]}, "pool": {}}
    for regime in TARGET_REGIMES:
        k = ranks.get(regime, len(ranks))
        data["test"][regime] = simulate_isolated(root, f"{regime}-test", regime, N_TEST, DATA_SEED + k)
        data["pool"][regime] = simulate_isolated(root, f"{regime}-pool", regime, N_POOL,
                                                 DATA_SEED + POOL_SEED_OFFSET + k)
    return data


def labelled_seconds(track) -> float:
    """Labelled time of a larva (s): the summed frame intervals of its labelled steps."""
    if track.labels is None or track.t.size < 2:
        return 0.0
    dt = np.diff(track.t, append=track.t[-1])
    return float(sum(d for d, step in zip(dt, track.labels) if step))


def eligible_larvae(paths: Sequence[str], min_labelled_s: float) -> list[tuple[str, str]]:
    """(intermediate, larva id) of every larva with at least `min_labelled_s` labelled
    seconds: the larvae a lab would label (not the fragments a tracker loses)."""
    from maggotflow.isolation import read_isolated

    return [(str(path), track.id) for path in paths for track in read_isolated(path).tracks
            if labelled_seconds(track) >= min_labelled_s]


def choose_larvae(pool: Sequence[tuple[str, str]], n: int, seed: int, regime: str) -> list[tuple[str, str]]:
    """The first `n` larvae of a seeded permutation of `pool`: nested over n for one seed."""
    if n > len(pool):
        raise ValueError(f"{n} labelled larvae asked for but the pool of regime {regime} has {len(pool)} "
                         f"eligible ones: raise BENCH_POOL_FILES")
    rng = np.random.default_rng([seed, ord(regime[0]), 0xF1])
    order = rng.permutation(len(pool))
    return [pool[i] for i in order[:n]]


def time_blocks(track, block_s: float) -> list:
    """`track` cut into round(duration / block_s) (at least 1) consecutive blocks of equal
    duration, each a Track of its own with id '<id>-b<k>' (labels and outline kept)."""
    duration = float(track.t[-1] - track.t[0])
    n = max(1, int(round(duration / block_s)))
    edges = track.t[0] + duration * np.arange(1, n) / n
    cuts = np.searchsorted(track.t, edges)
    blocks = []
    for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, track.t.size])):
        if b - a < 2:
            continue
        blocks.append(dataclasses.replace(
            track, id=f"{track.id}-b{k}", t=track.t[a:b], spine=track.spine[a:b],
            outline=None if track.outline is None else track.outline[a:b],
            labels=None if track.labels is None else track.labels[a:b]))
    return blocks


def write_adaptation_set(larvae: Sequence[tuple[str, str]], out_path: Path, block_s: float | None) -> list[str]:
    """One intermediate holding only `larvae` ((intermediate, larva id), all of one regime);
    with `block_s`, each larva is cut into time blocks (`time_blocks`) that the dataset then
    splits like larvae. Larva ids become '<file rank>-<id>' (unique across files).
    Returns the behaviour names found on their labelled steps, in order of first appearance.
    """
    from maggotflow.isolation import read_isolated, write_isolated
    from maggotflow.tracks import Run

    runs: dict[str, object] = {}
    tracks, found = [], {}
    for path, larva in larvae:
        if path not in runs:
            runs[path] = read_isolated(path)
        track = next(t for t in runs[path].tracks if t.id == larva)
        track = dataclasses.replace(track, id=f"{list(runs).index(path)}-{track.id}")
        tracks += time_blocks(track, block_s) if block_s else [track]
        for step in track.labels or ():
            for name in step:
                found.setdefault(name, None)
    first = runs[larvae[0][0]]
    run = Run(metadata=dict(first.metadata, id="few-labelled-larvae"), tracks=tracks, source=first.source,
              format=first.format, sha1=first.sha1, read_options=first.read_options)
    write_isolated(run, out_path, label_source="few labelled larvae")
    return list(found)


def build_adaptation_dataset(intermediate: Path, out_path: Path, labels: list[str], seed: int) -> str:
    """The dataset of the few larvae (balancing auto), split by larva; without validation
    when no larva (block) can validate while every class keeps training samples.
    Returns the split: "larva" or "none"."""
    from maggotflow.dataset import build_dataset

    try:
        build_dataset([intermediate], out_path, labels=labels, validation_fraction=VALIDATION_FRACTION,
                      seed=seed).close()
        return "larva"
    except ValueError as err:
        if "no training sample" not in str(err):
            raise
    build_dataset([intermediate], out_path, labels=labels, validation_fraction=0.0, seed=seed).close()
    return "none"


# ---------------------------------------------------------------------------- scoring
def score(instance, larvae: list[tuple], reference: Sequence[str]) -> tuple[float, list[float]]:
    """Macro-F1 and per-behaviour F1 (in `reference` order) of `instance` on `larvae`, with
    its own decision rule; its classes are mapped to `reference` by name (a tagger that does
    not know a behaviour never predicts it)."""
    logits = [larva_logits(instance, lv[0]) for lv in larvae]
    predicted = instance.decision.decode_many(logits, [lv[2] for lv in larvae])
    to_reference = np.array([list(reference).index(n) for n in instance.labels])
    return scores(larvae, [to_reference[p] for p in predicted], len(reference))


def _train_config(seed: int, steps: tuple[int, int] = (STAGE1_STEPS, STAGE2_STEPS), **changes):
    from maggotflow.training import TrainConfig

    return TrainConfig(stage1_steps=steps[0], stage2_steps=steps[1], seed=seed, device="cpu",
                       filters=FILTERS, **changes)


def _choice(instance) -> dict:
    p = instance.provenance
    candidates = p.get("candidates") or {}
    return {"chosen": p.get("chosen"),
            "val_macro_f1": {n: c.get("val_macro_f1") for n, c in candidates.items()},
            "continued": p.get("classifier_continued")}


# ---------------------------------------------------------------------------- jobs
def run_base(task: dict) -> list[dict]:
    """One seed: pretraining, the A tagger and the A boosting kind, scored on every test regime."""
    import torch

    torch.set_num_threads(1)
    from maggotflow.dataset import build_dataset
    from maggotflow.instance import ModelInstance
    from maggotflow.pretraining import PretrainConfig, pretrain
    from maggotflow.training import train_tagger

    seed, data, work = task["seed"], task["data"], Path(task["work"])
    quiet = lambda *_: None  # noqa: E731
    t0 = time.perf_counter()
    pretrain([Path(p) for p in data["train"]], None, work / "pretrained",
             PretrainConfig(steps=PRETRAIN_STEPS, filters=FILTERS, seed=seed, device="cpu"), log=quiet)
    t_pre = time.perf_counter() - t0
    build_dataset(data["train"], work / "dataset.h5", seed=seed).close()
    train_tagger(work / "dataset.h5", work / "tagger", work / "pretrained", _train_config(seed), log=quiet)
    train_tagger(work / "dataset.h5", work / "boosting", None, _train_config(seed, candidates=("boosting",)),
                 log=quiet)
    tagger = ModelInstance.load(work / "tagger")
    tests = {regime: larva_set(paths, tagger.segment_spec, tagger.labels) for regime, paths in data["test"].items()}
    rows = []
    for name in ("tagger", "boosting"):
        instance = tagger if name == "tagger" else ModelInstance.load(work / name)
        for regime, larvae in tests.items():
            f1, per = score(instance, larvae, tagger.labels)
            rows.append({"base": name, "seed": seed, "regime": regime, "n": 0, "macro_f1": f1, "f1": per,
                         "labels": list(instance.labels), "reference": list(tagger.labels), **_choice(instance)})
    rows.append({"timing": True, "job": f"base s{seed}", "pretrain_s": t_pre, "seconds": time.perf_counter() - t0})
    return rows


def run_adaptation(task: dict) -> list[dict]:
    """One seed, target regime and N: the few larvae's dataset, every arm trained and scored."""
    import torch

    torch.set_num_threads(1)
    from maggotflow.instance import ModelInstance
    from maggotflow.training import train_tagger

    seed, regime, n, data = task["seed"], task["regime"], task["n"], task["data"]
    base, work = Path(task["base"]), Path(task["work"])
    quiet = lambda *_: None  # noqa: E731
    t0 = time.perf_counter()
    reference = list(ModelInstance.load(base / "tagger").labels)
    chosen = choose_larvae(eligible_larvae(data["pool"][regime], MIN_LABELLED_S), n, seed, regime)
    found = write_adaptation_set(chosen, work / "larvae.h5", BLOCK_S if n == 1 else None)
    labels = [name for name in reference if name in found]  # the A tagger's order: its classifier can continue
    split = build_adaptation_dataset(work / "larvae.h5", work / "dataset.h5", labels, seed)
    from maggotflow.dataset import Dataset

    with Dataset.load(work / "dataset.h5") as ds:
        sizes = {"train_segments": int(ds.train_indices().size), "val_segments": int(ds.val_indices().size),
                 "units": len(set(ds.larva_keys().tolist())), "val_units": len(set(ds.larva_keys()[ds.val_indices()].tolist()))}
    larvae = None
    rows = []
    for arm in ARM_NAMES:
        spec = ARMS[arm]
        start = {"tagger": base / "tagger", "encoder": base / "pretrained", None: None}[spec["start"]]
        t1 = time.perf_counter()
        train_tagger(work / "dataset.h5", work / arm.replace(" ", "_").replace(",", ""), start,
                     _train_config(seed, ADAPT_STEPS, **spec["train"]), log=quiet)
        instance = ModelInstance.load(work / arm.replace(" ", "_").replace(",", ""))
        train_s = time.perf_counter() - t1
        if larvae is None:
            larvae = larva_set(data["test"][regime], instance.segment_spec, reference)
        f1, per = score(instance, larvae, reference)
        rows.append({"arm": arm, "seed": seed, "regime": regime, "n": n, "macro_f1": f1, "f1": per,
                     "labels": list(instance.labels), "reference": reference, "split": split,
                     "larvae": [f"{Path(p).stem}/{i}" for p, i in chosen], **sizes, **_choice(instance),
                     "train_s": train_s})
    rows.append({"timing": True, "job": f"{regime} {n} s{seed}", "seconds": time.perf_counter() - t0})
    return rows


# ---------------------------------------------------------------------------- report
def summary(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def _cells(rows: list[dict], regime: str, arm: str) -> list[list[float]]:
    """Macro-F1 values per column (0, then LARVAE) of one arm's row."""
    base = BASE_OF_ARM.get(arm)
    cells = [[r["macro_f1"] for r in rows if r.get("base") == base and r["regime"] == regime and base]]
    for n in LARVAE:
        cells.append([r["macro_f1"] for r in rows if r.get("arm") == arm and r["regime"] == regime and r["n"] == n])
    return cells


def _per_behaviour(rows: list[dict], regime: str, arm: str, n: int) -> np.ndarray | None:
    if n == 0:
        base = BASE_OF_ARM.get(arm)
        per = [r["f1"] for r in rows if base and r.get("base") == base and r["regime"] == regime]
    else:
        per = [r["f1"] for r in rows if r.get("arm") == arm and r["regime"] == regime and r["n"] == n]
    return np.median(np.array(per), axis=0) if per else None


def report(rows: list[dict]) -> None:
    scored = [r for r in rows if "macro_f1" in r]
    reference = scored[0]["reference"]
    columns = ["0 larvae"] + [f"{n} larva" + ("e" if n != 1 else "") for n in LARVAE]
    for regime in TARGET_REGIMES:
        print(f"\n  macro-F1 on {N_TEST} held-out files of regime {regime} against the labelled larvae of {regime}; "
              f"base trained on {TRAIN_REGIME}; median [min-max] over seeds {','.join(map(str, SEEDS))}")
        print(f"    {'arm':<28}" + "".join(f"{c:>22}" for c in columns))
        for arm in ARM_NAMES:
            print(f"    {arm:<28}" + "".join(f"{summary(v):>22}" for v in _cells(scored, regime, arm)))
        aa = {b: [r["macro_f1"] for r in scored if r.get("base") == b and r["regime"] == TRAIN_REGIME]
              for b in ("tagger", "boosting")}
        print(f"    reference, A->A: the A tagger {summary(aa['tagger'])}, the A boosting kind {summary(aa['boosting'])}")
        for n in (0, LARVAE[-1]):
            print(f"\n  per-behaviour F1, regime {regime}, {n} labelled larvae (median over seeds)")
            print(f"    {'arm':<28}" + "".join(f"{name[:11]:>12}" for name in reference))
            for arm in ARM_NAMES:
                med = _per_behaviour(scored, regime, arm, n)
                if med is not None:
                    print(f"    {arm:<28}" + "".join(f"{v:>12.3f}" for v in med))
        print(f"\n  regime {regime}: behaviours the labelled larvae show (of {len(reference)}), validation split "
              "(larvae or time blocks validating / all) and segments, per N (seeds in order):")
        for n in LARVAE:
            first = [r for r in scored if r.get("arm") == ARM_NAMES[0] and r["regime"] == regime and r["n"] == n]
            print(f"    {n:>2}: " + "; ".join(
                f"s{r['seed']} {len(r['labels'])} classes, split {r['split']} {r['val_units']}/{r['units']}, "
                f"{r['train_segments']} + {r['val_segments']} segments" for r in first))
        print(f"  regime {regime}: candidate kept (validation macro-F1 of network / boosting / combined), per N:")
        for arm in ARM_NAMES:
            parts = []
            for n in LARVAE:
                kept = [r for r in scored if r.get("arm") == arm and r["regime"] == regime and r["n"] == n]
                parts.append(f"{n}: " + ", ".join(
                    f"{r['chosen']}" + (" (continued)" if r.get("continued") else "")
                    + (" (" + " / ".join(f"{v:.2f}" if v is not None else "-" for v in r["val_macro_f1"].values())
                       + ")" if r["val_macro_f1"] else "") for r in kept))
            print(f"    {arm}: " + "; ".join(parts))
    bases = [r for r in scored if r.get("base") == "tagger" and r["regime"] == TRAIN_REGIME]
    print("\n  the A tagger kept: " + ", ".join(f"s{r['seed']} {r['chosen']}" for r in bases))
    timing = [r for r in rows if r.get("timing")]
    print("  time per job: " + "; ".join(f"{r['job']} {r['seconds']:.0f} s" for r in timing))
    train_s = {arm: [r["train_s"] for r in scored if r.get("arm") == arm] for arm in ARM_NAMES}
    print("  training time per arm (median over jobs): " + ", ".join(
        f"{arm} {statistics.median(v):.0f} s" for arm, v in train_s.items() if v))


def main() -> None:
    for arm in ARM_NAMES:
        if arm not in ARMS:
            raise SystemExit(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    with tempfile.TemporaryDirectory(prefix="maggotflow-fewlabel-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = make_data(root)
        pools = {r: len(eligible_larvae(data["pool"][r], MIN_LABELLED_S)) for r in TARGET_REGIMES}
        print(f"  simulated and isolated {N_TRAIN} + {N_TEST} files of {TRAIN_REGIME}, {N_TEST} held-out and {N_POOL} "
              f"pool files of each of {', '.join(TARGET_REGIMES)} (eligible larvae in the pools: "
              + ", ".join(f"{r} {n}" for r, n in pools.items()) + f") in {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"  budget x{BUDGET:g}: pretraining {PRETRAIN_STEPS} steps, fine-tuning {STAGE1_STEPS} + {STAGE2_STEPS} "
              f"steps (adaptation x{ADAPT_BUDGET:g}: {ADAPT_STEPS[0]} + {ADAPT_STEPS[1]}), filters {FILTERS}; seeds {SEEDS}; labelled larvae {LARVAE}; arms {ARM_NAMES}; {JOBS} parallel "
              "jobs", flush=True)
        rows: list[dict] = []
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one thread each
        with ProcessPoolExecutor(max_workers=JOBS, mp_context=get_context("spawn")) as pool:
            pending = {}
            for seed in SEEDS:
                work = root / f"s{seed}" / "base"
                pending[pool.submit(run_base, {"seed": seed, "data": data, "work": str(work)})] = (seed, work)
            done_jobs = 0
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    seed, work = pending.pop(future)
                    rows.extend(future.result())
                    done_jobs += 1
                    if work is not None:  # a base: its adaptation jobs can start
                        for regime in TARGET_REGIMES:
                            for n in LARVAE:
                                task = {"seed": seed, "regime": regime, "n": n, "data": data, "base": str(work),
                                        "work": str(root / f"s{seed}" / f"{regime}-{n}")}
                                pending[pool.submit(run_adaptation, task)] = (seed, None)
                    print(f"  ... {done_jobs} of {len(SEEDS) * (1 + len(TARGET_REGIMES) * len(LARVAE))} jobs done "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
        report(rows)
        print(f"  total {time.perf_counter() - t0:.0f} s")
        if OUT:
            Path(OUT).write_text(json.dumps(rows, indent=1))
