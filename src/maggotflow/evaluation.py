"""Evaluation: predicted vs reference `.label` files -> per-label metrics and a confusion matrix.

Matching
    Files are compared in pairs (predicted, reference), each read once (`load_label_pairs`,
    a `LabelPair`) and passed on to `evaluate`, `per_file_scores` and `compare_behaviour`
    (`write_evaluation` does all three). Within a pair, steps are matched by
    larva id and time: a reference step is matched to the predicted step of the same larva
    whose time is within 1 ms (`TIME_TOLERANCE`, the precision of `.label` times).
    The two files of a pair must label the same track file: when both name track files with
    a sha1 in their `dependencies` and no sha1 is common, that is an error (TrackDataError
    naming both files and both track files); a file without a sha1 in its `dependencies`
    only gets a warning (the pairing cannot be checked).

Label set
    `labels` when given, else the tagger's label set: every name the predicted files
    declare (a tagger declares its whole label set; plus names they use as secondary
    labels). Rows list the names of the set that the reference or the predictions use,
    reference declaration order first.

What is counted (one row of the confusion matrix per evaluated reference step)
    - Label names of both files go through `synonyms` first (name in file -> task name).
    - With `ignore_ends` = S > 0 s, reference steps less than S after the first time or
      less than S before the last time of their larva's reference track are not evaluated
      (counted in `n_at_ends`; the track ends are often unreliable).
    - Reference steps that are untagged, or whose labels are all outside the label set, are
      ignored (counted in `n_ignored`). Those outside the label set are "foreign": counted
      in `n_foreign` and per name in `foreign_labels` (a step with two foreign names counts
      under both), and reported by a warning (logged and in `warnings`, which
      `format_table` prints last) suggesting `--synonyms` -- typically a 7-behaviour
      reference (`run_large`) against a 6-behaviour tagger (`run`). They are left out of
      every metric: a class the tagger cannot predict has no column, its F1 would be 0 by
      construction, so it does not enter macro-F1. Predicted larvae or steps that the
      reference does not cover are ignored too (the reference cannot judge them).
    - A reference step with several labels counts as correct if the prediction is one of
      them; its row is then that label, otherwise its first label in label-set order.
      (The same rule picks among several predicted labels.)
    - A reference step without a prediction (larva absent from the predicted file, no
      predicted step within 1 ms, or a predicted step left untagged) counts as an error in
      the column "(missing)"; a prediction whose names are all outside the label set
      (possible only with an explicit label list) goes to the column "(other)". The
      confusion matrix is therefore (K, K + 2): rows = reference labels, columns = the K
      predicted labels, "(other)", "(missing)".

Metrics (`maggotflow.metrics`, the same figures that pick a tagger's checkpoint in training)
    Sklearn-like, zero_division=0, on the (K, K + 2) matrix: recall's row sum includes the
    "(other)" and "(missing)" predictions; support_k = row k sum; accuracy = trace /
    evaluated steps. Macro-F1 is the mean F1 over the labels with support > 0: a label the
    reference never uses has nothing to recall, so it is reported (its wrong predictions
    lower the recall of the true labels and the accuracy) but does not enter the mean.
    An explicit `labels` entry that no predicted file declares stays in the mean (the user
    asked for it) but gets a warning: the tagger cannot predict it, so its F1 is 0.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from maggotflow import tsv
from maggotflow.atomic import atomic_path, write_text_atomic
from maggotflow.bouts import find_bouts, step_codes
from maggotflow.metrics import accuracy, macro_f1, per_class_scores
from maggotflow.tracks import TrackDataError

if TYPE_CHECKING:
    from maggotflow.formats.label import LabelFile

log = logging.getLogger(__name__)

TIME_TOLERANCE = 1e-3 + 1e-9  # s; .label times are rounded to 1 ms
OTHER, MISSING = "(other)", "(missing)"


@dataclass
class EvaluationReport:
    """Metrics of predicted vs reference labels.

    labels: evaluated label names (rows). columns: labels + ["(other)", "(missing)"].
    per_label: name -> {"precision", "recall", "f1", "support"}. confusion: (K, K + 2) int64
    counts, rows = reference, columns = predicted. n_steps: evaluated reference steps;
    n_missing: those without a prediction; n_ignored: reference steps untagged or outside
    the label set; n_foreign: those outside the label set, per name in foreign_labels;
    n_at_ends: reference steps within ignore_ends (s) of their track's ends. files: one
    dict per pair (paths, n_steps, n_correct, n_missing, n_foreign, n_at_ends). warnings:
    one line each (foreign reference labels, labels the tagger cannot predict).
    """

    labels: list[str]
    per_label: dict[str, dict[str, float]]
    macro_f1: float
    accuracy: float
    confusion: np.ndarray
    n_steps: int
    files: list[dict[str, Any]]
    columns: list[str] = field(default_factory=list)
    n_missing: int = 0
    n_ignored: int = 0
    n_foreign: int = 0
    foreign_labels: dict[str, int] = field(default_factory=dict)
    n_at_ends: int = 0
    ignore_ends: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def shown_columns(self) -> list[int]:
        """Confusion columns to show: every label, then (other)/(missing) only when they hold
        something (the text table and confusion.png)."""
        n_labels = len(self.labels)
        return list(range(n_labels)) + [c for c in (n_labels, n_labels + 1) if self.confusion[:, c].any()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "n_steps": self.n_steps,
            "n_missing": self.n_missing,
            "n_ignored": self.n_ignored,
            "n_foreign": self.n_foreign,
            "foreign_labels": self.foreign_labels,
            "ignore_ends": self.ignore_ends,
            "n_at_ends": self.n_at_ends,
            "warnings": self.warnings,
            "per_label": self.per_label,
            "confusion": {"rows": self.labels, "columns": self.columns, "counts": self.confusion.tolist()},
            "files": self.files,
        }


def _step_codes(steps: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Distinct step values and, per step, the index of its value (no per-step Python work
    beyond one dict lookup)."""
    distinct = {s: i for i, s in enumerate(dict.fromkeys(steps))}
    codes = np.fromiter(map(distinct.__getitem__, steps), dtype=np.int64, count=len(steps))
    return list(distinct), codes


