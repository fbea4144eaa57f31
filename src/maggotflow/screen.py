"""Screen summary: behaviour fractions, bouts and transitions of many `.label` files, by group.

A lab tags thousands of files (one per video) to compare genotypes, effectors and
protocols. `summarize(labels, out_dir)` reads each `.label` file once (maggotflow's
predictions or LarvaTagger's own files), groups its larvae by metadata (default
genotype, effector, protocol, tracker) and writes to `out_dir`:

    per_larva.tsv      file, larva, metadata, domain_check, duration_s, labelled_s, behaviour,
                       fraction, time_s, bouts, mean_bout_s, median_bout_s (one row per
                       larva x behaviour)
    per_file.tsv       the same per file (time pooled over the file's larvae), with larvae
                       and the file's head/tail decision (spine_order ... columns, see below)
    groups.tsv         per group x behaviour: files, files_unlike_training, larvae, per-larva
                       fraction mean, sd, median, q25, q75, pooled fraction, bouts,
                       bouts_per_min, mean and median bout duration; group "all" pools every
                       file
    transitions.tsv    per group (and "all"): from, to, count, probability (row-normalised)
    failed.tsv         label files that could not be read: file, problem (header only if none)
    fraction_by_group.png, bout_durations.png, transitions.png   (unless plots=False)

Definitions (what a lab needs to know to read the tables):

- Steps, bouts and transitions are those of `maggotflow.bouts` (the evaluation's and the
  ethograms' too): a step's behaviour is the first name of its label (a step labelled
  ["run", "hunch"] counts as run); an untagged step (`[]`) is unlabelled and counts for no
  behaviour. A step lasts until the next step, at most 2x the median interval (so a
  tracking gap does not inflate the behaviour around it); the last step of a track lasts
  the track's median interval. A bout is a run of consecutive steps with the same
  behaviour; an unlabelled step or a time gap (an interval over 2x the median) ends it; the
  first and last bouts of a track are cut by its ends and are counted as they are. A
  transition is a bout followed directly by a bout of another behaviour in the same larva
  (nothing across unlabelled steps or time gaps).
- `duration_s` = last - first time + one median interval; `labelled_s` = summed (capped)
  durations of labelled steps; `fraction` = time_s / labelled_s (empty when nothing is
  labelled). A transition's probability = count / all transitions out of `from`
  (self-transitions cannot occur, so none are counted).
- A behaviour's group statistics count the larvae of the files that declare the behaviour
  (a 6-label tagger's files do not count as 0 % small_motion).
- domain_check: the verdict of maggotflow's domain check recorded in the label
  (`metadata.maggotflow.domain_check`, `maggotflow.domain`): `ok` or `unlike_training` for
  the file; for a larva, `unlike_training` when its relative score is above 1; empty when
  the label has no verdict (not checked, or not a prediction of maggotflow's).
  files_unlike_training counts the files judged unlike the tagger's training data, whose
  labels may be unreliable; `ScreenSummary.unlike_training` counts them over all files.
- spine_order, spine_order_decided_by, spine_order_evidence, spine_order_forward_fraction,
  spine_order_moving_s, spine_order_moving_steps, spine_order_head_sweep_ratio (per_file.tsv;
  `maggotflow.runtables.ORIENTATION_COLUMNS`): which end of the spine the reader took as the
  head of the file's larvae and how it was decided (`maggotflow.orientation`: `motion`,
  `convention`, `configured` or `file`; the evidence `supports`, `contradicts`, `disagree`
  or `weak`), as the label's metadata records it; empty when it records none (LarvaTagger's
  own labels). A file read head first by convention or contradicted by the motion may have
  head and tail swapped: its forward crawling then looks like backing up.

Bounded memory: files are read one at a time; per_larva/per_file rows are written as each
file is read (to a temporary name, renamed at the end, see `maggotflow.atomic`). Group
statistics are running sums plus fixed-bin histograms, so memory grows with groups x
behaviours, never with the number of files. Medians and quartiles therefore come from
histograms: per-larva fractions in 200 bins on [0, 1] (resolution 0.005; exact zeros are
kept apart, so a behaviour absent from most larvae has median 0 exactly), bout durations in
log-spaced bins from 0.01 s to 1000 s, 50 per decade (resolution ~5 %); values are
interpolated within a bin and clipped to the observed range. Means and sds are exact. The
strip of dots in `fraction_by_group.png` is a random sample of at most 300 larvae per group
and behaviour (reservoir sampling), the box is the histogram quartiles.

Numbers are written with 4 significant digits (times >= 1000 s as whole seconds). The
tables are written by `maggotflow.tsv`: a file name with a tab, a line break or a quote is
one quoted cell, so every file is one row (read them with `maggotflow.tsv.read_rows`,
pandas or any csv reader, not by splitting lines).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TextIO

import numpy as np

from maggotflow import progress as progress_records
from maggotflow import tsv
from maggotflow.atomic import atomic_path
from maggotflow.bouts import Bouts, find_bouts, step_codes, step_durations
from maggotflow.formats.label import PROVENANCE_KEY
from maggotflow.runtables import (DOMAIN_CHECK_KEY, DOMAIN_VERDICTS, ORIENTATION_COLUMNS, UNLIKE_TRAINING,
                                  orientation_cells)
from maggotflow.tracks import METADATA_COLUMNS, TrackDataError, usual_interval

log = logging.getLogger(__name__)

DEFAULT_GROUP_BY = ("genotype", "effector", "protocol", "tracker")
ALL_GROUP = "all"
UNKNOWN = "unknown"
FRACTION_BINS = 200
BOUT_MIN_S, BOUT_MAX_S, BOUT_BINS_PER_DECADE = 0.01, 1000.0, 50
STRIP_SAMPLE = 300  # larvae per group x behaviour shown as dots
MAX_PLOTTED_GROUPS = 12
LOG_EVERY_S = 5.0

_BOUT_EDGES = np.logspace(math.log10(BOUT_MIN_S), math.log10(BOUT_MAX_S),
                          int(round(math.log10(BOUT_MAX_S / BOUT_MIN_S) * BOUT_BINS_PER_DECADE)) + 1)
_LOG_EDGES = np.log10(_BOUT_EDGES)
_N_BOUT_BINS = _BOUT_EDGES.size - 1

TABLES = ("per_larva", "per_file", "groups", "transitions", "failed")
PLOTS = ("fraction_by_group", "bout_durations", "transitions")


@dataclass
class ScreenSummary:
    """What `summarize` did. tables/plots: name (e.g. "groups") -> path written."""

    out_dir: Path
    files: int  # label files summarised
    larvae: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label path, one-line problem)
    unlike_training: int = 0  # files whose domain check says unlike the training data (see module doc)
    behaviours: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # group names, as in groups.tsv
    tables: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- numbers


def format_number(x: float | int | None) -> str:
    """A table cell: ints as ints, floats with 4 significant digits, NaN/None empty."""
    if x is None:
        return ""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return ""
    if abs(x) >= 1000:
        return str(int(round(x)))
    text = f"{x:.4g}"
    return "0" if text in ("-0", "0") else text


def _cell(value) -> str:
    """Text as it is (a file name keeps its tabs and line breaks: `_line` quotes them), numbers
    by `format_number`."""
    return value if isinstance(value, str) else format_number(value)


def _line(values) -> str:
    """One record of a table (`maggotflow.tsv`: one writer for every TSV table)."""
    return tsv.format_line([_cell(v) for v in values])


# ----------------------------------------------------------------------------- metadata


def _track_metadata(track: Path) -> dict[str, str]:
    from maggotflow.manifest import path_metadata

    fmt = "trx" if track.suffix.lower() == ".mat" else "spine"
    return path_metadata(track, fmt)


def label_metadata(path: str | Path, header: Mapping | None = None,
                   dependencies: Sequence[Mapping] | None = None) -> dict[str, str]:
    """tracker, genotype, effector, protocol, date_time of a `.label` file ("" if unknown).

    Each key from the first source that knows it: the label file's own metadata header
    (maggotflow writes the track file's metadata there), the track file it depends on
    (`dependencies` filename, taken to lie beside the label file, as predictions and
    LarvaTagger files do: Choreography name `date_time@genotype@effector@tracker@protocol@...`
    or the trx.mat folder `<tracker>/<genotype>@<effector>/<protocol>/<date_time>/`), then
    the label file's own path (`X.label`, `X.predicted.label`, `trx.label`, `predicted.label`).
    """
    path = Path(path)
    sources: list[Mapping] = []
    if header:
        sources.append({k: str(v) for k, v in header.items() if isinstance(v, (str, int, float)) and str(v)})
    for dep in dependencies or ():
        name = dep.get("filename") if isinstance(dep, Mapping) else None
        if isinstance(name, str) and name:
            sources.append(_track_metadata(path.parent / Path(name).name))
    name = path.name
    if name in ("trx.label", "predicted.label"):
        own = path.with_name("trx.mat")
    else:
        for suffix in (".predicted.label", ".label"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        own = path.with_name(name + ".spine")
    sources.append(_track_metadata(own))
    out: dict[str, str] = {}
    for source in sources:
        for key, value in source.items():
            if value and not out.get(key):
                out[key] = str(value)
    return out


def manifest_metadata(manifest: str | Path, labels: Iterable[str | Path]) -> dict[str, dict[str, str]]:
    """The `metadata` argument of `summarize` from a manifest TSV (`maggotflow.manifest`).

    A label file is matched to a manifest row by, in turn: the row's `label` column, the
    exported prediction beside the track file (`exported_label_path`), the mirrored
    relative path of a prediction run (`<run>/<relpath with .label>`), or the label file's
    `dependencies` naming a track file in the same folder as the row's path. Unmatched
    label files are left out (their metadata is then derived by `label_metadata`).
    """
    from maggotflow.formats.label import header_value
    from maggotflow.manifest import read_manifest
    from maggotflow.names import exported_label_path, mirrored_label_path

    rows = read_manifest(manifest).rows
    by_path: dict[str, dict[str, str]] = {}
    by_relpath: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        for candidate in (row.get("label"), str(exported_label_path(row["path"])), row["path"]):
            if candidate:
                by_path.setdefault(os.path.normpath(os.path.abspath(candidate)), row)
        by_relpath.setdefault(Path(mirrored_label_path(row["relpath"])).parts, row)
    keys = tuple(dict.fromkeys((*METADATA_COLUMNS, *(k for r in rows[:1] for k in r))))
    out: dict[str, dict[str, str]] = {}
    for label in labels:
        absolute = os.path.normpath(os.path.abspath(label))
        row = by_path.get(absolute)
        if row is None:
            parts = Path(absolute).parts
            row = next((by_relpath[parts[i:]] for i in range(len(parts)) if parts[i:] in by_relpath), None)
        if row is None:
            deps = header_value(label, "dependencies")
            for dep in deps if isinstance(deps, list) else [deps]:
                if isinstance(dep, dict) and dep.get("filename"):
                    row = by_path.get(os.path.join(os.path.dirname(absolute), str(dep["filename"])))
                    if row is not None:
                        break
        if row is not None:
            out[str(label)] = {k: row.get(k, "") for k in keys
                               if k not in ("id", "path", "relpath", "format", "size", "label")}
    return out


# ----------------------------------------------------------------------------- per larva


@dataclass
class _Larva:
    """One larva's statistics: its length, its time in each behaviour and its bouts."""

    duration_s: float
    labelled_s: float
    time_s: np.ndarray  # per behaviour index
    bouts: Bouts


def _larva(t: np.ndarray, codes: np.ndarray, n_behaviours: int) -> _Larva:
    """Statistics of one larva: `codes` = behaviour index per step, -1 = unlabelled; steps and
    bouts as `maggotflow.bouts` defines them."""
    t = np.asarray(t, dtype=np.float64)
    bouts = find_bouts(t, codes)
    if t.size == 0:
        return _Larva(0.0, 0.0, np.zeros(n_behaviours), bouts)
    step_s = step_durations(t)
    labelled = codes >= 0
    time_s = np.bincount(codes[labelled], weights=step_s[labelled], minlength=n_behaviours)
    return _Larva(float(t[-1] - t[0] + usual_interval(t)), float(time_s.sum()), time_s, bouts)


def _bout_stats(codes: np.ndarray, durations: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per behaviour index: bout count, mean and median duration (NaN without bouts)."""
    counts = np.bincount(codes, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=durations, minlength=n) / counts
    median = np.full(n, np.nan)
    if codes.size:
        order = np.lexsort((durations, codes))
        ends = np.cumsum(counts)
        for b in np.flatnonzero(counts):
            d = durations[order[ends[b] - counts[b]: ends[b]]]
            k = d.size
            median[b] = d[k // 2] if k % 2 else 0.5 * (d[k // 2 - 1] + d[k // 2])
    return counts, mean, median


# ----------------------------------------------------------------------------- group aggregates


class _Histogram:
    """Running count/sum/sum of squares/min/max and fixed-bin histogram of one quantity."""

    def __init__(self, edges: np.ndarray, log_scale: bool):
        self.edges, self.log_scale = edges, log_scale
        self.counts = np.zeros(edges.size - 1, dtype=np.int64)
        self.zeros = 0  # exact zeros, kept apart from the first bin
        self.n, self.total, self.total2 = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            return
        self.n += values.size
        self.total += float(values.sum())
        self.total2 += float(np.dot(values, values))
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        zero = values <= 0
        self.zeros += int(zero.sum())
        values = values[~zero]
        scale = np.log10(values) if self.log_scale else values
        edges = np.log10(self.edges) if self.log_scale else self.edges
        index = np.clip(np.searchsorted(edges, scale, side="right") - 1, 0, self.counts.size - 1)
        self.counts += np.bincount(index, minlength=self.counts.size)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def sd(self) -> float:
        if self.n < 2:
            return math.nan
        var = (self.total2 - self.total * self.total / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def quantile(self, q: float) -> float:
        """Interpolated within a bin, clipped to the observed range (see module doc)."""
        if not self.n:
            return math.nan
        target = q * self.n
        if target <= self.zeros and self.zeros:
            return 0.0
        cum = self.zeros + np.cumsum(self.counts)
        i = min(int(np.searchsorted(cum, target, side="left")), self.counts.size - 1)
        before = cum[i] - self.counts[i]
        within = (target - before) / self.counts[i] if self.counts[i] else 0.5
        edges = np.log10(self.edges) if self.log_scale else self.edges
        value = edges[i] + within * (edges[i + 1] - edges[i])
        value = 10 ** value if self.log_scale else value
        return float(min(max(value, self.lo), self.hi))

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(upper bin edges, fraction of values <= edge) for an ECDF plot."""
        cum = self.zeros + np.cumsum(self.counts)
        return self.edges[1:], cum / max(self.n, 1)


class _Cell:
    """Aggregates of one group x behaviour."""

    def __init__(self, rng: np.random.Generator):
        self.files = 0
        self.unlike_files = 0  # of them, judged unlike the tagger's training data
        self.fraction = _Histogram(np.linspace(0.0, 1.0, FRACTION_BINS + 1), log_scale=False)
        self.bouts = _Histogram(_BOUT_EDGES, log_scale=True)
        self.time_s = 0.0
        self.labelled_s = 0.0
        self.sample: list[float] = []  # reservoir of per-larva fractions for the strip plot
        self.seen = 0
        self.rng = rng

    def add_fractions(self, values: np.ndarray) -> None:
        self.fraction.add(values)
        for v in values[np.isfinite(values)].tolist():
            self.seen += 1
            if len(self.sample) < STRIP_SAMPLE:
                self.sample.append(v)
            else:
                j = int(self.rng.integers(self.seen))
                if j < STRIP_SAMPLE:
                    self.sample[j] = v


class _Group:
    def __init__(self, values: tuple[str, ...]):
        self.values = values
        self.files = 0
        self.larvae = 0
        self.cells: dict[str, _Cell] = {}
        self.transitions: dict[tuple[str, str], int] = {}


# ----------------------------------------------------------------------------- one summary's state


@dataclass
class _Screen:
    """A summary while its files are read: the tables' columns, the behaviours seen (name ->
    index, in order of appearance), the group aggregates, the open per-larva/per-file row
    files and the counts."""

    group_by: tuple[str, ...]
    meta_columns: list[str]
    orientation_columns: list[str]  # per_file.tsv's head/tail cells (those not already metadata columns)
    behaviours: dict[str, int]
    larva_out: TextIO
    file_out: TextIO
    groups: dict[tuple[str, ...], _Group] = field(default_factory=dict)
    overall: _Group = field(default_factory=lambda: _Group(()))
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label path, one-line problem)
    files: int = 0
    larvae: int = 0
    unlike: int = 0  # files judged unlike the tagger's training data

    def index_of(self, name: str) -> int:
        """The behaviour index of `name`; a behaviour not seen before gets the next one."""
        if name not in self.behaviours:
            self.behaviours[name] = len(self.behaviours)
        return self.behaviours[name]

    def group_of(self, meta: Mapping[str, str]) -> _Group:
        """The aggregates of the group that metadata `meta` belongs to (created when new)."""
        key = tuple(meta.get(k, "") for k in self.group_by)
        if key not in self.groups:
            self.groups[key] = _Group(key)
        return self.groups[key]


@dataclass
class _File:
    """One label file being added: the leading cells of its rows and its larvae's statistics.

    used: the behaviour indices that get a row (declared by the file or used in it);
    names: index -> behaviour name of those; domain: `domain_verdicts` of the file."""

    path: str
    meta_values: list[str]
    domain: tuple[str, dict[str, str]]
    orientation: list[str]
    larvae: list[tuple[str, _Larva]]
    used: list[int]
    names: dict[int, str]


# ----------------------------------------------------------------------------- summarize


def _label_paths_sized(labels) -> int:
    try:
        return len(labels)
    except TypeError:
        return 0


def group_name(values: Sequence[str]) -> str:
    """Display name of a group: its values joined by ' / ', unknown ones as 'unknown'."""
    return " / ".join(v or UNKNOWN for v in values) if values else ALL_GROUP


def summarize(labels: Iterable[str | Path], out_dir: str | Path, *,
              metadata: Mapping[str, Mapping[str, str]] | None = None,
              group_by: Sequence[str] = DEFAULT_GROUP_BY, labels_order: Sequence[str] | None = None,
              plots: bool = True, progress: Callable[[int, int], None] | None = None) -> ScreenSummary:
    """Summarise behaviour in `labels` (.label paths, read lazily) into tables and plots in `out_dir`.

    metadata: label path (str, as given) -> {tracker, genotype, ...}; keys it lacks are
    derived by `label_metadata`. group_by: metadata keys whose values form a group.
    labels_order: behaviours first in tables and plots, in this order (others follow in
    order of appearance). progress(done, total) is called after every file (total 0 when
    `labels` has no length, e.g. a generator). Broken files are skipped and listed in
    failed.tsv; when every file fails, TrackDataError. See the module doc for definitions.
    `out_dir` must be new, empty, or an earlier summary of maggotflow's (its `.maggotflow`
    marker, nothing but its own tables and plots): a folder holding anything of the user's
    is refused naming the file (`atomic.claim_folder`), so no user file is ever replaced.
    """
    from maggotflow.atomic import claim_folder

    # A new or empty folder, or an earlier summary: a folder of the user's is refused before any work.
    out_dir = claim_folder(out_dir, "summary", [*(f"{n}.tsv" for n in TABLES), *(f"{n}.png" for n in PLOTS)])
    tables = {name: out_dir / f"{name}.tsv" for name in TABLES}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        screen = _open_screen(stack, tables, tuple(group_by), labels_order)
        _read_files(screen, labels, metadata, progress)
        if not screen.files:
            if screen.failed:
                first, problem = screen.failed[0]
                raise TrackDataError(first, f"{problem}; none of the {len(screen.failed)} label file(s) could be "
                                            "summarised")
            raise TrackDataError(None, "no label files to summarise")
        names = _ordered(screen.behaviours, labels_order)
        _write_groups(stack, tables["groups"], screen.groups, screen.overall, screen.group_by, names)
        _write_transitions(stack, tables["transitions"], screen.groups, screen.overall, screen.group_by, names)
        failed_tmp = stack.enter_context(atomic_path(tables["failed"]))
        failed_tmp.write_text(_line(["file", "problem"]) + "".join(_line(f) for f in screen.failed),
                              encoding="utf-8")
        # Close the row files before their renames (the ExitStack unwinds in reverse order).
        screen.larva_out.flush()
        screen.file_out.flush()
    log.info("summary: %d file(s), %d larvae, %d failed, in %.1f s", screen.files, screen.larvae,
             len(screen.failed), time.monotonic() - started)
    if screen.unlike:
        log.warning("summary: %d of %d file(s) are unlike the tagger's training data (domain check; column "
                    "domain_check of per_file.tsv): their labels may be unreliable", screen.unlike, screen.files)
    ordered_groups = sorted(screen.groups.values(), key=lambda g: g.values)
    summary = ScreenSummary(out_dir=out_dir, files=screen.files, larvae=screen.larvae, failed=screen.failed,
                            behaviours=names, groups=[group_name(g.values) for g in ordered_groups],
                            tables=tables, unlike_training=screen.unlike)
    if plots:
        summary.plots = _plot_all(out_dir, ordered_groups, screen.overall, names)
    return summary


def _open_screen(stack: contextlib.ExitStack, tables: Mapping[str, Path], group_by: tuple[str, ...],
                 labels_order: Sequence[str] | None) -> _Screen:
    """A summary's state, with per_larva.tsv and per_file.tsv open (temporaries renamed when
    `stack` closes) and their header lines written. The metadata columns are the screen's
    own then the `group_by` keys; the head/tail decision's columns follow in per_file.tsv,
    unless grouped by one of them (then it is a metadata column)."""
    meta_columns = list(dict.fromkeys((*METADATA_COLUMNS, *group_by)))
    orientation_columns = [c for c in ORIENTATION_COLUMNS if c not in meta_columns]
    larva_tmp = stack.enter_context(atomic_path(tables["per_larva"]))
    file_tmp = stack.enter_context(atomic_path(tables["per_file"]))
    larva_out = stack.enter_context(open(larva_tmp, "w", encoding="utf-8", newline=""))
    file_out = stack.enter_context(open(file_tmp, "w", encoding="utf-8", newline=""))
    stat_columns = ["behaviour", "fraction", "time_s", "bouts", "mean_bout_s", "median_bout_s"]
    larva_out.write(_line(["file", "larva", *meta_columns, "domain_check", "duration_s", "labelled_s",
                           *stat_columns]))
    file_out.write(_line(["file", *meta_columns, "larvae", "domain_check", *orientation_columns, "duration_s",
                          "labelled_s", *stat_columns]))
    behaviours = {name: i for i, name in enumerate(dict.fromkeys(labels_order or ()))}
    return _Screen(group_by=group_by, meta_columns=meta_columns, orientation_columns=orientation_columns,
                   behaviours=behaviours, larva_out=larva_out, file_out=file_out)


def _read_files(screen: _Screen, labels: Iterable[str | Path], metadata: Mapping[str, Mapping[str, str]] | None,
                progress: Callable[[int, int], None] | None) -> None:
    """Add each label file to `screen`, one at a time, reporting progress after each (the
    caller's `progress`, the workflow's console records, a log line every LOG_EVERY_S)."""
    total = _label_paths_sized(labels)
    started = last_log = time.monotonic()
    done = 0
    for path in labels:
        done += 1
        _read_file(screen, path, metadata)
        if progress is not None:
            progress(done, total)
        # For the workflow's console (workflow/scripts/jobsetup.py shows these, rate-limited).
        progress_records.report(done, total, "%s", _progress_line(done, total, time.monotonic() - started))
        now = time.monotonic()
        if now - last_log >= LOG_EVERY_S:
            last_log = now
            log.info("%s", _progress_line(done, total, now - started))


def _read_file(screen: _Screen, path: str | Path, metadata: Mapping[str, Mapping[str, str]] | None) -> None:
    """Read one label file into `screen` (its rows on disk before the next file is taken), or
    list it as failed with its one-line problem."""
    from maggotflow.formats.label import read_label_file

    try:
        lf = read_label_file(path)
    except (TrackDataError, OSError) as err:
        problem = getattr(err, "problem", None) or getattr(err, "strerror", None) or str(err)
        screen.failed.append((str(path), " ".join(str(problem).split())))
        log.warning("%s: skipped (%s)", path, screen.failed[-1][1])
        return
    meta = dict((metadata or {}).get(str(path), {}))
    derived = label_metadata(path, lf.metadata, lf.dependencies)
    for key in screen.meta_columns:
        if not meta.get(key):
            meta[key] = derived.get(key, "")
    domain = domain_verdicts(lf.metadata)
    screen.larvae += _add_file(screen, str(path), lf, meta, domain)
    screen.files += 1
    screen.unlike += domain[0] == UNLIKE_TRAINING
    # On disk before the next path is taken: nothing of a file stays in memory.
    screen.larva_out.flush()
    screen.file_out.flush()


def _progress_line(done: int, total: int, elapsed: float) -> str:
    if total:
        eta = elapsed / max(done, 1) * (total - done)
        return f"summary: {done}/{total} files ({100 * done / total:.0f}%), ETA {progress_records.duration_text(eta)}"
    return f"summary: {done} files in {elapsed:.0f} s"


def _ordered(behaviours: Mapping[str, int], labels_order: Sequence[str] | None) -> list[str]:
    first = list(dict.fromkeys(labels_order or ()))
    return first + [n for n in sorted(behaviours, key=behaviours.get) if n not in first]


def domain_verdicts(metadata: Mapping) -> tuple[str, dict[str, str]]:
    """The domain-check verdict of a label file from its metadata (`metadata.maggotflow.
    domain_check`) and per larva id its own ("unlike_training" when its relative score is
    above 1, else "ok"); ("", {}) when the label has none."""
    own = metadata.get(PROVENANCE_KEY) if isinstance(metadata, Mapping) else None
    record = own.get(DOMAIN_CHECK_KEY) if isinstance(own, Mapping) else None
    if not isinstance(record, Mapping) or record.get("verdict") not in DOMAIN_VERDICTS:
        return "", {}
    larvae = record.get("larvae")
    scores = larvae.get("relative_scores") if isinstance(larvae, Mapping) else None
    per_larva = {str(k): UNLIKE_TRAINING if v > 1 else "ok" for k, v in (scores or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return record["verdict"], per_larva


def _add_file(screen: _Screen, path: str, lf, meta: Mapping[str, str], domain: tuple[str, dict[str, str]]) -> int:
    """Add one LabelFile's rows and aggregates; return its number of larvae.
    domain: `domain_verdicts` of the file."""
    one = _file_stats(screen, path, lf, meta, domain)
    fractions = _write_larva_rows(screen.larva_out, one, len(screen.behaviours))
    time_s, labelled_s, bout_code, bout_s = _write_file_row(screen.file_out, one, len(screen.behaviours))
    for target in (screen.group_of(meta), screen.overall):
        target.files += 1
        target.larvae += len(one.larvae)
        for b in one.used:
            cell = target.cells.get(one.names[b])
            if cell is None:
                cell = target.cells[one.names[b]] = _Cell(screen.rng)
            cell.files += 1
            cell.unlike_files += domain[0] == UNLIKE_TRAINING
            cell.add_fractions(fractions[:, b])
            cell.bouts.add(bout_s[bout_code == b])
            cell.time_s += float(time_s[b])
            cell.labelled_s += labelled_s
        for _, s in one.larvae:
            for a, b in s.bouts.transitions:
                pair = (one.names[a], one.names[b])
                target.transitions[pair] = target.transitions.get(pair, 0) + 1
    return len(one.larvae)


def _file_stats(screen: _Screen, path: str, lf, meta: Mapping[str, str], domain: tuple[str, dict[str, str]]) -> _File:
    """Each larva's statistics (a step's behaviour: its first name, `maggotflow.bouts`) and the
    behaviours that get a row: those the file declares, then those its steps use (new names
    get the next behaviour index, in this order)."""
    declared = [screen.index_of(n) for n in lf.names]
    coded = [(larva, np.asarray(t, dtype=np.float64), step_codes(steps, screen.index_of))
             for larva, (t, steps) in lf.tracks.items()]
    n = len(screen.behaviours)
    used = sorted(set(declared) | {int(c) for _, _, codes in coded for c in np.unique(codes) if c >= 0})
    names = {i: name for name, i in screen.behaviours.items() if i in set(used)}
    orientation = orientation_cells(lf.metadata)
    return _File(path=path, meta_values=[meta.get(k, "") for k in screen.meta_columns], domain=domain,
                 orientation=[orientation[c] for c in screen.orientation_columns],
                 larvae=[(larva, _larva(t, codes, n)) for larva, t, codes in coded], used=used, names=names)


def _write_larva_rows(out: TextIO, one: _File, n: int) -> np.ndarray:
    """per_larva.tsv rows of a file (one per larva x behaviour); return the per-larva
    fractions of labelled time, (larvae, n) (NaN for a larva with nothing labelled)."""
    fractions = np.full((len(one.larvae), n), np.nan)
    for row, (larva, s) in enumerate(one.larvae):
        counts, mean, median = _bout_stats(s.bouts.code, s.bouts.duration_s, n)
        if s.labelled_s > 0:
            fractions[row] = s.time_s / s.labelled_s
        head = [one.path, larva, *one.meta_values, one.domain[1].get(str(larva), ""), s.duration_s, s.labelled_s]
        out.write("".join(_line([*head, one.names[b], fractions[row, b], s.time_s[b], counts[b], mean[b],
                                 median[b]]) for b in one.used))
    return fractions


def _write_file_row(out: TextIO, one: _File, n: int) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """per_file.tsv rows of a file (one per behaviour: time pooled over its larvae); return
    (time_s per behaviour, labelled_s, bout codes, bout durations) pooled over its larvae."""
    larvae = [s for _, s in one.larvae]
    time_s = sum((s.time_s for s in larvae), np.zeros(n))
    labelled_s = sum(s.labelled_s for s in larvae)
    bout_code = np.concatenate([s.bouts.code for s in larvae]) if larvae else np.zeros(0, dtype=np.int64)
    bout_s = np.concatenate([s.bouts.duration_s for s in larvae]) if larvae else np.zeros(0)
    counts, mean, median = _bout_stats(bout_code, bout_s, n)
    head = [one.path, *one.meta_values, len(larvae), one.domain[0], *one.orientation,
            sum(s.duration_s for s in larvae), labelled_s]
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = time_s / labelled_s if labelled_s > 0 else np.full(n, np.nan)
    out.write("".join(_line([*head, one.names[b], pooled[b], time_s[b], counts[b], mean[b], median[b]])
                      for b in one.used))
    return time_s, labelled_s, bout_code, bout_s


def _group_rows(groups: Mapping[tuple, _Group], overall: _Group, group_by: Sequence[str]):
    for g in [*sorted(groups.values(), key=lambda g: g.values), overall]:
        values = list(g.values) if g is not overall else [""] * len(group_by)
        yield g, [group_name(g.values) if g is not overall else ALL_GROUP, *values]


def _write_groups(stack, path, groups, overall, group_by, names) -> None:
    tmp = stack.enter_context(atomic_path(path))
    lines = [_line(["group", *group_by, "behaviour", "files", "files_unlike_training", "larvae", "fraction_mean",
                    "fraction_sd", "fraction_median", "fraction_q25", "fraction_q75", "fraction_pooled", "bouts",
                    "bouts_per_min", "mean_bout_s", "median_bout_s"])]
    for g, head in _group_rows(groups, overall, group_by):
        for name in names:
            cell = g.cells.get(name)
            if cell is None:
                continue
            f, b = cell.fraction, cell.bouts
            minutes = cell.labelled_s / 60.0
            lines.append(_line([*head, name, cell.files, cell.unlike_files, f.n, f.mean, f.sd, f.quantile(0.5),
                                f.quantile(0.25), f.quantile(0.75),
                                cell.time_s / cell.labelled_s if cell.labelled_s else None,
                                b.n, b.n / minutes if minutes else None, b.mean, b.quantile(0.5)]))
    tmp.write_text("".join(lines), encoding="utf-8")


def _write_transitions(stack, path, groups, overall, group_by, names) -> None:
    tmp = stack.enter_context(atomic_path(path))
    lines = [_line(["group", *group_by, "from", "to", "count", "probability"])]
    for g, head in _group_rows(groups, overall, group_by):
        out_of: dict[str, int] = {}
        for (a, _), count in g.transitions.items():
            out_of[a] = out_of.get(a, 0) + count
        for a in names:
            for b in names:
                count = g.transitions.get((a, b), 0)
                if count:
                    lines.append(_line([*head, a, b, count, count / out_of[a]]))
    tmp.write_text("".join(lines), encoding="utf-8")


# ----------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _plotted(groups: list[_Group]) -> tuple[list[_Group], str]:
    if len(groups) <= MAX_PLOTTED_GROUPS:
        return groups, ""
    biggest = sorted(groups, key=lambda g: -g.larvae)[:MAX_PLOTTED_GROUPS]
    return sorted(biggest, key=lambda g: g.values), f" ({MAX_PLOTTED_GROUPS} largest of {len(groups)} groups)"


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _plot_all(out_dir: Path, groups: list[_Group], overall: _Group, names: list[str]) -> dict[str, Path]:
    """fraction_by_group.png, bout_durations.png, transitions.png (Agg canvas, no pyplot)."""
    shown, note = _plotted(groups or [overall])
    plots = {name: out_dir / f"{name}.png" for name in PLOTS}
    colors = _colors(len(shown))
    labels = [f"{group_name(g.values)} (n={g.larvae})" for g in shown]
    _plot_fractions(plots["fraction_by_group"], shown, names, colors, labels, note)
    _plot_bouts(plots["bout_durations"], shown, names, colors, labels, note)
    _plot_transitions(plots["transitions"], overall, names)
    return plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig, colors, labels) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=text) for c, text in zip(colors, labels)]
    # About 14 characters of 8-pt text per inch: as many columns as fit the figure's width.
    longest = max((len(text) for text in labels), default=1) + 4
    ncols = max(1, min(len(handles), int(fig.get_figwidth() * 14 / longest)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def _plot_fractions(path, groups, names, colors, labels, note) -> None:
    n_b, n_g = len(names), len(groups)
    fig = _figure(max(6.4, 0.25 * n_b * n_g + 2), 4.8 + 0.2 * math.ceil(n_g / 3))
    ax = fig.add_subplot()
    width = 0.8 / max(n_g, 1)
    rng = np.random.default_rng(1)
    stats, positions, face = [], [], []
    for j, g in enumerate(groups):
        for i, name in enumerate(names):
            cell = g.cells.get(name)
            if cell is None or not cell.fraction.n:
                continue
            x = i - 0.4 + width * (j + 0.5)
            f = cell.fraction
            stats.append({"med": f.quantile(0.5), "q1": f.quantile(0.25), "q3": f.quantile(0.75),
                          "whislo": f.quantile(0.05), "whishi": f.quantile(0.95), "fliers": []})
            positions.append(x)
            face.append(colors[j])
            sample = np.asarray(cell.sample)
            ax.scatter(x + rng.uniform(-0.3, 0.3, sample.size) * width, sample, s=4, color=colors[j],
                       alpha=0.35, linewidths=0, zorder=1)
    if stats:
        boxes = ax.bxp(stats, positions=positions, widths=width * 0.8, patch_artist=True, showfliers=False,
                       manage_ticks=False)
        for patch, c in zip(boxes["boxes"], face):
            patch.set(facecolor=(*c[:3], 0.25), edgecolor=c, zorder=2)
        for median, c in zip(boxes["medians"], face):
            median.set(color=c, linewidth=2, zorder=3)
    ax.set_xticks(range(n_b), names, rotation=30 if n_b > 5 else 0, ha="right" if n_b > 5 else "center")
    ax.set_xlim(-0.5, n_b - 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction of labelled time (per larva)")
    ax.set_title("Behaviour fraction per larva by group" + note + "\nbox: quartiles, whiskers: 5-95 %, "
                 "dots: larvae (sample)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, colors, labels)
    _save(fig, path)


def _plot_bouts(path, groups, names, colors, labels, note) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    n_b = len(names)
    cols = min(4, max(n_b, 1))
    rows = math.ceil(max(n_b, 1) / cols)
    fig = _figure(3.2 * cols, 2.6 * rows + 0.8 + 0.2 * math.ceil(len(groups) / 3))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        for j, g in enumerate(groups):
            cell = g.cells.get(name)
            if cell is None or not cell.bouts.n:
                continue
            x, y = cell.bouts.cdf()
            lo = np.searchsorted(x, cell.bouts.lo) if math.isfinite(cell.bouts.lo) else 0
            hi = np.searchsorted(x, cell.bouts.hi) + 1
            ax.step(x[lo:hi], y[lo:hi], where="post", color=colors[j], linewidth=1.2)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("fraction of bouts <= d")
        if k // cols == rows - 1:
            ax.set_xlabel("bout duration d (s)")
    for k in range(n_b, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle("Bout durations by behaviour and group (ECDF)" + note, fontsize=10)
    _legend(fig, colors, labels)
    _save(fig, path)


def _plot_transitions(path, overall: _Group, names: list[str]) -> None:
    n = len(names)
    matrix = np.zeros((n, n))
    for (a, b), count in overall.transitions.items():
        matrix[names.index(a), names.index(b)] = count
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(totals > 0, matrix / totals, 0.0)
    fig = _figure(max(4.8, 0.75 * n + 2.2), max(4.2, 0.65 * n + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(prob, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if i != j and matrix[i, j]:
                ax.text(j, i, f"{prob[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if prob[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{name} ({int(totals[i, 0])})" for i, name in enumerate(names)])
    ax.set_xlabel("to")
    ax.set_ylabel("from (transitions out)")
    ax.set_title(f"Transition probabilities, all {overall.files} files\n(row-normalised, within larvae)",
                 fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="probability")
    _save(fig, path)


# ----------------------------------------------------------------------------- a prediction run


def summarize_run(summary: str | Path, manifest: str | Path, out_dir: str | Path, *,
                  group_by: Sequence[str] = DEFAULT_GROUP_BY) -> ScreenSummary:
    """The screen summary of a prediction run: the labels of the files it tagged (the `ok` rows
    of its summary.tsv, `maggotflow.runtables`), grouped by the metadata of the run's `manifest`
    (`manifest_metadata`). Without a manifest, a warning, and each file's metadata comes
    from `label_metadata` alone."""
    from maggotflow.runtables import read_shard_table

    labels = [row["label"] for row in read_shard_table(summary) if row["status"] == "ok"]
    metadata = None
    if Path(manifest).is_file():
        metadata = manifest_metadata(manifest, labels)
    else:
        log.warning("%s: no manifest, files are not grouped by their metadata", manifest)
    return summarize(labels, out_dir, metadata=metadata, group_by=tuple(group_by))
