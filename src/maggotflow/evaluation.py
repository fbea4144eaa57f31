"""Evaluation: predicted vs reference `.label` files -> per-label metrics and a confusion matrix.

Matching
    Files are compared in pairs (predicted, reference). Within a pair, steps are matched by
    larva id and time: a reference step is matched to the predicted step of the same larva
    whose time is within 1 ms (`TIME_TOLERANCE`, the precision of `.label` times).

What is counted (one row of the confusion matrix per evaluated reference step)
    - Label names of both files go through `synonyms` first (name in file -> task name).
    - Reference steps that are untagged, or whose labels are all outside the label set, are
      ignored (counted in `n_ignored`). Predicted larvae or steps that the reference does
      not cover are ignored too (the reference cannot judge them).
    - A reference step with several labels counts as correct if the prediction is one of
      them; its row is then that label, otherwise its first label in label-set order.
      (The same rule picks among several predicted labels.)
    - A reference step without a prediction (larva absent from the predicted file, no
      predicted step within 1 ms, or a predicted step left untagged) counts as an error in
      the column "(missing)"; a prediction whose names are all outside the label set
      (possible only with an explicit label list) goes to the column "(other)". The
      confusion matrix is therefore (K, K + 2): rows = reference labels, columns = the K
      predicted labels, "(other)", "(missing)".

Metrics (sklearn-like, zero_division=0)
    precision_k = C[k, k] / (column k sum), recall_k = C[k, k] / (row k sum, which includes
    missing and other predictions), F1_k = 2 P R / (P + R); any 0/0 is 0. support_k = row
    k sum. accuracy = trace / evaluated steps. macro-F1 = unweighted mean of F1 over the
    labels with support > 0: a label the reference never uses has nothing to recall, so it
    is reported (its wrong predictions lower the recall of the true labels and the
    accuracy) but does not enter the mean. (sklearn's default would average it in as 0.)

Label set: `labels` when given, else every name used in the reference files (declaration
order, pairs in order), then names used only in the predictions.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from maggotflow.atomic import atomic_path, write_text_atomic
from maggotflow.tracks import TrackDataError

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
    the label set. files: one dict per pair (paths, n_steps, n_correct, n_missing).
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "n_steps": self.n_steps,
            "n_missing": self.n_missing,
            "n_ignored": self.n_ignored,
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


def _masks(values: list[tuple[str, ...]], index: dict[str, int], synonyms: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
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


def evaluate(
    pairs: Sequence[tuple[str | Path, str | Path]],
    labels: Sequence[str] | None = None,
    synonyms: dict[str, str] | None = None,
) -> EvaluationReport:
    """Compare (predicted .label, reference .label) pairs; see the module docstring.

    Raises TrackDataError for unreadable label files, ValueError when nothing can be
    evaluated (no reference step carries a label of the set).
    """
    from maggotflow.formats.label import read_label_file

    synonyms = dict(synonyms or {})
    if not pairs:
        raise ValueError("no (predicted, reference) pair of label files given")
    loaded = [(Path(p), read_label_file(p), Path(r), read_label_file(r)) for p, r in pairs]
    if labels is None:
        names: dict[str, None] = {}
        for _, _, _, ref in loaded:
            names.update(dict.fromkeys(_used_names(ref, synonyms)))
        for _, pred, _, _ in loaded:
            names.update(dict.fromkeys(_used_names(pred, synonyms)))
        labels = list(names)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"label list {','.join(labels)} names a label twice")
    index = {name: k for k, name in enumerate(labels)}
    n_labels = len(labels)
    other, missing = n_labels, n_labels + 1
    confusion = np.zeros((n_labels, n_labels + 2), dtype=np.int64)
    files, n_ignored = [], 0

    for pred_path, pred, ref_path, ref in loaded:
        before = confusion.copy()
        ignored_here = 0
        absent = []
        for larva, (ref_t, ref_steps) in ref.tracks.items():
            ref_values, ref_codes = _step_codes(ref_steps)
            ref_in, _ = _masks(ref_values, index, synonyms)
            in_set = ref_in[ref_codes]  # (n, K)
            evaluated = in_set.any(axis=1)
            ignored_here += int((~evaluated).sum())
            if not evaluated.any():
                continue
            in_set = in_set[evaluated]
            rows = np.argmax(in_set, axis=1)  # first reference label in label-set order
            cols = np.full(rows.size, missing)
            entry = pred.tracks.get(larva)
            if entry is None:
                absent.append(larva)
            else:
                pred_t, pred_steps = entry
                pred_values, pred_codes = _step_codes(pred_steps)
                pred_in, pred_out = _masks(pred_values, index, synonyms)
                j = _match(np.asarray(ref_t, dtype=np.float64)[evaluated], np.asarray(pred_t, dtype=np.float64))
                found = j >= 0
                p_in = np.zeros_like(in_set)
                p_in[found] = pred_in[pred_codes[j[found]]]
                p_out = np.zeros(rows.size, dtype=bool)
                p_out[found] = pred_out[pred_codes[j[found]]]
                agree = p_in & in_set
                hit = agree.any(axis=1)
                rows = np.where(hit, np.argmax(agree, axis=1), rows)
                cols = np.where(hit, rows, np.where(p_in.any(axis=1), np.argmax(p_in, axis=1),
                                                    np.where(p_out, other, missing)))
            np.add.at(confusion, (rows, cols), 1)
        if absent:
            log.warning("%s: %d larva(e) of the reference %s have no prediction (ids %s)", pred_path,
                        len(absent), ref_path.name, ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))
        here = confusion - before
        n_ignored += ignored_here
        files.append({"predicted": str(pred_path), "reference": str(ref_path), "n_steps": int(here.sum()),
                      "n_correct": int(np.trace(here[:, :n_labels])), "n_missing": int(here[:, missing].sum())})

    n_steps = int(confusion.sum())
    if n_steps == 0:
        raise ValueError(f"no reference time step carries any of the labels {', '.join(labels) or '(none)'} "
                         "(check --labels and --synonyms)")
    per_label, f1s = {}, []
    for k, name in enumerate(labels):
        tp = int(confusion[k, k])
        predicted = int(confusion[:, k].sum())
        support = int(confusion[k].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support:
            f1s.append(f1)
    return EvaluationReport(
        labels=labels,
        per_label=per_label,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        accuracy=float(np.trace(confusion[:, :n_labels])) / n_steps,
        confusion=confusion,
        n_steps=n_steps,
        files=files,
        columns=labels + [OTHER, MISSING],
        n_missing=int(confusion[:, missing].sum()),
        n_ignored=n_ignored,
    )


def format_table(report: EvaluationReport) -> str:
    """Plain-text table: label, precision, recall, F1, support; then macro-F1 and accuracy."""
    width = max([len("label")] + [len(n) for n in report.labels])
    lines = [f"{'label':<{width}}  precision  recall      F1  support"]
    for name in report.labels:
        m = report.per_label[name]
        lines.append(f"{name:<{width}}  {m['precision']:>9.3f}  {m['recall']:>6.3f}  {m['f1']:>6.3f}  {m['support']:>7d}")
    lines.append(f"macro-F1 {report.macro_f1:.3f}   accuracy {report.accuracy:.3f}   "
                 f"({report.n_steps} steps, {report.n_missing} without prediction, "
                 f"{report.n_ignored} ignored: untagged in the reference or outside the label set)")
    return "\n".join(lines)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_report(report: EvaluationReport, out_dir: str | Path) -> None:
    """Write metrics.json, per_label.csv, confusion.csv and confusion.png into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    # The (other)/(missing) columns are drawn only when they hold something.
    keep = list(range(n_labels)) + [c for c in (n_labels, n_labels + 1) if report.confusion[:, c].any()]
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