def _masks(values: list[tuple[str, ...]], index: dict[str, int],
           synonyms: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct step value: (K,) bool of labels in the set, and 'has a name outside'."""
    inside = np.zeros((len(values), len(index)), dtype=bool)
    outside = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        for name in value:
            k = index.get(synonyms.get(name, name))
            if k is None:
                outside[i] = True
            else:
                inside[i, k] = True
    return inside, outside


def _used_names(lf, synonyms: dict[str, str]) -> list[str]:
    used = {synonyms.get(n, n) for _, steps in lf.tracks.values() for step in set(steps) for n in step}
    declared = [synonyms.get(n, n) for n in lf.names]
    return [n for n in dict.fromkeys(declared) if n in used] + sorted(used - set(declared))


def _match(ref_t: np.ndarray, pred_t: np.ndarray) -> np.ndarray:
    """Index of the predicted step within TIME_TOLERANCE of each reference time, -1 if none."""
    if pred_t.size == 0:
        return np.full(ref_t.size, -1)
    order = np.argsort(pred_t, kind="stable")
    sorted_t = pred_t[order]
    right = np.clip(np.searchsorted(sorted_t, ref_t), 0, sorted_t.size - 1)
    left = np.clip(right - 1, 0, sorted_t.size - 1)
    nearest = np.where(np.abs(sorted_t[left] - ref_t) <= np.abs(sorted_t[right] - ref_t), left, right)
    ok = np.abs(sorted_t[nearest] - ref_t) <= TIME_TOLERANCE
    return np.where(ok, order[nearest], -1)


def _track_files(lf) -> list[tuple[str, str]]:
    """(track file name, lower-case sha1) of each `dependencies` entry that has a sha1."""
    out = []
    for dep in lf.dependencies or []:
        sha1 = dep.get("sha1")
        if isinstance(sha1, str) and sha1.strip():
            out.append((str(dep.get("filename", "?")), sha1.strip().lower()))
    return out


def check_same_track_file(pred_path: Path, pred, ref_path: Path, ref) -> None:
    """TrackDataError when the predicted and the reference label file name different track
    files (sha1s in their `dependencies`, none in common); a warning naming the file when
    one has no sha1 to compare. `pred`, `ref`: LabelFile."""
    pred_files, ref_files = _track_files(pred), _track_files(ref)
    for path, found, other in ((pred_path, pred_files, ref_path), (ref_path, ref_files, pred_path)):
        if not found:
            log.warning("%s: no track-file sha1 in its 'dependencies': cannot check that it labels "
                        "the same track file as %s", path, other)
    if not pred_files or not ref_files or {s for _, s in pred_files} & {s for _, s in ref_files}:
        return
    if {Path(n).stem for n, _ in pred_files} & {Path(n).stem for n, _ in ref_files}:
        # e.g. X.spine vs X.outline: two files of one Choreography run, so no common sha1.
        log.warning("%s: predicted from %s but the reference %s labels %s: cannot check that they are "
                    "the same run", pred_path, ", ".join(n for n, _ in pred_files), ref_path,
                    ", ".join(n for n, _ in ref_files))
        return

    def named(files):
        return ", ".join(f"{n} (sha1 {s})" for n, s in files)

    raise TrackDataError(pred_path, f"predicted from the track file {named(pred_files)}, but its reference "
                                    f"{ref_path} labels {named(ref_files)}: not the same track file "
                                    "(check the pairing of predicted and reference files)")


def _synonym_hint(foreign: Sequence[str], labels: Sequence[str]) -> str:
    """'give --synonyms run_large=run,...' for foreign names that look like a label's variant."""
    from maggotflow.dataset import SYNONYM_PRESETS

    pairs = {}
    for name in foreign:
        target = next((p[name] for p in SYNONYM_PRESETS.values() if p.get(name) in labels), None)
        base = name.rsplit("_", 1)[0]  # run_large, cast_strong, ... -> run, cast
        if target is None and base != name and base in labels:
            target = base
        if target is not None:
            pairs[name] = target
    if pairs:
        return ("if they are the same behaviours, give --synonyms "
                + ",".join(f"{n}={t}" for n, t in pairs.items()) + " (workflow: the synonyms config key)")
    return ("if they are the tagger's behaviours under other names, give --synonyms NAME=LABEL,... "
            "(workflow: the synonyms config key)")


# ---------------------------------------------------------------------------- label pairs


@dataclass
class LabelPair:
    """A predicted `.label` file and its reference, each read once (`load_label_pairs`); the
    paths as given."""

    predicted_path: str | Path
    predicted: LabelFile
    reference_path: str | Path
    reference: LabelFile


def load_label_pairs(pairs: Sequence[LabelPair | tuple[str | Path, str | Path]]) -> list[LabelPair]:
    """Read every (predicted, reference) pair once, then check that each labels one track file
    (`check_same_track_file`); a LabelPair is passed on as it is (read and checked already).
    TrackDataError for an unreadable file or two different track files."""
    from maggotflow.formats.label import read_label_file

    loaded = [pair if isinstance(pair, LabelPair) else
              LabelPair(pair[0], read_label_file(pair[0]), pair[1], read_label_file(pair[1])) for pair in pairs]
    for pair, given in zip(loaded, pairs):
        if not isinstance(given, LabelPair):
            check_same_track_file(Path(pair.predicted_path), pair.predicted, Path(pair.reference_path),
                                  pair.reference)
    return loaded


# ---------------------------------------------------------------------------- evaluation


@dataclass
class _LabelSet:
    """The evaluated labels (rows) and what the tagger can predict (what its files declare or
    use); explicit: the labels were given rather than taken from the files."""

    labels: list[str]
    predictable: dict[str, None]
    explicit: bool


@dataclass
class _Tally:
    """An evaluation while its pairs are compared: the label set and settings, the confusion
    matrix and the counts so far; absent: one warning line per pair whose prediction lacks
    larvae of its reference."""

    label_set: _LabelSet
    synonyms: dict[str, str]
    ignore_ends: float
    confusion: np.ndarray
    n_ignored: int = 0
    n_foreign: int = 0
    n_at_ends: int = 0
    foreign_labels: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    @property
    def index(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.label_set.labels)}


