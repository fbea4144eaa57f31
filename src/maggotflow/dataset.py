"""Labelled segment datasets: per-file intermediates -> one columnar HDF5 for training.

What a sample is
    For every labelled time step of every larva, one segment (`maggotflow.segments`) centred
    on that step; the sample's label is the step's label. Labels are read from the
    intermediates (`maggotflow.isolation`), renamed through `synonyms` (names in the label
    files -> the task's names; names not in the mapping are kept as they are) and then
    restricted to the label set:

    - steps that are untagged, or whose labels are all outside the label set, are dropped;
    - a step carrying several labels of the set takes the **first of them in label-set
      order** (e.g. with labels run,cast,hunch a step tagged (hunch, cast) becomes cast);
    - the label set is `labels` when given, else every name found in the files (after
      synonyms), in order of first appearance over the files sorted by path;
    - single-behaviour tagger (`target="roll"`): labels are `["roll", "not_roll"]`; a step
      tagged roll (among others or not) is roll, any other tagged step is not_roll (with
      `labels` also given, only steps carrying one of those labels count as not_roll);
      untagged steps are still dropped.

Split before cutting windows (no temporal leakage)
    Overlapping windows of one larva must not sit on both sides of the split, so whole files
    go to validation (`split_by="file"`): `round(validation_fraction * n)` of the n files
    that hold samples, at least one on each side. With a single such file, whole larvae go
    to validation instead (`split_by="larva"`). The validation units are drawn at random
    (seeded) among those whose removal still leaves every class at least one training
    sample, so a rare behaviour seen in a single file stays trainable. Every sample records
    its side in `/split` (0 train, 1 validation).

Balancing (of the training samples; validation keeps its natural class distribution)
    - `auto` (default): keep every sample; class weights are the normalised inverse class
      frequencies over the training samples, `w_k = K * (1/n_k) / sum_j (1/n_j)` (mean 1,
      sum K), for a cross-entropy loss weighted per class.
    - `maggotuba`: two-level subsampling. Target proportions: run .25, cast .25 and equal
      shares of the remaining .5 for the other labels (names `run`/`run_*` and
      `cast`/`cast_*` count as run and cast; proportions are renormalised when a group is
      empty, and a single-behaviour tagger gets .5/.5). The total is `max_samples`, or at
      most the largest total the rarest class can fill. Each behaviour's quota is then
      spread evenly over the source files: files with fewer samples give them all and the
      rest is shared among the others. Class weights are all 1.
    - `none`: keep every sample, weights 1.
    Explicit `class_weights` (one per label, in label order) override the weights of any
    strategy. `max_samples` caps the total number of samples written (train + validation):
    validation keeps its natural share of the cap, and for auto/none the training samples
    are a uniform random subset (seeded).
    Every class of the label set needs at least one training sample: otherwise the build
    fails naming the missing classes (a class with no data cannot be learnt, and its auto
    weight would be infinite).

File layout (docs/architecture.md, "Tagger interfaces")::

    /segments (N, 2, P, W) float32, chunked by rows, uncompressed (read speed)
    /label (N,) int16 index into attrs.labels    /file (N,) int32 index into /files
    /files (F,) str (intermediate paths)  /larva (N,) str  /t (N,) float64 centre time (s)
    /split (N,) uint8 (0 train, 1 validation)
    attrs: format_version, kind, labels, class_weights, balancing, segment_spec, split_by,
           synonyms, sources (path, source_path, sha1 of the track file, label_source,
           split, n_samples per file), target, seed, validation_fraction, max_samples,
           class_counts (all JSON)

Rows are ordered by file (sorted paths), then larva, then time. The build makes two passes
(labels of all files, then segments one file at a time written straight into the output),
so memory holds one file's tracks plus per-step label codes, never all segments. The file is
written atomically, and identical inputs and seed give identical bytes (on the same kind of
device: with `device` CUDA the segments are built on the GPU, equal to a CPU build to
float32 rounding).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from maggotflow.atomic import atomic_path, is_maggotflow_hdf5, refuse_foreign
from maggotflow.formats import check_regular_file
from maggotflow.isolation import Intermediate
from maggotflow.model import select_device
from maggotflow.segments import SegmentSpec, build_segments, build_segments_torch, segment_builder
from maggotflow.tracks import Track, TrackDataError, metadata_matches

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "maggotflow-dataset"
BALANCING_STRATEGIES = ("auto", "maggotuba", "none")
TRAIN, VALIDATION = 0, 1
_STR = h5py.string_dtype("utf-8")

# Synonyms map names found in label files to the task's names. None by default: a lab's
# label names are its own; presets cover the usual conversions.
# 7-behaviour names (and trx.mat flag variants) -> the 6-behaviour task's names.
SIX_FROM_SEVEN: dict[str, str] = {
    "run_large": "run", "cast_large": "cast", "back_large": "back",
    "hunch_large": "hunch", "roll_large": "roll",
    "run_strong": "run", "cast_strong": "cast", "back_strong": "back",
    "hunch_strong": "hunch", "roll_strong": "roll",
}
SYNONYM_PRESETS: dict[str, dict[str, str]] = {"six-from-seven": SIX_FROM_SEVEN}


# --------------------------------------------------------------------------------------
# Reading the intermediates (`maggotflow.isolation.Intermediate`)


@dataclass
class _Source:
    """One labelled intermediate: identity, larvae, then per-step label codes."""

    path: Path
    source_path: str
    sha1: str
    label_source: str
    names: list[str]                            # label names as in the file
    used_names: list[str]                       # those present on at least one step
    ids: list[str]
    offsets: np.ndarray                         # (L+1,) rows of each larva
    packed_labels: np.ndarray | None = None     # (R, ceil(C/8)) uint8: the label matrix, bit-packed
    step_label: np.ndarray | None = None        # (R,) int16 class index, -1 = not a sample
    larva_split: np.ndarray | None = None       # (L,) uint8 TRAIN / VALIDATION
    selected: np.ndarray | None = None          # sorted rows written to the dataset

    @property
    def larva_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.ids)), np.diff(self.offsets))

    def row_split(self) -> np.ndarray:
        return self.larva_split[self.larva_of_row]

    def assign_step_labels(self, task: "_Task") -> None:
        """Label codes of every step under `task` (sets `step_label`, frees the label matrix)."""
        matrix = np.unpackbits(self.packed_labels, axis=1, count=len(self.names)).astype(bool)
        self.step_label = task.step_labels(self.names, matrix)
        self.packed_labels = None


def _read_source(path: Path, wanted: Mapping[str, Any] | None) -> _Source | None:
    """The labels and larvae of one intermediate, in one opening; None when `wanted` (the
    metadata filter) leaves it out. TrackDataError for a file that is not a labelled intermediate.

    The label matrix is kept bit-packed (one byte per step for up to 8 names): the label set
    is known only once every file is read, and memory must stay that of label codes.
    """
    with Intermediate(path) as intermediate:
        names = intermediate.label_names()
        if not names:
            raise TrackDataError(path, "has no behaviour labels: unlabelled files serve for pretraining only "
                                       "(isolate the track file with --labels <file>.label)")
        if wanted and not metadata_matches(intermediate.metadata, wanted):
            log.info("%s: left out by the metadata filter", path)
            return None
        ids, offsets = intermediate.larvae()
        matrix = intermediate.label_matrix()
        used = matrix.any(axis=0) if matrix.size else np.zeros(len(names), dtype=bool)
        return _Source(path=path, source_path=intermediate.source_path, sha1=intermediate.sha1,
                       label_source=intermediate.label_source, names=names,
                       used_names=[n for n, u in zip(names, used) if u], ids=ids, offsets=offsets,
                       packed_labels=np.packbits(matrix, axis=1))


@dataclass(frozen=True)
class _Task:
    labels: list[str]
    synonyms: dict[str, str]
    target: str | None
    restrict: frozenset[str] | None  # target mode: names that count as not_<target>

    def step_labels(self, names: list[str], matrix: np.ndarray) -> np.ndarray:
        """(R, C) bool label matrix -> (R,) int16 class index, -1 for dropped steps."""
        mapped = [self.synonyms.get(n, n) for n in names]
        rows = matrix.shape[0]
        if self.target is not None:
            is_target = np.zeros(rows, dtype=bool)
            tagged = np.zeros(rows, dtype=bool)
            for c, name in enumerate(mapped):
                if name == self.target:
                    is_target |= matrix[:, c]
                if self.restrict is None or name in self.restrict or name == self.target:
                    tagged |= matrix[:, c]
            return np.where(is_target, 0, np.where(tagged, 1, -1)).astype(np.int16)
        index = {name: k for k, name in enumerate(self.labels)}
        present = np.zeros((rows, len(self.labels)), dtype=bool)
        for c, name in enumerate(mapped):
            k = index.get(name)
            if k is not None:
                present[:, k] |= matrix[:, c]
        # argmax finds the first True: the first label in label-set order.
        out = np.argmax(present, axis=1).astype(np.int16)
        out[~present.any(axis=1)] = -1
        return out


# --------------------------------------------------------------------------------------
# Split, sampling and weights


def _choose_validation(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Validation flags for units (files or larvae) with per-class sample counts (U, K).

    `round(fraction * U)` units, at least 1 and at most U-1 when U >= 2 and fraction > 0.
    Units are taken in seeded random order, skipping a unit whose move would leave a class
    without training samples; if too few can be moved, the remainder is filled regardless
    (the missing class is then reported by the caller).
    """
    n_units = counts.shape[0]
    val = np.zeros(n_units, dtype=bool)
    if fraction <= 0 or n_units < 2:
        return val
    n_val = int(np.clip(round(fraction * n_units), 1, n_units - 1))
    order = rng.permutation(n_units)
    train_counts = counts.sum(axis=0)
    needed = train_counts > 0
    for u in order:
        if val.sum() == n_val:
            break
        after = train_counts - counts[u]
        if np.all(after[needed] > 0):
            val[u] = True
            train_counts = after
    for u in order:  # fallback: classes cannot all stay in training
        if val.sum() >= n_val:
            break
        val[u] = True
    return val


