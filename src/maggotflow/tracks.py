"""The data model: a run (one experiment, one track file) holds tracks (one per larva).

Conventions used everywhere in maggotflow:

- times `t` are in seconds, shape (n,), strictly increasing, finite;
- `spine` is in millimetres, shape (n, k, 2) with k >= 1 points ordered **tail -> head**
  (readers convert from each tracker's own order);
- `outline` (optional) is (n, m, 2) in mm, NaN-padded where a frame has fewer points;
- `labels` (optional) is one entry per time step, each a tuple of label names: `()` means
  untagged, `("run",)` a single label, `("run", "hunch")` several at once.

Problems with input data raise `TrackDataError`, whose message names the file and the
problem in one line.

A *time gap* of a larva is an interval between consecutive steps longer than `GAP_FACTOR`
times its usual interval (the median of its positive intervals; `is_time_gap`). The text
readers use it to tell a re-used larva id (the id comes back after other larvae's lines
and a gap: read as another larva) from a larva whose lines are merely interleaved with
others' (`maggotflow.formats.spine`); `maggotflow.bouts` ends bouts at the same gaps.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

LabelStep = tuple[str, ...]


def printable_path(text: str) -> str:
    """`text` on one line for a message: control characters as escapes (tab -> \\t, newline
    -> \\n), bytes that are not UTF-8 (surrogate escapes of `os` functions) as \\xNN; other
    characters, spaces included, as they are."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte, as os.fsdecode gives it
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class TrackDataError(ValueError):
    """Bad input data. `str(err)` is one line: '<file>: <problem>' (the file's name on one
    line: `printable_path`; `.path` keeps it as it is)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{printable_path(str(path))}: {problem}")

    def with_path(self, path: str | Path) -> "TrackDataError":
        """The same problem, attributed to `path` (used when a reader learns the file late)."""
        return TrackDataError(path, self.problem)


def normalise_label_step(value: Any) -> LabelStep:
    """A label-file step value ('run', ['run', 'hunch'], [] or None) as a tuple of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@dataclass
class Track:
    """One larva: id (string holding an integer for LarvaTagger), times (s), spine (mm)."""

    id: str
    t: np.ndarray
    spine: np.ndarray
    outline: np.ndarray | None = None
    labels: list[LabelStep] | None = None

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.t = np.asarray(self.t, dtype=np.float64)
        self.spine = np.asarray(self.spine, dtype=np.float64)
        self.validate()

    def validate(self, path: str | Path | None = None) -> None:
        """Raise TrackDataError if the track breaks the model's invariants."""
        where = f"larva {self.id}"
        t, spine = self.t, self.spine
        if t.ndim != 1 or t.size < 1:
            raise TrackDataError(path, f"{where} has no time steps")
        if spine.ndim != 3 or spine.shape[0] != t.size or spine.shape[2] != 2 or spine.shape[1] < 1:
            raise TrackDataError(
                path, f"{where}: spine has shape {spine.shape}, expected ({t.size}, k, 2)"
            )
        if not np.all(np.isfinite(t)):
            raise TrackDataError(path, f"{where} has non-finite times")
        if t.size > 1:
            dt = np.diff(t)
            if np.any(dt <= 0):
                i = int(np.argmax(dt <= 0))
                kind = "duplicated" if dt[i] == 0 else "decreasing"
                raise TrackDataError(
                    path, f"{where} has {kind} times at t={t[i + 1]:.4f} s (step {i + 1})"
                )
        if not np.all(np.isfinite(spine)):
            i = int(np.argmax(~np.all(np.isfinite(spine), axis=(1, 2))))
            raise TrackDataError(
                path, f"{where} has NaN or infinite spine coordinates at t={t[i]:.4f} s"
            )
        if self.outline is not None:
            self.outline = np.asarray(self.outline, dtype=np.float64)
            if self.outline.ndim != 3 or self.outline.shape[0] != t.size or self.outline.shape[2] != 2:
                raise TrackDataError(
                    path, f"{where}: outline has shape {self.outline.shape}, expected ({t.size}, m, 2)"
                )
        if self.labels is not None:
            self.labels = [normalise_label_step(v) for v in self.labels]
            if len(self.labels) != t.size:
                raise TrackDataError(
                    path, f"{where} has {len(self.labels)} labels for {t.size} time steps"
                )

    @property
    def n_steps(self) -> int:
        return int(self.t.size)

    @property
    def n_points(self) -> int:
        return int(self.spine.shape[1])

    def spine_lengths(self) -> np.ndarray:
        """Spine length (mm) at every step, shape (n,): the sum over the spine's segments of
        sqrt(dx**2 + dy**2), computed on x and y columns (a reduction over the 2-long last
        axis is several times slower; the same operations, the same bits)."""
        spine = self.spine
        dx = spine[:, 1:, 0] - spine[:, :-1, 0]
        dy = spine[:, 1:, 1] - spine[:, :-1, 1]
        dx *= dx
        dy *= dy
        dx += dy
        return np.sqrt(dx, out=dx).sum(axis=1)

    def replace(self, **changes: Any) -> "Track":
        return dataclasses.replace(self, **changes)