@dataclass
class _PairCounts:
    """Reference steps of one pair not evaluated: near a track end, ignored (of which foreign)."""

    at_ends: int = 0
    ignored: int = 0
    foreign: int = 0


def _checked_ignore_ends(ignore_ends: float) -> float:
    ignore_ends = float(ignore_ends)
    if not np.isfinite(ignore_ends) or ignore_ends < 0:
        raise ValueError(f"ignore_ends must be a number of seconds >= 0, got {ignore_ends}")
    return ignore_ends


def evaluate(
    pairs: Sequence[LabelPair | tuple[str | Path, str | Path]],
    labels: Sequence[str] | None = None,
    synonyms: dict[str, str] | None = None,
    ignore_ends: float = 0.0,
) -> EvaluationReport:
    """Compare (predicted .label, reference .label) pairs (paths, or `load_label_pairs`'s
    LabelPairs); see the module docstring.

    ignore_ends: s; reference steps less than this after the first or before the last time
    of their larva's reference track are not evaluated (0 = evaluate every step).
    Raises TrackDataError for unreadable label files or a pair that labels different track
    files, ValueError when nothing can be evaluated (no reference step carries a label of
    the set). Logs a warning for each pair whose prediction lacks larvae of its reference,
    and each of `EvaluationReport.warnings`.
    """
    ignore_ends = _checked_ignore_ends(ignore_ends)
    if not pairs:
        raise ValueError("no (predicted, reference) pair of label files given")
    tally = _tally(load_label_pairs(pairs), labels, synonyms, ignore_ends)
    for line in tally.absent:
        log.warning("%s", line)
    report = _report(tally)
    for message in report.warnings:
        log.warning("%s", message)
    return report