# ----------------------------------------------------------------------------- command line


def pair_directories(predicted_dir: str | Path, reference_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every `.label` under `reference_dir` with the predicted file at the same relative
    path under `predicted_dir`, else with the only predicted file of the same name.
    ValueError lists reference files without a (unique) prediction."""
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
            unmatched.append(ref)
    if unmatched:
        raise ValueError(f"{len(unmatched)} reference file(s) have no matching prediction in {predicted_dir} "
                         f"(first: {unmatched[0]})")
    return pairs


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predicted", nargs="+", metavar="LABEL", help="predicted .label files")
    parser.add_argument("--reference", nargs="+", metavar="LABEL",
                        help="reference .label files, paired with --predicted by position")
    parser.add_argument("--predicted-dir", help="folder of predicted .label files")
    parser.add_argument("--reference-dir", help="folder of reference .label files, paired by relative path "
                                                "(or by file name when unique)")
    parser.add_argument("--out", help="folder for metrics.json, per_label.csv, confusion.csv, confusion.png")
    parser.add_argument("--labels", help="comma-separated labels to evaluate (default: all found)")
    parser.add_argument("--synonyms", action="append",
                        help="name_in_file=task_name pairs or a preset (see `maggotflow dataset --help`)")


def run_command(args: argparse.Namespace) -> int:
    import sys

    from maggotflow.dataset import parse_names, parse_synonyms

    try:
        by_files = args.predicted is not None or args.reference is not None
        by_dirs = args.predicted_dir is not None or args.reference_dir is not None
        if by_files == by_dirs:
            raise ValueError("give either --predicted and --reference files, or --predicted-dir and --reference-dir")
        if by_files:
            if not args.predicted or not args.reference or len(args.predicted) != len(args.reference):
                raise ValueError(f"--predicted and --reference need the same number of files "
                                 f"({len(args.predicted or [])} and {len(args.reference or [])} given)")
            pairs = list(zip(args.predicted, args.reference))
        else:
            if not args.predicted_dir or not args.reference_dir:
                raise ValueError("--predicted-dir and --reference-dir go together")
            pairs = pair_directories(args.predicted_dir, args.reference_dir)
        report = evaluate(pairs, labels=parse_names(args.labels), synonyms=parse_synonyms(args.synonyms))
    except TrackDataError:
        raise  # printed by the CLI
    except ValueError as err:
        print(f"maggotflow evaluate: error: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        write_report(report, args.out)
        log.info("report written to %s", args.out)
    return 0