@dataclass
class Run:
    """One experiment (one track file): metadata plus its larvae.

    `metadata` holds at least `id` (the run id, normally the date_time); readers also fill
    `date_time`, `tracker`, `genotype`, `effector`, `protocol` and `filename` when known.
    """

    metadata: dict[str, Any]
    tracks: list[Track] = field(default_factory=list)
    source: Path | None = None
    format: str | None = None
    sha1: str | None = None
    # Larvae of the file that the reader left out (warned): id -> why (too few time steps,
    # mostly impossible frames). Their labels in a .label file are then not an error.
    left_out: dict[str, str] = field(default_factory=dict)
    # The ReadOptions (as a dict) the file was read with (formats.read_run); kept by
    # intermediates; None when unknown (an intermediate of an earlier version).
    read_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for track in self.tracks:
            if track.id in seen:
                raise TrackDataError(self.source, f"larva id {track.id} appears twice")
            seen.add(track.id)

    @property
    def label_names(self) -> list[str]:
        """All label names used by the tracks, in order of first appearance."""
        names: dict[str, None] = {}
        for track in self.tracks:
            for step in track.labels or ():
                for name in step:
                    names.setdefault(name, None)
        return list(names)

    @property
    def has_labels(self) -> bool:
        return any(track.labels is not None for track in self.tracks)

    def track(self, larva_id: str) -> Track:
        for track in self.tracks:
            if track.id == str(larva_id):
                return track
        raise KeyError(larva_id)


# A time gap: consecutive steps further apart than this many median intervals (also where
# maggotflow.bouts ends a step, and so a bout).
GAP_FACTOR = 2.0


def usual_interval(t: np.ndarray) -> float:
    """The median of the positive intervals between consecutive times `t` (s); 0 when none."""
    dt = np.diff(np.asarray(t, dtype=np.float64))
    positive = dt[dt > 0]
    return float(np.median(positive)) if positive.size else 0.0


def is_time_gap(dt: np.ndarray | float, usual: float) -> np.ndarray:
    """Whether intervals `dt` (s) are time gaps for a larva whose `usual_interval` is `usual`."""
    return np.asarray(dt) > GAP_FACTOR * usual + 1e-9


def too_short(n_steps: int) -> str:
    """`Run.left_out` reason of a larva with fewer time steps than `ReadOptions.min_steps`."""
    return f"{n_steps} time step(s), fewer than min_steps"


METADATA_KEYS = ("date_time", "genotype", "effector", "tracker", "protocol")
"""The run metadata a file's name or folder carries, in the order of a Choreography name
(`date_time@genotype@effector@tracker@protocol@...`). The one list of these columns: readers,
manifests and the screen summary all use it."""

METADATA_COLUMNS = ("tracker", *(k for k in METADATA_KEYS if k not in ("tracker", "date_time")), "date_time")
"""The same columns in the order tables and run metadata list them: the rig first, date_time last."""

DATE_TIME = re.compile(r"[0-9]{8}_[0-9]{6}")
"""A run's date_time, YYYYMMDD_HHMMSS; a text is one when it matches whole (`fullmatch`)."""


def metadata_from_name(name: str) -> dict[str, str]:
    """Metadata from an `@`-separated Choreography-style file name.

    `20140101_120000@FCF_attP2@UAS_TNT@t15@r_LED100_30s2x15s30s#n#n#n@100.spine`
    -> date_time, genotype, effector, tracker, protocol (and `extra` for the rest).
    Fields that are absent are simply missing from the result.
    """
    stem = Path(name).name
    for suffix in (".spine", ".outline", ".csv", ".mat", ".label"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = stem.split("@")
    meta = {k: v for k, v in zip(METADATA_KEYS, parts) if v}
    if len(parts) > len(METADATA_KEYS):
        meta["extra"] = "@".join(parts[len(METADATA_KEYS):])
    return meta


def choreography_metadata(name: str) -> dict[str, str]:
    """`metadata_from_name` of a file name in the Choreography layout, {} for any other name:
    the name's parts are date_time, genotype, ... only when its first part is a date_time."""
    meta = metadata_from_name(name)
    return meta if DATE_TIME.fullmatch(meta.get("date_time", "")) else {}


def ordered_metadata(meta: Mapping[str, str]) -> dict[str, str]:
    """The METADATA_COLUMNS that `meta` has (non-empty), in that order."""
    return {k: meta[k] for k in METADATA_COLUMNS if meta.get(k)}


def run_metadata(ident: str, meta: Mapping[str, str], filename: str) -> dict[str, str]:
    """A reader's run metadata, in one order for every format: `id`, the METADATA_COLUMNS that
    `meta` has, the file name, then `extra` (the name's parts after the protocol) when any."""
    ordered = {"id": ident, **ordered_metadata(meta), "filename": filename}
    if meta.get("extra"):
        ordered["extra"] = meta["extra"]
    return ordered


def metadata_matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether `metadata` has every wanted value (a list or tuple means any of them).

    The one metadata filter: the workflow's `inputs.filter` (manifest rows) and the CLI's
    `dataset --filter KEY=VALUE` (intermediates' metadata) both use it. Values compare as text.
    """
    for key, value in wanted.items():
        allowed = {str(v) for v in value} if isinstance(value, (list, tuple, set)) else {str(value)}
        if str(metadata.get(key, "")) not in allowed:
            return False
    return True


def check_unique_ids(ids: Iterable[str], path: str | Path | None) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise TrackDataError(path, f"larva id {i} appears twice")
        seen.add(i)


def label_matrix(labels: Sequence[LabelStep], names: Sequence[str]) -> np.ndarray:
    """Per-step labels as a boolean (n, len(names)) matrix (multi-label aware)."""
    index = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(labels), len(names)), dtype=bool)
    for i, step in enumerate(labels):
        for name in step:
            out[i, index[name]] = True
    return out


def labels_from_matrix(matrix: np.ndarray, names: Sequence[str]) -> list[LabelStep]:
    """Inverse of `label_matrix`."""
    return [tuple(names[j] for j in np.flatnonzero(row)) for row in matrix]