def _label_set(loaded: Sequence[LabelPair], labels: Sequence[str] | None, synonyms: dict[str, str]) -> _LabelSet:
    """`labels` when given, else the names the predictions use and those the references use
    that the tagger can predict (the module doc's "Label set"). ValueError for a name given twice."""
    predictable: dict[str, None] = {}
    for pair in loaded:
        predictable.update(dict.fromkeys(synonyms.get(n, n) for n in pair.predicted.names))
        predictable.update(dict.fromkeys(_used_names(pair.predicted, synonyms)))
    explicit = labels is not None
    if labels is None:
        names: dict[str, None] = {}
        for pair in loaded:
            names.update(dict.fromkeys(n for n in _used_names(pair.reference, synonyms) if n in predictable))
        for pair in loaded:
            names.update(dict.fromkeys(_used_names(pair.predicted, synonyms)))
        labels = list(names)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"label list {','.join(labels)} names a label twice")
    return _LabelSet(labels, predictable, explicit)


def _tally(loaded: Sequence[LabelPair], labels: Sequence[str] | None, synonyms: dict[str, str] | None,
           ignore_ends: float) -> _Tally:
    """Compare every pair (nothing logged: `evaluate` logs, `per_file_scores` stays quiet)."""
    synonyms = dict(synonyms or {})
    label_set = _label_set(loaded, labels, synonyms)
    n_labels = len(label_set.labels)
    tally = _Tally(label_set, synonyms, ignore_ends, np.zeros((n_labels, n_labels + 2), dtype=np.int64))
    for pair in loaded:
        _tally_pair(tally, pair)
    return tally


def _tally_pair(tally: _Tally, pair: LabelPair) -> None:
    """Add one pair's reference steps to the confusion matrix and counts, and its row of `files`."""
    index = tally.index
    missing = len(index) + 1
    before = tally.confusion.copy()
    here = _PairCounts()
    absent = []
    for larva, (ref_t, ref_steps) in pair.reference.tracks.items():
        ref_t = np.asarray(ref_t, dtype=np.float64)
        evaluated, in_set = _evaluated_steps(tally, here, index, ref_t, ref_steps)
        if not evaluated.any():
            continue
        entry = pair.predicted.tracks.get(larva)
        if entry is None:
            absent.append(larva)
        rows, cols = _confusion_cells(index, tally.synonyms, in_set, ref_t[evaluated], entry)
        np.add.at(tally.confusion, (rows, cols), 1)
    if absent:
        tally.absent.append(f"{Path(pair.predicted_path)}: {len(absent)} larva(e) of the reference "
                            f"{Path(pair.reference_path).name} have no prediction (ids "
                            + ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "") + ")")
    new = tally.confusion - before
    tally.n_ignored += here.ignored
    tally.n_foreign += here.foreign
    tally.n_at_ends += here.at_ends
    tally.files.append({"predicted": str(Path(pair.predicted_path)), "reference": str(Path(pair.reference_path)),
                        "n_steps": int(new.sum()), "n_correct": int(np.trace(new[:, :len(index)])),
                        "n_missing": int(new[:, missing].sum()), "n_foreign": here.foreign,
                        "n_at_ends": here.at_ends})