def _largest_remainder(total: int, proportions: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integers summing to <= total, close to total * proportions, each <= its cap."""
    raw = total * proportions
    out = np.minimum(np.floor(raw).astype(np.int64), caps)
    left = total - int(out.sum())
    for k in np.argsort(-(raw - np.floor(raw)), kind="stable"):
        if left <= 0:
            break
        if out[k] < caps[k] and proportions[k] > 0:
            out[k] += 1
            left -= 1
    return out


def spread_evenly(quota: int, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split `quota` samples over sources holding `counts` samples, as evenly as possible.

    Water-filling: every source gives min(count, level); sources with fewer samples than the
    level give all they have and the others share the rest. Leftover single samples go to
    randomly chosen (seeded) sources that still have samples. Returns takes (same shape).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if quota >= counts.sum():
        return counts.copy()
    lo, hi = 0, int(counts.max())  # smallest level L with sum(min(counts, L)) >= quota
    while lo < hi:
        mid = (lo + hi) // 2
        if np.minimum(counts, mid).sum() >= quota:
            hi = mid
        else:
            lo = mid + 1
    takes = np.minimum(counts, lo - 1) if lo > 0 else np.zeros_like(counts)
    left = quota - int(takes.sum())
    if left > 0:
        eligible = np.flatnonzero(counts > takes)
        takes[rng.choice(eligible, size=left, replace=False)] += 1
    return takes


def maggotuba_proportions(labels: Sequence[str], target: str | None = None) -> np.ndarray:
    """Target class proportions of the `maggotuba` strategy (sum 1), see the module doc."""
    k = len(labels)
    if target is not None:
        return np.full(k, 1.0 / k)
    groups = np.array([
        "run" if (n == "run" or n.startswith("run_")) else
        "cast" if (n == "cast" or n.startswith("cast_")) else "other"
        for n in labels
    ])
    p = np.zeros(k)
    for group, share in (("run", 0.25), ("cast", 0.25)):
        members = groups == group
        if members.any():
            p[members] = share / members.sum()
    others = groups == "other"
    if others.any():
        p[others] = 0.5 / others.sum()
    return p / p.sum()


def auto_class_weights(train_counts: np.ndarray) -> np.ndarray:
    """Normalised inverse frequencies: w_k = K * (1/n_k) / sum_j (1/n_j) (mean 1)."""
    inv = 1.0 / np.asarray(train_counts, dtype=np.float64)
    return inv * (inv.size / inv.sum())


def check_class_weights(weights: Sequence[float], labels: Sequence[str]) -> list[float]:
    """Explicit class weights, one per label in label order, as floats; ValueError (one line)
    unless there is one per label and they are finite, >= 0 and not all zero."""
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (len(labels),):
        raise ValueError(f"{values.size} class weights given for {len(labels)} labels ({', '.join(labels)})")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or not values.any():
        raise ValueError("class weights must be finite, >= 0 and not all zero")
    return [float(w) for w in values]


def _pick_rows(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if n >= rows.size:
        return rows
    return np.sort(rng.choice(rows, size=n, replace=False))


def _uniform_subset(candidates: list[np.ndarray], n: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """A uniform random subset of n rows drawn over all files' candidate rows (seeded)."""
    sizes = np.array([c.size for c in candidates], dtype=np.int64)
    if n is None or n >= sizes.sum():
        return candidates
    per_file = rng.multivariate_hypergeometric(sizes, n)
    return [_pick_rows(c, int(k), rng) for c, k in zip(candidates, per_file)]


# --------------------------------------------------------------------------------------
# The dataset


def build_dataset(
    intermediates: Sequence[str | Path],
    out_path: str | Path,
    spec: SegmentSpec = SegmentSpec(),
    labels: Sequence[str] | None = None,
    synonyms: dict[str, str] | None = None,
    balancing: str = "auto",
    class_weights: Sequence[float] | None = None,
    target: str | None = None,
    validation_fraction: float = 0.2,
    max_samples: int | None = None,
    seed: int = 0,
    filter: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> "Dataset":
    """Build the dataset HDF5 `out_path` from labelled intermediates and return it loaded.

    intermediates: per-file HDF5 intermediates (`maggotflow isolate`), all labelled.
    spec: segment window (steps), frame interval (s) and body points.
    labels / synonyms / target / balancing / class_weights / validation_fraction /
    max_samples / seed: see the module docstring. filter: keep only the files whose
    metadata has these values (e.g. {"tracker": "t15"}; a list means any of them), as the
    workflow's `inputs.filter` (`maggotflow.tracks.metadata_matches`).
    device: where segments are built ("cpu", "cuda", "auto"): on CUDA with torch, all
    larvae of a file at once (`maggotflow.segments.segment_builder`); the segments then
    agree with a CPU build to float32 rounding, not bit for bit.
    Raises TrackDataError for bad input files, ValueError for inconsistent options.
    """
    out_path = Path(out_path)
    refuse_foreign(out_path, is_maggotflow_hdf5)  # replace an earlier dataset, never a user's file
    synonyms = dict(synonyms or {})
    labels = None if labels is None else list(labels)
    _check_options(labels, balancing, validation_fraction, max_samples)
    paths = _input_paths(intermediates, out_path)

    # Pass 1: every file's labels and larvae (no spine read); the label set; per-step class codes.
    sources = [src for src in (_read_source(path, filter) for path in paths) if src is not None]
    if not sources:
        raise ValueError(f"no intermediate has the metadata {dict(filter)} (the metadata filter left none)")
    task = _make_task(labels, target, synonyms, _found_names(sources, synonyms))
    for src in sources:
        src.assign_step_labels(task)
    n_classes = len(task.labels)
    file_counts = np.array([np.bincount(s.step_label[s.step_label >= 0], minlength=n_classes)
                            for s in sources], dtype=np.int64).reshape(len(sources), n_classes)
    if file_counts.sum() == 0:
        raise ValueError(f"no labelled time step carries any of the labels {', '.join(task.labels)}")

    # Split, then the rows written and the class weights.
    split_rng, sample_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    split_by = _split(sources, file_counts, n_classes, validation_fraction, split_rng)
    _check_training_classes(task, file_counts, _counts(sources, n_classes, TRAIN, candidates=True))
    _select(sources, task, balancing, max_samples, sample_rng)
    train_counts = _counts(sources, n_classes, TRAIN)
    val_counts = _counts(sources, n_classes, VALIDATION)
    if np.any(train_counts == 0):
        lost = [task.labels[k] for k in np.flatnonzero(train_counts == 0)]
        raise ValueError(f"max samples {max_samples} is too small: no training sample left for {', '.join(lost)}")
    weights = _class_weights(class_weights, balancing, task.labels, train_counts)

    # Pass 2: the segments, file by file, straight into the output.
    settings = dict(balancing=balancing, synonyms=synonyms, target=target, seed=seed,
                    validation_fraction=validation_fraction, max_samples=max_samples)
    attrs = _dataset_attrs(task, sources, spec, split_by, weights, train_counts, val_counts, settings)
    _write(sources, out_path, spec, attrs, device)
    log.info("%s: %d training + %d validation samples; %s", out_path, train_counts.sum(), val_counts.sum(),
             ", ".join(f"{n} {a}/{b} (weight {w:.3g})"
                       for n, a, b, w in zip(task.labels, train_counts, val_counts, weights)))
    return Dataset.load(out_path)


def _dataset_attrs(task: _Task, sources: list[_Source], spec: SegmentSpec, split_by: str, weights: Sequence[float],
                   train_counts: np.ndarray, val_counts: np.ndarray, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset file's attributes (module docstring, "File layout"), in their order in the file.

    settings: `build_dataset`'s balancing, synonyms, target, seed, validation_fraction, max_samples.
    """
    return {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "labels": json.dumps(task.labels),
        "class_weights": json.dumps([float(w) for w in weights]),
        "balancing": settings["balancing"],
        "segment_spec": json.dumps(spec.to_dict()),
        "split_by": split_by,
        "synonyms": json.dumps(settings["synonyms"], sort_keys=True),
        "sources": json.dumps([_source_record(s) for s in sources]),
        "target": settings["target"] or "",
        "seed": int(settings["seed"]),
        "validation_fraction": float(settings["validation_fraction"]),
        "max_samples": json.dumps(settings["max_samples"]),
        "class_counts": json.dumps({"train": train_counts.tolist(), "validation": val_counts.tolist()}),
    }


def _check_options(labels: list[str] | None, balancing: str, validation_fraction: float,
                   max_samples: int | None) -> None:
    """ValueError (one line) for an option value `build_dataset` cannot use."""
    if balancing not in BALANCING_STRATEGIES:
        raise ValueError(f"balancing must be one of {', '.join(BALANCING_STRATEGIES)}, got {balancing!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max samples must be >= 1, got {max_samples}")
    if labels is not None and len(set(labels)) != len(labels):
        raise ValueError(f"label list {','.join(labels)} names a label twice")


def _input_paths(intermediates: Sequence[str | Path], out_path: Path) -> list[Path]:
    """The intermediates sorted by path (the dataset's row order); ValueError for none, a
    path listed twice, or the output among them."""
    given = [Path(p) for p in intermediates]
    paths = sorted(set(given), key=str)
    if len(paths) != len(given):
        raise ValueError("an intermediate is listed twice")
    if not paths:
        raise ValueError("no intermediate given")
    if any(p.resolve() == out_path.resolve() for p in paths):
        raise ValueError(f"{out_path}: the output would overwrite one of the inputs")
    return paths


def _found_names(sources: list[_Source], synonyms: dict[str, str]) -> list[str]:
    """Task names of the labels used in the files (after synonyms), in order of first appearance."""
    found: dict[str, None] = {}
    for src in sources:
        for name in src.used_names:
            found.setdefault(synonyms.get(name, name), None)
    return list(found)


def _check_training_classes(task: _Task, file_counts: np.ndarray, train_counts: np.ndarray) -> None:
    """ValueError naming the classes without a training sample (a class with no data cannot be learnt)."""
    missing = [task.labels[k] for k in np.flatnonzero(train_counts == 0)]
    if missing:
        where = "in any file" if file_counts[:, train_counts == 0].sum() == 0 else "in the training files"
        raise ValueError(
            f"no training sample for {', '.join(missing)} ({where}); every class needs training data: "
            "drop it from --labels, add labelled files, or change --seed / --validation-fraction"
        )


def _class_weights(given: Sequence[float] | None, balancing: str, labels: list[str],
                   train_counts: np.ndarray) -> Sequence[float]:
    """The class weights: `given` (checked) when there are, else the balancing strategy's."""
    if given is not None:
        return check_class_weights(given, labels)
    if balancing == "auto":
        return auto_class_weights(train_counts)
    return np.ones(len(labels))


def _make_task(labels: list[str] | None, target: str | None, synonyms: dict[str, str], found: list[str]) -> _Task:
    if target is not None:
        if target not in found:
            raise ValueError(f"target behaviour {target!r} is not found in any file "
                             f"(labels found: {', '.join(found) or 'none'})")
        unknown = [n for n in labels or () if n not in found]
        if unknown:
            raise ValueError(f"label(s) {', '.join(unknown)} not found in any file "
                             f"(labels found: {', '.join(found)}; see --synonyms)")
        restrict = None if labels is None else frozenset(labels)
        return _Task([target, f"not_{target}"], synonyms, target, restrict)
    if labels is None:
        labels = found
    unknown = [n for n in labels if n not in found]
    if unknown:
        raise ValueError(f"label(s) {', '.join(unknown)} not found in any file "
                         f"(labels found: {', '.join(found) or 'none'}; see --synonyms)")
    if not labels:
        raise ValueError("the files carry no label at all")
    return _Task(list(labels), synonyms, None, None)


def _split(sources: list[_Source], file_counts: np.ndarray, n_classes: int, fraction: float,
           rng: np.random.Generator) -> str:
    """Assign whole files (or, with a single file, whole larvae) to validation."""
    with_samples = [i for i, c in enumerate(file_counts) if c.sum() > 0]
    for src in sources:
        src.larva_split = np.zeros(len(src.ids), dtype=np.uint8)
    if len(with_samples) >= 2:
        val = _choose_validation(file_counts[with_samples], fraction, rng)
        for i, v in zip(with_samples, val):
            sources[i].larva_split[:] = VALIDATION if v else TRAIN
        return "file"
    src = sources[with_samples[0]]
    larva = src.larva_of_row
    keep = src.step_label >= 0
    counts = np.zeros((len(src.ids), n_classes), dtype=np.int64)
    np.add.at(counts, (larva[keep], src.step_label[keep]), 1)
    has = np.flatnonzero(counts.sum(axis=1) > 0)
    if fraction > 0 and has.size < 2:
        log.warning("%s: a single labelled larva: no validation samples", src.path)
    val = _choose_validation(counts[has], fraction, rng)
    src.larva_split[has[val]] = VALIDATION
    return "larva"


def _candidates(src: _Source, side: int, k: int | None = None) -> np.ndarray:
    mask = (src.step_label >= 0) if k is None else (src.step_label == k)
    return np.flatnonzero(mask & (src.row_split() == side))


def _counts(sources: list[_Source], n_classes: int, side: int, candidates: bool = False) -> np.ndarray:
    total = np.zeros(n_classes, dtype=np.int64)
    for src in sources:
        rows = _candidates(src, side) if candidates else src.selected[src.row_split()[src.selected] == side]
        total += np.bincount(src.step_label[rows], minlength=n_classes)
    return total


def _select(sources: list[_Source], task: _Task, balancing: str, max_samples: int | None,
            rng: np.random.Generator) -> None:
    """Choose the rows written to the dataset (sets `src.selected`)."""
    train = [_candidates(s, TRAIN) for s in sources]
    val = [_candidates(s, VALIDATION) for s in sources]
    n_train, n_val = sum(c.size for c in train), sum(c.size for c in val)
    train_cap = None
    if max_samples is not None:
        # Validation keeps its natural share of the cap; training gets the rest.
        val_cap = min(n_val, int(round(max_samples * n_val / (n_train + n_val))))
        val = _uniform_subset(val, val_cap, rng)
        train_cap = max_samples - sum(c.size for c in val)
    if balancing == "maggotuba":
        train = _maggotuba(sources, task, train_cap, rng)
    else:
        train = _uniform_subset(train, train_cap, rng)
    for src, a, b in zip(sources, train, val):
        src.selected = np.union1d(a, b).astype(np.int64)


def _maggotuba(sources: list[_Source], task: _Task, cap: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Two-level subsampling of the training rows: class proportions, then even over files."""
    n_classes = len(task.labels)
    per_class = [[_candidates(s, TRAIN, k) for s in sources] for k in range(n_classes)]
    counts = np.array([[c.size for c in row] for row in per_class], dtype=np.int64)  # (K, F)
    available = counts.sum(axis=1)
    p = maggotuba_proportions(task.labels, task.target)
    with np.errstate(divide="ignore"):
        most = int(np.min(np.floor(available[p > 0] / p[p > 0])))
    total = most if cap is None else min(most, cap)
    quotas = _largest_remainder(total, p, available)
    picked = [[] for _ in sources]
    for k in range(n_classes):
        takes = spread_evenly(int(quotas[k]), counts[k], rng)
        for f, (rows, n) in enumerate(zip(per_class[k], takes)):
            picked[f].append(_pick_rows(rows, int(n), rng))
    return [np.sort(np.concatenate(rows)) for rows in picked]


def _source_record(src: _Source) -> dict[str, Any]:
    sides = set(src.row_split()[src.selected].tolist()) if src.selected.size else set()
    split = "train" if sides == {TRAIN} else "validation" if sides == {VALIDATION} else \
        "train+validation" if sides else "unused"
    return {"path": str(src.path), "source_path": src.source_path, "sha1": src.sha1,
            "label_source": src.label_source, "split": split, "n_samples": int(src.selected.size)}


def _write(sources: list[_Source], out_path: Path, spec: SegmentSpec, attrs: dict[str, Any],
           device: str = "cpu") -> None:
    """Pass 2: cut the selected segments file by file straight into the output."""
    n = sum(int(s.selected.size) for s in sources)
    row_bytes = 2 * spec.n_points * spec.window * 4
    chunk_rows = max(1, min(n, (1 << 20) // row_bytes))  # ~1 MB chunks: fast row batches
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w", track_order=True, libver=("earliest", "v110")) as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            opts = dict(track_times=False)
            f.create_dataset("files", data=np.array([str(s.path) for s in sources], dtype=object),
                             dtype=_STR, **opts)
            segments = f.create_dataset("segments", shape=(n, 2, spec.n_points, spec.window), dtype=np.float32,
                                        chunks=(chunk_rows, 2, spec.n_points, spec.window), **opts)
            label = f.create_dataset("label", shape=(n,), dtype=np.int16, **opts)
            file_index = f.create_dataset("file", shape=(n,), dtype=np.int32, **opts)
            larva = f.create_dataset("larva", shape=(n,), dtype=_STR, **opts)
            times = f.create_dataset("t", shape=(n,), dtype=np.float64, **opts)
            split = f.create_dataset("split", shape=(n,), dtype=np.uint8, **opts)
            start = 0
            for i, src in enumerate(sources):
                rows = src.selected
                if rows.size == 0:
                    continue
                stop = start + rows.size
                t = _write_segments(src, rows, segments, start, spec, device)
                label[start:stop] = src.step_label[rows]
                file_index[start:stop] = i
                larva[start:stop] = np.array(src.ids, dtype=object)[src.larva_of_row[rows]]
                times[start:stop] = t
                split[start:stop] = src.row_split()[rows]
                start = stop


def _write_segments(src: _Source, rows: np.ndarray, out: h5py.Dataset, start: int, spec: SegmentSpec,
                    device: str = "cpu") -> np.ndarray:
    """Write segments for `rows` of one file at out[start:]; return their centre times (s)."""
    with Intermediate(src.path) as intermediate:
        t, spine = intermediate.steps()
    offsets = src.offsets
    larva_of = src.larva_of_row[rows]
    bounds = np.searchsorted(larva_of, np.arange(len(src.ids) + 1))
    torch_device = select_device(device)
    on_device = segment_builder(torch_device) == "torch"
    pieces = []
    for j in np.unique(larva_of):
        a, b = int(offsets[j]), int(offsets[j + 1])
        sel = rows[bounds[j]:bounds[j + 1]]
        try:
            track = Track(src.ids[j], t[a:b], spine[a:b])
            if on_device:  # rows are ordered by larva: the file's larvae in one batch
                pieces.append((track, None, t[sel]))
                continue
            seg = build_segments(track, spec, centres=t[sel])
        except TrackDataError as err:
            raise err.with_path(src.path) from None
        out[start + bounds[j]:start + bounds[j + 1]] = seg
    if pieces:
        try:
            out[start:start + rows.size] = build_segments_torch(pieces, spec, torch_device).cpu().numpy()
        except TrackDataError as err:
            raise err.with_path(src.path) from None
    return t[rows]


def _open_hdf5(path: Path, what: str) -> h5py.File:
    """`path` opened for reading; TrackDataError (one line) unless it is a readable HDF5 file."""
    check_regular_file(path)  # before any open: a FIFO would block forever
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise TrackDataError(path, f"is not a readable {what} ({err})") from None


class Dataset:
    """A dataset file opened for training: metadata plus columnar arrays.

    Attributes: `labels` (list), `class_weights` (np.ndarray, one per label), `spec`
    (SegmentSpec), `split_by`, `balancing`, `synonyms`, `target` (None unless a
    single-behaviour tagger), `sources` (list of dicts), `files` (list of paths), and the
    per-sample arrays `label` (int16), `file` (int32 into `files`), `larva` (str), `t`
    (centre time, s), `split` (uint8, 0 train / 1 validation) and `segments`
    (N, 2, P, W) float32: an h5py dataset read on demand (sorted index lists or slices), or
    a numpy array with `in_memory=True`. Use as a context manager, or call `close()`.
    """

    def __init__(self, path: Path, h5: h5py.File | None, attrs: dict[str, Any], arrays: dict[str, Any]):
        self.path = path
        self._h5 = h5
        self.labels: list[str] = json.loads(attrs["labels"])
        self.class_weights = np.asarray(json.loads(attrs["class_weights"]), dtype=np.float64)
        self.spec = SegmentSpec(**json.loads(attrs["segment_spec"]))
        self.split_by: str = str(attrs["split_by"])
        self.balancing: str = str(attrs["balancing"])
        self.synonyms: dict[str, str] = json.loads(attrs["synonyms"])
        self.sources: list[dict] = json.loads(attrs["sources"])
        self.target: str | None = str(attrs.get("target", "")) or None
        self.seed = int(attrs.get("seed", 0))
        self.files: list[str] = arrays["files"]
        self.segments = arrays["segments"]
        self.label: np.ndarray = arrays["label"]
        self.file: np.ndarray = arrays["file"]
        self.larva: np.ndarray = arrays["larva"]
        self.t: np.ndarray = arrays["t"]
        self.split: np.ndarray = arrays["split"]

    @classmethod
    def load(cls, path: str | Path, in_memory: bool = False) -> "Dataset":
        """Open a dataset file; TrackDataError if it is not one (or of another version)."""
        path = Path(path)
        h5 = _open_hdf5(path, "dataset file")
        try:
            attrs = dict(h5.attrs)
            if attrs.get("kind") != KIND or "segments" not in h5:
                raise TrackDataError(path, "is not a maggotflow dataset (make one with `maggotflow dataset`)")
            if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise TrackDataError(path, f"is a dataset of format {attrs.get('format_version')}, "
                                           f"this maggotflow reads format {FORMAT_VERSION}: rebuild it")
            arrays = {
                "files": list(h5["files"].asstr()[()]),
                "segments": h5["segments"][()] if in_memory else h5["segments"],
                "label": h5["label"][()],
                "file": h5["file"][()],
                "larva": h5["larva"].asstr()[()],
                "t": h5["t"][()],
                "split": h5["split"][()],
            }
        except BaseException:
            h5.close()
            raise
        if in_memory:
            h5.close()
            h5 = None
        return cls(path, h5, attrs, arrays)

    def __len__(self) -> int:
        return int(self.label.size)

    def train_indices(self) -> np.ndarray:
        """Row indices of the training samples (ascending)."""
        return np.flatnonzero(self.split == TRAIN)

    def val_indices(self) -> np.ndarray:
        """Row indices of the validation samples (ascending)."""
        return np.flatnonzero(self.split == VALIDATION)

    def larva_keys(self) -> np.ndarray:
        """The larva of every row as one string "file/larva" (rows of one key, in time
        order, are that larva's label sequence)."""
        return np.char.add(np.char.add(self.file.astype(str), "/"), np.asarray(self.larva, dtype=str))

    def class_counts(self, side: int | None = None) -> np.ndarray:
        """Samples per label (all, or TRAIN=0 / VALIDATION=1 only)."""
        labels = self.label if side is None else self.label[self.split == side]
        return np.bincount(labels, minlength=len(self.labels))

    def read_segments(self, indices: np.ndarray) -> np.ndarray:
        """Segments (len(indices), 2, P, W) float32 in the order of `indices` (any order)."""
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(self.segments, np.ndarray):
            return self.segments[indices]
        order = np.argsort(indices, kind="stable")
        unique, inverse = np.unique(indices[order], return_inverse=True)
        block = self.segments[unique] if unique.size else np.zeros((0,) + self.segments.shape[1:], np.float32)
        out = np.empty((indices.size,) + block.shape[1:], dtype=np.float32)
        out[order] = block[inverse]
        return out

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