def _evaluated_steps(tally: _Tally, here: _PairCounts, index: dict[str, int], ref_t: np.ndarray,
                     ref_steps: list[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Which reference steps of one larva are evaluated, (n,) bool, and their labels in the set,
    (evaluated, K) bool. Counts the steps near a track end, the ignored and the foreign ones
    into `here`, and the foreign names into `tally.foreign_labels`."""
    ref_values, ref_codes = _step_codes(ref_steps)
    ref_in, ref_out = _masks(ref_values, index, tally.synonyms)
    in_set = ref_in[ref_codes]  # (n, K)
    kept = np.ones(ref_t.size, dtype=bool)
    if tally.ignore_ends > 0 and ref_t.size:
        slack = 1e-6  # s; a step exactly ignore_ends from an end is kept despite rounding
        kept = (ref_t - ref_t.min() >= tally.ignore_ends - slack) & (ref_t.max() - ref_t >= tally.ignore_ends - slack)
        here.at_ends += int((~kept).sum())
    evaluated = in_set.any(axis=1) & kept
    here.ignored += int((kept & ~evaluated).sum())
    foreign = ref_out[ref_codes] & kept & ~evaluated
    if foreign.any():
        here.foreign += int(foreign.sum())
        for code, count in enumerate(np.bincount(ref_codes[foreign], minlength=len(ref_values))):
            for name in dict.fromkeys(tally.synonyms.get(n, n) for n in ref_values[code]) if count else ():
                tally.foreign_labels[name] = tally.foreign_labels.get(name, 0) + int(count)
    return evaluated, in_set[evaluated]


def _confusion_cells(index: dict[str, int], synonyms: dict[str, str], in_set: np.ndarray, ref_t: np.ndarray,
                     entry: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each evaluated reference step of a larva (`in_set`: its labels in the
    set, `ref_t` its times) given the larva's prediction `entry` ((t, steps), None if absent):
    the module doc's "What is counted"."""
    other, missing = len(index), len(index) + 1
    rows = np.argmax(in_set, axis=1)  # first reference label in label-set order
    if entry is None:
        return rows, np.full(rows.size, missing)
    pred_t, pred_steps = entry
    pred_values, pred_codes = _step_codes(pred_steps)
    pred_in, pred_out = _masks(pred_values, index, synonyms)
    j = _match(ref_t, np.asarray(pred_t, dtype=np.float64))
    found = j >= 0
    p_in = np.zeros_like(in_set)
    p_in[found] = pred_in[pred_codes[j[found]]]
    p_out = np.zeros(rows.size, dtype=bool)
    p_out[found] = pred_out[pred_codes[j[found]]]
    agree = p_in & in_set
    hit = agree.any(axis=1)
    rows = np.where(hit, np.argmax(agree, axis=1), rows)
    cols = np.where(hit, rows, np.where(p_in.any(axis=1), np.argmax(p_in, axis=1), np.where(p_out, other, missing)))
    return rows, cols


def _warnings(tally: _Tally) -> list[str]:
    """The report's warnings (foreign reference labels, labels the tagger cannot predict);
    ValueError when no reference step could be evaluated."""
    label_set, foreign_labels = tally.label_set, tally.foreign_labels
    n_steps = int(tally.confusion.sum())
    outside = (f"outside the label set ({', '.join(label_set.labels)})" if label_set.explicit
               else f"the tagger does not predict (its labels: {', '.join(label_set.predictable) or 'none'})")
    foreign_text = ", ".join(f"{n}: {c}" for n, c in foreign_labels.items())
    hint = (_synonym_hint(list(foreign_labels), label_set.labels)
            + (" or add them to the labels" if label_set.explicit else ""))
    if n_steps == 0:
        if foreign_labels:
            raise ValueError(f"no reference time step can be evaluated: the reference's labels ({foreign_text} "
                             f"step(s)) are all labels {outside}; {hint}")
        raise ValueError(f"no reference time step carries any of the labels {', '.join(label_set.labels) or '(none)'} "
                         "(check --labels and --synonyms)")
    warnings = []
    if foreign_labels:
        warnings.append(f"{tally.n_foreign} of {n_steps + tally.n_foreign} labelled reference step(s) carry only "
                        f"labels {outside}: {foreign_text}; they are left out of the evaluation and of macro-F1; "
                        f"{hint}")
    if label_set.explicit:
        unpredictable = [n for n in label_set.labels if n not in label_set.predictable]
        if unpredictable:
            warnings.append(f"label(s) {', '.join(unpredictable)} are not declared by the predicted files: the "
                            "tagger cannot predict them, so their F1 is 0 and lowers macro-F1")
    return warnings


def _report(tally: _Tally) -> EvaluationReport:
    """The metrics of a finished tally (ValueError when nothing could be evaluated)."""
    tally.foreign_labels = dict(sorted(tally.foreign_labels.items(), key=lambda item: -item[1]))
    warnings = _warnings(tally)
    labels, confusion = tally.label_set.labels, tally.confusion
    scores = per_class_scores(confusion)
    per_label = {name: {"precision": float(scores.precision[k]), "recall": float(scores.recall[k]),
                        "f1": float(scores.f1[k]), "support": int(scores.support[k])}
                 for k, name in enumerate(labels)}
    return EvaluationReport(
        labels=labels,
        per_label=per_label,
        macro_f1=macro_f1(confusion),
        accuracy=accuracy(confusion),
        confusion=confusion,
        n_steps=int(confusion.sum()),
        files=tally.files,
        columns=labels + [OTHER, MISSING],
        n_missing=int(confusion[:, len(labels) + 1].sum()),
        n_ignored=tally.n_ignored,
        n_foreign=tally.n_foreign,
        foreign_labels=tally.foreign_labels,
        n_at_ends=tally.n_at_ends,
        ignore_ends=tally.ignore_ends,
        warnings=warnings,
    )


def format_confusion(report: EvaluationReport) -> str:
    """The confusion matrix as aligned text: rows = reference, columns = predicted counts.
    (other)/(missing) are shown only when they hold something (as in confusion.png)."""
    keep = report.shown_columns()
    corner = "reference \\ predicted"
    first = max([len(corner)] + [len(n) for n in report.labels])
    widths = [max(len(report.columns[c]), len(str(int(report.confusion[:, c].max(initial=0))))) for c in keep]
    lines = [f"{corner:<{first}}" + "".join(f"  {report.columns[c]:>{w}}" for c, w in zip(keep, widths))]
    for k, name in enumerate(report.labels):
        lines.append(f"{name:<{first}}" + "".join(f"  {report.confusion[k, c]:>{w}d}" for c, w in zip(keep, widths)))
    return "\n".join(lines)


def format_table(report: EvaluationReport) -> str:
    """Plain-text report: label, precision, recall, F1, support; macro-F1 and accuracy; the
    confusion matrix; then the warnings (one 'warning: ...' line each)."""
    width = max([len("label")] + [len(n) for n in report.labels])
    lines = [f"{'label':<{width}}  precision  recall      F1  support"]
    for name in report.labels:
        m = report.per_label[name]
        lines.append(f"{name:<{width}}  {m['precision']:>9.3f}  {m['recall']:>6.3f}  {m['f1']:>6.3f}  "
                     f"{m['support']:>7d}")
    ends = (f", {report.n_at_ends} within {report.ignore_ends:g} s of a track end not evaluated"
            if report.ignore_ends > 0 else "")
    lines.append(f"macro-F1 {report.macro_f1:.3f}   accuracy {report.accuracy:.3f}   "
                 f"({report.n_steps} steps, {report.n_missing} without prediction, "
                 f"{report.n_ignored} ignored: untagged in the reference or outside the label set{ends})")
    lines += ["", "confusion matrix (counts of reference steps)", format_confusion(report)]
    lines += [f"warning: {message}" for message in report.warnings]
    return "\n".join(lines)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


REPORT_FILES = ("metrics.json", "per_label.csv", "confusion.csv", "confusion.png")


def _is_report_folder(folder: Path) -> bool:
    """True when `folder/metrics.json` is an earlier report of ours (so its siblings are ours too)."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and {"macro_f1", "per_label", "confusion"} <= set(metrics)


def write_report(report: EvaluationReport, out_dir: str | Path) -> None:
    """Write metrics.json, per_label.csv, confusion.csv and confusion.png into `out_dir`.

    Files of those names are replaced only when they are an earlier report of ours (the
    folder's metrics.json is one): a user's file of the same name raises OutputExistsError
    before anything is written.
    """
    from maggotflow.atomic import make_dirs, refuse_foreign

    out_dir = Path(out_dir)
    ours = _is_report_folder(out_dir)
    for name in REPORT_FILES:
        refuse_foreign(out_dir / name, lambda _: ours)
    make_dirs(out_dir)
    write_text_atomic(out_dir / "metrics.json", json.dumps(report.to_dict(), indent=2) + "\n")
    rows = [["label", "precision", "recall", "f1", "support"]]
    rows += [[n, repr(m["precision"]), repr(m["recall"]), repr(m["f1"]), m["support"]]
             for n, m in report.per_label.items()]
    write_text_atomic(out_dir / "per_label.csv", _csv(rows))
    rows = [["reference \\ predicted"] + report.columns]
    rows += [[name] + report.confusion[k].tolist() for k, name in enumerate(report.labels)]
    write_text_atomic(out_dir / "confusion.csv", _csv(rows))
    _plot_confusion(report, out_dir / "confusion.png")


def _plot_confusion(report: EvaluationReport, path: Path) -> None:
    """Counts annotated; colour = share of the reference row (so rare labels stay readable)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_labels = len(report.labels)
    keep = report.shown_columns()
    counts = report.confusion[:, keep]
    totals = report.confusion.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = Figure(figsize=(2.5 + 0.75 * len(keep), 1.8 + 0.6 * n_labels), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_labels):
        for j in range(len(keep)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(keep)), [report.columns[c] for c in keep], rotation=45, ha="right")
    ax.set_yticks(range(n_labels), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"macro-F1 {report.macro_f1:.3f}, accuracy {report.accuracy:.3f}, {report.n_steps} steps",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="share of reference row")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def pair_directories(predicted_dir: str | Path, reference_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every `.label` under `reference_dir` with the predicted file at the same relative
    path under `predicted_dir`, else with the only predicted file of the same name, else
    with the only one of those that names the same track file (sha1 in `dependencies`;
    e.g. many `trx.label`). ValueError lists reference files without a (unique) prediction.
    (`evaluate` then checks every pair's track file.)"""
    from maggotflow.formats.label import read_label_file

    sha1s: dict[Path, set[str]] = {}

    def track_sha1s(path: Path) -> set[str]:
        if path not in sha1s:
            sha1s[path] = {s for _, s in _track_files(read_label_file(path))}
        return sha1s[path]

    predicted_dir, reference_dir = Path(predicted_dir), Path(reference_dir)
    for d in (predicted_dir, reference_dir):
        if not d.is_dir():
            raise TrackDataError(d, "is not a directory")
    references = sorted(reference_dir.rglob("*.label"))
    if not references:
        raise TrackDataError(reference_dir, "holds no .label file")
    by_name: dict[str, list[Path]] = {}
    for p in sorted(predicted_dir.rglob("*.label")):
        by_name.setdefault(p.name, []).append(p)
    pairs, unmatched = [], []
    for ref in references:
        same = predicted_dir / ref.relative_to(reference_dir)
        if same.is_file():
            pairs.append((same, ref))
        elif len(by_name.get(ref.name, [])) == 1:
            pairs.append((by_name[ref.name][0], ref))
        else:
            same_track = [p for p in by_name.get(ref.name, []) if track_sha1s(p) & track_sha1s(ref)]
            if len(same_track) == 1:
                pairs.append((same_track[0], ref))
            else:
                unmatched.append(ref)
    if unmatched:
        raise ValueError(f"{len(unmatched)} reference file(s) have no matching prediction in {predicted_dir} "
                         f"(first: {unmatched[0]})")
    return pairs


# ---------------------------------------------------------------------------- per file, per behaviour


def per_file_scores(
    pairs: Sequence[LabelPair | tuple[str | Path, str | Path]],
    labels: Sequence[str] | None = None,
    synonyms: dict[str, str] | None = None,
    ignore_ends: float = 0.0,
) -> list[dict[str, Any]]:
    """Each pair evaluated alone (as `evaluate` on that pair, same settings): one dict per pair,
    in order: predicted, reference, n_steps, macro_f1, accuracy (None when the file has no
    evaluable step). Nothing is logged: the warnings of the whole evaluation are not repeated
    per file (pass `load_label_pairs`'s pairs, read and checked once, as `evaluate` got them)."""
    ignore_ends = _checked_ignore_ends(ignore_ends)
    rows = []
    for pair in load_label_pairs(pairs):
        try:
            one = _report(_tally([pair], labels, synonyms, ignore_ends))
            scores = {"n_steps": one.n_steps, "macro_f1": one.macro_f1, "accuracy": one.accuracy}
        except ValueError:
            scores = {"n_steps": 0, "macro_f1": None, "accuracy": None}
        rows.append({"predicted": str(pair.predicted_path), "reference": str(pair.reference_path), **scores})
    return rows


def compare_behaviour(
    report: EvaluationReport,
    pairs: Sequence[LabelPair | tuple[str | Path, str | Path]],
    synonyms: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Predicted vs reference time budget and bouts of each behaviour of `report.labels`.

    Time fraction: share of the evaluated reference steps whose reference label (resp.
    predicted label) is the behaviour (the confusion matrix's row and column sums, so the
    same steps as every other figure). Bouts (`maggotflow.bouts`, as in the screen summary:
    a step's behaviour is its first name in the label set after `synonyms`, an untagged
    step or a time gap ends a bout) in whole tracks, of the larvae the reference labels
    (predicted larvae it does not label are not compared); duration in s.
    Returns (one row per label: label, reference_fraction, predicted_fraction,
    reference_bouts, predicted_bouts, reference_median_bout_s, predicted_median_bout_s) and
    {label: {"reference": [durations], "predicted": [durations]}}.
    """
    synonyms = dict(synonyms or {})
    index = {name: k for k, name in enumerate(report.labels)}

    def code_of(name: str) -> int | None:
        return index.get(synonyms.get(name, name))

    durations = {name: {"reference": [], "predicted": []} for name in report.labels}
    for pair in load_label_pairs(pairs):
        for larva, (ref_t, ref_steps) in pair.reference.tracks.items():
            sides = [("reference", ref_t, ref_steps)]
            if larva in pair.predicted.tracks:
                sides.append(("predicted", *pair.predicted.tracks[larva]))
            for side, t, steps in sides:
                bouts = find_bouts(t, step_codes(steps, code_of))
                for code, seconds in zip(bouts.code.tolist(), bouts.duration_s.tolist()):
                    durations[report.labels[code]][side].append(seconds)
    n = max(report.n_steps, 1)
    rows = []
    for k, name in enumerate(report.labels):
        ref_d, pred_d = durations[name]["reference"], durations[name]["predicted"]
        rows.append({
            "label": name,
            "reference_fraction": float(report.confusion[k].sum()) / n,
            "predicted_fraction": float(report.confusion[:, k].sum()) / n,
            "reference_bouts": len(ref_d),
            "predicted_bouts": len(pred_d),
            "reference_median_bout_s": float(np.median(ref_d)) if ref_d else None,
            "predicted_median_bout_s": float(np.median(pred_d)) if pred_d else None,
        })
    return rows, durations


def _tsv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A table's text (`maggotflow.tsv`: a file name with a tab or a line break stays one
    cell); floats with 6 significant digits, None empty."""

    def cell(value):
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    return tsv.format_rows(columns, ([cell(row.get(c)) for c in columns] for row in rows))


PER_FILE_COLUMNS = ("predicted", "reference", "n_steps", "macro_f1", "accuracy")
BEHAVIOUR_COLUMNS = ("label", "reference_fraction", "predicted_fraction", "reference_bouts", "predicted_bouts",
                     "reference_median_bout_s", "predicted_median_bout_s")


def write_per_file(rows: list[dict[str, Any]], path: str | Path) -> None:
    """per_file.tsv: one row per held-out file (`per_file_scores`)."""
    write_text_atomic(path, _tsv(rows, PER_FILE_COLUMNS))


def write_behaviour(rows: list[dict[str, Any]], durations: dict[str, dict[str, list[float]]],
                    tsv_path: str | Path, png_path: str | Path) -> None:
    """behaviour.tsv (`compare_behaviour` rows) and behaviour.png: time fraction per
    behaviour (bars) and bout durations (box plots), reference beside predicted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    write_text_atomic(tsv_path, _tsv(rows, BEHAVIOUR_COLUMNS))
    names = [r["label"] for r in rows]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(7.0, 1.1 * len(names) + 2), 6.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    colors = {"reference": "#7f7f7f", "predicted": "#1f77b4"}
    for shift, side in ((-0.2, "reference"), (0.2, "predicted")):
        top.bar(x + shift, [r[f"{side}_fraction"] for r in rows], width=0.38, color=colors[side], label=side)
        data = [durations[n][side] or [np.nan] for n in names]
        box = bottom.boxplot(data, positions=x + shift, widths=0.34, patch_artist=True, showfliers=False,
                             manage_ticks=False)
        for patch in box["boxes"]:
            patch.set_facecolor(colors[side])
            patch.set_alpha(0.7)
        for median in box["medians"]:
            median.set_color("black")
    top.set_ylabel("share of evaluated steps")
    top.set_title("time in each behaviour, reference vs predicted (held-out files)", fontsize=10)
    fig.legend(*top.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    bottom.set_ylabel("bout duration (s)")
    bottom.set_title("bout durations (box: quartiles, whiskers: 1.5 IQR)", fontsize=10)
    bottom.set_xticks(x, names, rotation=30, ha="right")
    for ax in (top, bottom):
        ax.grid(True, axis="y", alpha=0.3)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


# ---------------------------------------------------------------------------- a prediction run's evaluation


EVALUATION_FILES = (*REPORT_FILES, "table.txt", "per_file.tsv", "behaviour.tsv", "behaviour.png")


def run_pairs(summary: str | Path, references: Mapping[str, str]) -> list[tuple[str, str]]:
    """(predicted, reference) `.label` paths of the files a prediction run tagged (the `ok`
    rows of its summary.tsv, `maggotflow.runtables`; `references`: file id -> reference label),
    sorted by reference path. A file the run did not tag is left out with a warning."""
    from maggotflow.runtables import read_shard_table

    pairs = []
    for row in read_shard_table(summary):
        if row["status"] == "ok":
            pairs.append((row["label"], references[row["id"]]))
        else:
            log.warning("%s: not tagged, left out of the evaluation", row["path"])
    return sorted(pairs, key=lambda pair: pair[1])


def write_evaluation(pairs: Sequence[LabelPair | tuple[str | Path, str | Path]], out_dir: str | Path, *,
                     labels: Sequence[str] | None = None, synonyms: dict[str, str] | None = None,
                     ignore_ends: float = 0.0) -> EvaluationReport:
    """Evaluate `pairs` (each file read once) and write `EVALUATION_FILES` into `out_dir`: the
    report (`write_report`), table.txt (`format_table`), per_file.tsv (`per_file_scores`),
    behaviour.tsv and behaviour.png (`compare_behaviour`). Returns the report."""
    out_dir = Path(out_dir)
    loaded = load_label_pairs(pairs)
    report = evaluate(loaded, labels=labels, synonyms=synonyms, ignore_ends=ignore_ends)
    write_report(report, out_dir)
    write_per_file(per_file_scores(loaded, labels=labels, synonyms=synonyms, ignore_ends=ignore_ends),
                   out_dir / "per_file.tsv")
    write_behaviour(*compare_behaviour(report, loaded, synonyms=synonyms), out_dir / "behaviour.tsv",
                    out_dir / "behaviour.png")
    write_text_atomic(out_dir / "table.txt", format_table(report) + "\n")
    return report
