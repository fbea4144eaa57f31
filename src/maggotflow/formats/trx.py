"""Janelia `trx.mat` (MATLAB v7.3, i.e. HDF5 with a 512-byte MATLAB header): read and write.

Layout (as h5py sees a file saved by MATLAB with `save('-v7.3')`):

- `/trx` is a group (`MATLAB_class = "struct"`) holding the struct array `trx`, one element
  per larva. Each field is a dataset of object references, h5py shape (1, L) or (L, 1),
  one reference per larva into `/#refs#`. (A 1x1 struct stores its fields directly, without
  references; that is read as a one-larva file.)
- MATLAB stores arrays column-major, so h5py sees them transposed: a MATLAB n x 11
  `x_spine` (rows = frames) appears as (11, n). Hand-made or re-exported files sometimes
  have (n, 11); the reader decides per array from the number of time steps n, and for a
  square array (n == 11) follows the layout of the file's other larvae (MATLAB's if none).
- Fields used: `t` (s), `numero_larva_num` (larva number), `x_spine`/`y_spine` (mm),
  `x_contour`/`y_contour` (mm, NaN-padded outline), `x_head`/`y_head`/`x_tail`/`y_tail`
  (mm, used to find which end of the spine is the head) and the per-frame behaviour flags
  in `TRX_BEHAVIOUR_FLAGS` (1 = active; 0 or -1 = not active).

Bounded reading (what is refused before any array is read, one line naming the file):

- links other than plain (hard) links in the file's root `trx` entry and in `/trx`: an
  external link would make HDF5 open another file (a FIFO there blocks the job forever) and
  a soft link may lead through one; MATLAB writes neither. Object references (the struct's
  per-larva values) point inside the file by construction.
- arrays whose data lives elsewhere: virtual datasets and datasets with external raw storage.
- arrays whose declared size is implausible, checked for every array the reader will read
  (the struct fields and every larva's referenced array under `#refs#`): over
  `MAX_TRX_ARRAY_BYTES` (4 GiB) once in memory; contiguous or compact arrays larger than the
  whole file; chunked (compressed) arrays with no data stored at all, or declaring more
  than `MAX_TRX_COMPRESSION` (1100) times the bytes they store. HDF5 reads unwritten chunks
  as the fill value, so a small damaged or crafted file can declare terabytes.

Impossible values (beyond 1e5 mm, one-frame jumps of many body lengths) are bridged by
`maggotflow.plausibility` (warning naming file, larva and frame index, 0-based).

Spine order: maggotflow spines are tail -> head. Which end of the Janelia `x_spine` is the
head is not documented, so the reader measures it: for every larva with `x_head`/`x_tail`,
the spine end closer to the head over all frames is the head. Larvae without those fields
follow the majority of the file's decided larvae; if no larva can be decided, the spine is
assumed head-first (a warning says so). The writer writes head-first and writes consistent
`x_head`/`x_tail`, so its files read back unambiguously. The larvae's motion is then checked
(`maggotflow.orientation.check_named_head`): when they move decisively backwards relative to
the head so found, a warning names the file and the figure (the file's head is kept).
Metadata: spine_order (of x_spine: head_first, tail_first or mixed), spine_order_decided_by
("file" from x_head/x_tail, "convention" without them) and the motion figures.

Identity comes from the path, `<tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat`:
the directories are used when the last one looks like a date_time (YYYYMMDD_HHMMSS) and the
third-last contains an `@` (so a copy under e.g. `data/raw/<instance>/` is not mistaken for
that layout); otherwise the run id is the parent directory's name.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from maggotflow.atomic import atomic_path
from maggotflow.formats import HDF5_SIGNATURE, ReadOptions, check_not_gzip, file_sha1, read_head
from maggotflow.orientation import check_named_head
from maggotflow.plausibility import bridge_or_leave_out
from maggotflow.tracks import (
    DATE_TIME, LabelStep, Run, Track, TrackDataError, check_unique_ids, run_metadata, too_short,
)

log = logging.getLogger(__name__)

_FLAG_BASES = ("run", "cast", "back", "hunch", "roll", "stop")
#: Behaviour flag fields recognised as labels, in the order label names are reported.
TRX_BEHAVIOUR_FLAGS: tuple[str, ...] = tuple(
    f"{base}{variant}" for base in _FLAG_BASES for variant in ("", "_large", "_strong", "_weak")
) + ("small_motion",)

_REQUIRED_FIELDS = ("t", "x_spine", "y_spine")
_MATLAB_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_USERBLOCK = 512

#: Largest array the reader loads (bytes once in memory: float64 values, or one Python
#: object of ~64 bytes per reference). A 10-minute, 30 fps larva's NaN-padded contour
#: (18,000 frames x a few hundred points) is ~100 MB: 4 GiB leaves 40 times that.
MAX_TRX_ARRAY_BYTES = 4 * 2**30
#: Most a chunked array may expand when read, as declared bytes / stored bytes. MATLAB and
#: h5py compress with deflate, which cannot do better than ~1032:1; an array declaring more
#: is mostly unwritten chunks that HDF5 would fill in. (Filters MATLAB does not use, such as
#: szip or scale-offset on constant data, could exceed it: such a file is refused.)
MAX_TRX_COMPRESSION = 1100
_REFERENCE_BYTES = 64  # a numpy object slot plus an h5py Reference object

# h5py layout of a 2-D per-larva array: "matlab" = (k, n) (MATLAB's column-major n x k),
# "rows" = (n, k) (frames along the first h5py axis).
_MATLAB, _ROWS = "matlab", "rows"


# --------------------------------------------------------------------------------- reading


def read_trx(path: str | Path, options: ReadOptions | None = None) -> Run:
    """Read a Janelia `trx.mat` into a `Run` (times in s, spines in mm, tail -> head).

    Labels are set from the behaviour flag fields when the file has at least one of them
    (per step, the tuple of active flags, `()` when none is active). Larvae with fewer than
    `options.min_steps` time steps are skipped with a warning. Bad input raises
    `TrackDataError` naming the file.
    """
    path = Path(path)
    options = options or ReadOptions()
    # Before h5py opens it: a FIFO would block forever, gzip data would be "not HDF5".
    check_not_gzip(path, read_head(path, 2))
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise TrackDataError(path, "file not found") from None
    except OSError as err:
        if _has_hdf5_signature(path):
            raise TrackDataError(
                path, f"is truncated or corrupt: HDF5 cannot open it ({_one_line(err)})"
            ) from None
        raise TrackDataError(
            path, "is not an HDF5 (MATLAB v7.3) file, so has no 'trx' struct (not a Janelia trx.mat)"
        ) from None
    with h5:
        try:
            left_out: dict[str, str] = {}
            tracks, orientation = _read_tracks(h5, path, options, left_out)
        except TrackDataError as err:
            raise (err if err.path else err.with_path(path)) from None
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
            # h5py reports damaged objects (cut files, broken references) with these.
            raise TrackDataError(path, f"is truncated or corrupt ({_one_line(err)})") from err
    return Run(
        metadata={**trx_metadata_from_path(path), **orientation},
        tracks=tracks,
        source=path,
        format="trx",
        sha1=file_sha1(path),
        left_out=left_out,
    )


def trx_metadata_from_path(path: str | Path) -> dict[str, str]:
    """Run metadata from `<tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat`.

    Returns `id` (the date_time when the layout is recognised, else the parent directory's
    name), then `tracker`, `genotype`, `effector`, `protocol`, `date_time` when known, and
    `filename` (the file's own name).
    """
    path = Path(path).absolute()
    parents = [p.name for p in path.parents][:4]  # date_time, protocol, genotype@effector, tracker
    found: dict[str, str] = {}
    if len(parents) >= 4 and DATE_TIME.fullmatch(parents[0]) and "@" in parents[2]:
        genotype, _, effector = parents[2].partition("@")
        found = {"tracker": parents[3], "genotype": genotype, "effector": effector, "protocol": parents[1],
                 "date_time": parents[0]}
    elif parents and DATE_TIME.fullmatch(parents[0]):
        found = {"date_time": parents[0]}
    return run_metadata(parents[0] if parents and parents[0] else path.stem, found, path.name)


class _StructArray:
    """Lazy access to the fields of the MATLAB struct array `/trx`, one element per larva.

    Reads each field's reference array once; `get(field, i)` dereferences one larva's value
    (one HDF5 read per field per larva, nothing finer). Nothing is read before
    `check_storage` has checked the fields the caller will read.
    """

    def __init__(self, h5: h5py.File, group: h5py.Group, path: Path):
        self.h5 = h5
        self.path = path
        self.datasets: dict[str, h5py.Dataset] = {}
        for name in group:  # names only: iterating does not follow links
            _check_hard_link(path, group, name, f"/trx/{name}")
            obj = group[name]
            if isinstance(obj, h5py.Dataset):
                self.datasets[name] = obj
        self._refs: dict[str, np.ndarray | None] = {}

    @functools.cached_property
    def n_larvae(self) -> int:
        return self._count("t")

    def check_storage(self, fields: Sequence[str]) -> None:
        """Refuse (TrackDataError) before reading them, any of `fields` or the per-larva
        arrays they reference that is virtual, stored outside the file or implausibly
        large (see the module doc and `_check_dataset`)."""
        file_bytes = self.path.stat().st_size
        for field in fields:
            _check_dataset(self.path, self.datasets[field].id, f"trx field '{field}'", file_bytes)
            refs = self._references(field)
            for i, ref in enumerate(() if refs is None else refs):
                # Low-level dereference: a third of the cost of `self.h5[ref]`.
                oid = h5py.h5r.dereference(ref, self.h5.id) if ref else None
                if isinstance(oid, h5py.h5d.DatasetID):
                    _check_dataset(self.path, oid, f"larva #{i + 1} in file order: '{field}'", file_bytes)

    def has(self, field: str) -> bool:
        return field in self.datasets

    def _references(self, field: str) -> np.ndarray | None:
        """Flat array of references for `field`, or None when it is stored inline (1x1 struct)."""
        if field not in self._refs:
            ds = self.datasets[field]
            if h5py.check_dtype(ref=ds.dtype) is not None:
                # (1, L) and (L, 1) both flatten to MATLAB's linear larva order.
                self._refs[field] = np.asarray(ds[()], dtype=object).ravel()
            else:
                self._refs[field] = None
        return self._refs[field]

    def _count(self, field: str) -> int:
        refs = self._references(field)
        return 1 if refs is None else int(refs.size)

    def check_count(self, field: str) -> None:
        n = self._count(field)
        if n != self.n_larvae:
            raise TrackDataError(
                None, f"trx field '{field}' has {n} entries but 't' has {self.n_larvae} larvae"
            )

    def get(self, field: str, i: int, where: str) -> np.ndarray:
        """Larva `i`'s value of `field` as a float64 array in h5py's orientation (maybe empty)."""
        refs = self._references(field)
        if refs is None:
            obj: Any = self.datasets[field]
        else:
            ref = refs[i]
            if not ref:  # null reference: MATLAB never writes one, treat as empty
                return np.empty((0, 0))
            obj = self.h5[ref]
        if not isinstance(obj, h5py.Dataset):
            raise TrackDataError(None, f"{where}: field '{field}' is not a numeric array")
        # MATLAB writes an empty array as a uint64 dataset holding its dimensions.
        if obj.dtype.kind == "u" and "MATLAB_empty" in obj.attrs:
            return np.empty((0, 0))
        if obj.dtype.kind not in "biuf":
            raise TrackDataError(None, f"{where}: field '{field}' is not a numeric array")
        return np.asarray(obj[()], dtype=np.float64)


@dataclass
class _Fields:
    """What a trx struct offers, decided once per file: the behaviour flag fields (label
    names, in `TRX_BEHAVIOUR_FLAGS` order), whether it numbers its larvae and has outlines.
    `unusable`: optional field -> first problem (an optional field that cannot be read is
    ignored where unusable, reported once per file)."""

    trx: _StructArray
    flags: list[str]
    has_ids: bool
    has_outline: bool
    unusable: dict[str, str]


def _read_tracks(h5: h5py.File, path: Path, options: ReadOptions,
                 left_out: dict[str, str]) -> tuple[list[Track], dict[str, Any]]:
    """The tracks (tail -> head) and the orientation metadata (spine_order: how x_spine is
    ordered, "mixed" when larvae differ; spine_order_decided_by: "file" or "convention";
    the motion figures).

    Pass 1 reads each larva's fields once, in h5py's orientation; pass 2, once the file-wide
    layout of the 2-D arrays is known (square arrays follow it), orients them and measures
    which spine end is the head.
    """
    fields = _struct_fields(h5, path)
    larvae = [larva for i in range(fields.trx.n_larvae)
              if (larva := _read_larva(fields, i, path, options, left_out)) is not None]
    check_unique_ids((larva["id"] for larva in larvae), path)

    spine_layout = _file_layout(larvae, ("x_spine", "y_spine"))
    contour_layout = _file_layout(larvae, ("x_contour", "y_contour")) if fields.has_outline else _MATLAB
    for larva in larvae:
        _orient_larva(larva, fields, path, spine_layout, contour_layout, left_out)
    larvae = [larva for larva in larvae if larva["id"] not in left_out]
    for name, problem in fields.unusable.items():
        log.warning("%s: optional field '%s' ignored where unusable (%s)", path, name, problem)

    decided = [larva["head_first"] for larva in larvae if larva["head_first"] is not None]
    default_head_first = _default_head_first(decided, bool(larvae), path)
    for larva in larvae:
        if larva["head_first"] is None:
            larva["head_first"] = default_head_first
    tracks = [_track_of(larva, fields.flags, path) for larva in larvae]
    orders = {larva["head_first"] for larva in larvae}
    orientation = {
        "spine_order": "mixed" if len(orders) > 1 else "tail_first" if orders == {False} else "head_first",
        **check_named_head(
            path, [(tr.t, tr.spine) for tr in tracks], "file" if decided else "convention",
            "x_head/x_tail" if decided else "the head-first convention (no x_head/x_tail)",
        ),
    }
    return tracks, orientation


def _struct_fields(h5: h5py.File, path: Path) -> _Fields:
    """The `/trx` struct's fields, checked before any array is read: the required fields are
    there, every field the reader uses is stored plausibly (`check_storage`) and has one
    entry per larva."""
    if "trx" in h5:
        _check_hard_link(path, h5, "trx", "/trx")
    group = h5.get("trx")
    if not isinstance(group, h5py.Group):
        raise TrackDataError(path, "has no 'trx' struct (not a Janelia trx.mat)")
    trx = _StructArray(h5, group, path)
    for name in _REQUIRED_FIELDS:
        if not trx.has(name):
            raise TrackDataError(path, f"the trx struct has no '{name}' field (required: t, x_spine, y_spine)")
    optional = ["numero_larva_num", "x_contour", "y_contour", "x_head", "y_head", "x_tail", "y_tail"]
    flags = [name for name in TRX_BEHAVIOUR_FLAGS if trx.has(name)]
    used = (*_REQUIRED_FIELDS, *flags, *(f for f in optional if trx.has(f)))
    trx.check_storage(used)  # before any array is read
    for name in used[1:]:
        trx.check_count(name)
    has_ids = trx.has("numero_larva_num")
    if not has_ids:
        log.warning("%s: trx has no 'numero_larva_num'; larvae are numbered 1, 2, ... in file order", path)
    return _Fields(trx, flags, has_ids, trx.has("x_contour") and trx.has("y_contour"), unusable={})


def _read_larva(fields: _Fields, i: int, path: Path, options: ReadOptions,
                left_out: dict[str, str]) -> dict[str, Any] | None:
    """Larva `i`'s fields, one read each, in h5py's orientation: id, where (for messages),
    t, x_spine, y_spine, the contour and head/tail fields it has (None where unusable) and
    its flag vectors. None (noted in `left_out`) for a larva shorter than `options.min_steps`."""
    trx = fields.trx
    larva_id = _larva_id(trx, i) if fields.has_ids else str(i + 1)
    where = f"larva {larva_id}"
    t = trx.get("t", i, where)
    if t.ndim > 1 and sum(s > 1 for s in t.shape) > 1:
        raise TrackDataError(path, f"{where}: 't' has shape {t.shape}, expected a vector of times")
    t = t.ravel()
    if t.size < options.min_steps:
        log.warning("%s: %s has %d time step(s), fewer than %d; skipped", path, where, t.size, options.min_steps)
        left_out[larva_id] = too_short(t.size)
        return None
    larva: dict[str, Any] = {"id": larva_id, "where": where, "t": t}
    for name in ("x_spine", "y_spine"):
        larva[name] = trx.get(name, i, where)
    if fields.has_outline:
        larva["x_contour"] = _optional(trx, "x_contour", i, where, fields.unusable)
        larva["y_contour"] = _optional(trx, "y_contour", i, where, fields.unusable)
    for name in ("x_head", "y_head", "x_tail", "y_tail"):
        if trx.has(name):
            value = _optional(trx, name, i, where, fields.unusable)
            larva[name] = None if value is None else value.ravel()
    larva["flags"] = [_flag_vector(trx.get(name, i, where), t.size, name, where) for name in fields.flags]
    return larva


def _orient_larva(larva: dict[str, Any], fields: _Fields, path: Path, spine_layout: str,
                  contour_layout: str, left_out: dict[str, str]) -> None:
    """In place: `spine` (n, k, 2) and `outline` frames first, file point order, implausible
    frames bridged (`bridge_or_leave_out`: a corrupt larva goes to `left_out`), and
    `head_first` (None when the larva has no usable head/tail fields)."""
    n, where = larva["t"].size, larva["where"]
    xs = _frames_first(larva.pop("x_spine"), n, "x_spine", where, spine_layout)
    ys = _frames_first(larva.pop("y_spine"), n, "y_spine", where, spine_layout)
    if xs.shape != ys.shape:
        raise TrackDataError(path, f"{where}: x_spine has {xs.shape[1]} points but y_spine has {ys.shape[1]}")
    larva["spine"] = np.stack([xs, ys], axis=-1)  # (n, k, 2), file order
    if fields.has_outline:
        larva["outline"] = _larva_outline(larva.pop("x_contour"), larva.pop("y_contour"), n, where,
                                          contour_layout, fields.unusable)
    t = larva["t"]
    bridged = bridge_or_leave_out(
        left_out, path, larva["id"], t, larva["spine"], larva.get("outline"),
        where=lambda i, t=t: f"frame {i} (t={t[i]:.3f} s)",
    )
    if bridged is None:
        return  # corrupt: in left_out, dropped by the caller
    larva["spine"], outline = bridged
    if fields.has_outline:
        larva["outline"] = outline
    larva["head_first"] = _spine_is_head_first(larva)


def _larva_outline(xc: np.ndarray | None, yc: np.ndarray | None, n: int, where: str, layout: str,
                   unusable: dict[str, str]) -> np.ndarray | None:
    """The outline (n, m, 2) from x_contour/y_contour, or None when absent or unusable (the
    problem noted in `unusable`: the outline is optional)."""
    if xc is None or yc is None or not xc.size or not yc.size:
        return None
    try:
        xc = _frames_first(xc, n, "x_contour", where, layout)
        yc = _frames_first(yc, n, "y_contour", where, layout)
        if xc.shape != yc.shape:
            raise TrackDataError(None, f"{where}: x_contour has shape {xc.shape} but y_contour {yc.shape}")
        return np.stack([xc, yc], axis=-1)
    except TrackDataError as err:
        unusable.setdefault("x_contour", err.problem)
        return None


def _default_head_first(decided: list[bool], any_larva: bool, path: Path) -> bool:
    """Spine order of larvae without head/tail fields: the majority of the decided larvae,
    else head-first (with a warning when there are larvae to apply it to)."""
    if decided:
        return 2 * sum(decided) >= len(decided)
    if any_larva:
        log.warning(
            "%s: no x_head/x_tail to tell the spine's head end; assuming x_spine/y_spine list the head first", path
        )
    return True


def _track_of(larva: dict[str, Any], flags: list[str], path: Path) -> Track:
    """The larva as a `Track`: spine turned tail -> head, labels from its flags (None when
    the file has no flag field)."""
    spine = larva["spine"][:, ::-1] if larva["head_first"] else larva["spine"]
    labels = _labels_from_flags(larva["flags"], tuple(flags), larva["t"].size) if flags else None
    try:
        return Track(id=larva["id"], t=larva["t"], spine=np.ascontiguousarray(spine),
                     outline=larva.get("outline"), labels=labels)
    except TrackDataError as err:
        raise err.with_path(path) from None


def _larva_id(trx: _StructArray, i: int) -> str:
    """Larva number from `numero_larva_num` as an integer string (LarvaTagger's id)."""
    where = f"larva #{i + 1} in file order"
    value = trx.get("numero_larva_num", i, where).ravel()
    if value.size != 1 or not np.isfinite(value[0]) or value[0] != np.round(value[0]):
        raise TrackDataError(
            None, f"{where}: numero_larva_num is {value.tolist()}, expected one integer"
        )
    return str(int(value[0]))


def _optional(trx: _StructArray, field: str, i: int, where: str, unusable: dict[str, str]) -> np.ndarray | None:
    """An optional field's value, or None (problem noted in `unusable`) if it is not numeric."""
    try:
        return trx.get(field, i, where)
    except TrackDataError as err:
        unusable.setdefault(field, err.problem)
        return None


def _flag_vector(values: np.ndarray, n: int, name: str, where: str) -> np.ndarray:
    """A behaviour flag as a bool vector (n,): 1 is active, 0, -1 and NaN are not."""
    values = values.ravel()
    if values.size == 0:
        # MATLAB empty: the pipeline computed nothing for this larva, so nothing is active.
        return np.zeros(n, dtype=bool)
    if values.size != n:
        raise TrackDataError(None, f"{where}: behaviour flag '{name}' has {values.size} values for {n} time steps")
    return values > 0.5


def _labels_from_flags(flags: Sequence[np.ndarray], names: Sequence[str], n: int) -> list[LabelStep]:
    """Per-step tuples of active flag names; the tuple is built once per distinct combination."""
    matrix = np.stack(flags, axis=1)  # (n, C)
    codes = matrix.astype(np.int64) @ (np.int64(1) << np.arange(len(names), dtype=np.int64))
    distinct, inverse = np.unique(codes, return_inverse=True)
    steps = np.empty(distinct.size, dtype=object)
    for j, code in enumerate(distinct.tolist()):
        steps[j] = tuple(name for c, name in enumerate(names) if code >> c & 1)
    return steps[inverse.ravel()].tolist() if n else []


def _candidate_layouts(shape: tuple[int, ...], n: int) -> list[str]:
    """Layouts under which an h5py array of `shape` has n frames."""
    if len(shape) == 1:
        return [_ROWS] if shape[0] == n else []
    if len(shape) != 2:
        return []
    found = []
    if shape[1] == n:
        found.append(_MATLAB)
    if shape[0] == n:
        found.append(_ROWS)
    return found


def _file_layout(larvae: list[dict[str, Any]], fields: Sequence[str]) -> str:
    """The layout most larvae unambiguously use for `fields` (MATLAB's when none tells)."""
    votes = {_MATLAB: 0, _ROWS: 0}
    for larva in larvae:
        n = larva["t"].size
        for field in fields:
            array = larva.get(field)
            if array is not None and array.size:
                candidates = _candidate_layouts(array.shape, n)
                if len(candidates) == 1:
                    votes[candidates[0]] += 1
    return _ROWS if votes[_ROWS] > votes[_MATLAB] else _MATLAB


def _frames_first(array: np.ndarray, n: int, field: str, where: str, layout: str) -> np.ndarray:
    """A per-larva 2-D array as (n frames, k columns) whatever its h5py orientation."""
    candidates = _candidate_layouts(array.shape, n)
    if not candidates:
        raise TrackDataError(
            None, f"{where}: '{field}' has shape {array.shape} but 't' has {n} time steps"
        )
    chosen = layout if layout in candidates else candidates[0]
    if array.ndim == 1:
        return array.reshape(n, 1)
    return array.T if chosen == _MATLAB else array


def _spine_is_head_first(larva: dict[str, Any]) -> bool | None:
    """True if spine point 0 is the head, False if it is the tail, None if undecidable.

    Compares, over all frames, the distance of each spine end to `x_head/y_head` and
    `x_tail/y_tail` (whichever of the two is in the file).
    """
    with np.errstate(all="ignore"):  # huge x_head values overflow when squared; they just lose
        return _head_first_vote(larva)


def _head_first_vote(larva: dict[str, Any]) -> bool | None:
    spine = larva["spine"]
    n = spine.shape[0]
    first, last = spine[:, 0], spine[:, -1]
    as_head_first = 0.0
    as_tail_first = 0.0
    used = False
    for end in ("head", "tail"):
        x, y = larva.get(f"x_{end}"), larva.get(f"y_{end}")
        if x is None or y is None or x.size != n or y.size != n:
            continue
        point = np.stack([x, y], axis=-1)
        to_first = np.sqrt(((first - point) ** 2).sum(axis=1))
        to_last = np.sqrt(((last - point) ** 2).sum(axis=1))
        ok = np.isfinite(to_first) & np.isfinite(to_last)
        if not ok.any():
            continue
        used = True
        near_first, near_last = float(to_first[ok].sum()), float(to_last[ok].sum())
        if end == "head":
            as_head_first += near_first
            as_tail_first += near_last
        else:
            as_head_first += near_last
            as_tail_first += near_first
    if not used or as_head_first == as_tail_first:
        return None
    return as_head_first < as_tail_first


def _check_hard_link(path: Path, group: h5py.Group, name: str, shown: str) -> None:
    """Refuse a link that is not a plain (hard) link, without following it."""
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise TrackDataError(
            path, f"{shown!r} is a link to another file ({link.filename!r}); a trx.mat must hold its own data"
        )
    if isinstance(link, h5py.SoftLink):
        raise TrackDataError(path, f"{shown!r} is a soft link (to {link.path!r}); links are refused (MATLAB writes none)")
    if not isinstance(link, h5py.HardLink):
        raise TrackDataError(path, f"{shown!r} is a link of an unknown kind; links are refused (MATLAB writes none)")


def _check_dataset(path: Path, dset: h5py.h5d.DatasetID, where: str, file_bytes: int) -> None:
    """Refuse, before it is read, an array whose data is not in this file or whose declared
    size is implausible: over MAX_TRX_ARRAY_BYTES in memory; contiguous/compact and larger
    than the file; chunked with nothing stored, or declaring more than MAX_TRX_COMPRESSION
    times what it stores (HDF5 would fill the unwritten chunks in)."""
    dcpl = dset.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise TrackDataError(
            path, f"{where} is a virtual dataset (its data would come from other files); a trx.mat must hold its own data"
        )
    if dcpl.get_external_count() > 0:
        name = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise TrackDataError(path, f"{where} keeps its data in another file ({name!r}); a trx.mat must hold its own data")
    shape = dset.shape
    count = 0 if shape is None else math.prod(shape)  # None: a null dataspace, no values
    if count == 0:
        return
    datatype = dset.get_type()  # cheaper than dset.dtype
    declared = count * datatype.get_size()
    per_value = _REFERENCE_BYTES if datatype.get_class() == h5py.h5t.REFERENCE else max(datatype.get_size(), 8)
    in_memory = count * per_value
    values = f"{' x '.join(str(n) for n in shape)} values"
    if in_memory > MAX_TRX_ARRAY_BYTES:
        raise TrackDataError(
            path,
            f"{where} declares {values} ({_size_text(in_memory)} in memory), over the "
            f"{_size_text(MAX_TRX_ARRAY_BYTES)} limit per array (damaged or crafted file)",
        )
    if layout != h5py.h5d.CHUNKED:
        if declared > file_bytes:
            raise TrackDataError(
                path,
                f"{where} declares {values} ({_size_text(declared)}) but the whole file is "
                f"{_size_text(file_bytes)} (damaged or cut file)",
            )
        return
    stored = dset.get_storage_size()
    if stored == 0:
        raise TrackDataError(path, f"{where} declares {values} but stores none of them (damaged or crafted file)")
    if declared > stored * MAX_TRX_COMPRESSION:
        raise TrackDataError(
            path,
            f"{where} declares {values} ({_size_text(declared)}) but stores only {_size_text(stored)}, "
            f"more than {MAX_TRX_COMPRESSION}:1 compression allows: most of it is missing (damaged or crafted file)",
        )


def _size_text(n: int) -> str:
    """Bytes for a person: '812 B', '11.0 MiB', '81.9 GiB'."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError  # unreachable


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5 signature at offset 0 or after a MATLAB 512-byte user block."""
    try:
        with open(path, "rb") as f:
            head = f.read(_USERBLOCK + 8)
    except OSError:
        return False
    return head[:8] == HDF5_SIGNATURE or head[_USERBLOCK : _USERBLOCK + 8] == HDF5_SIGNATURE


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------------- writing

_GEOMETRY_FIELDS = (
    "t", "numero_larva_num", "x_spine", "y_spine", "x_contour", "y_contour",
    "x_head", "y_head", "x_tail", "y_tail", "x_center", "y_center", "larva_length_smooth_5",
)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def write_trx(run: Run, path: str | Path, label_names: list[str] | None = None) -> None:
    """Write `run` as a MATLAB v7.3 `trx.mat` like the Janelia pipeline's (atomically).

    Per larva (MATLAB shapes; h5py sees them transposed): `t` n x 1 (s),
    `numero_larva_num` 1 x 1 (the larva id, which must be an integer), `x_spine`/`y_spine`
    n x k (mm, head first), `x_contour`/`y_contour` n x m (NaN-padded, only when every
    larva has an outline), `x_head`, `y_head`, `x_tail`, `y_tail`, `x_center`, `y_center`
    (n x 1, mm; centre = outline centroid, else the middle spine point),
    `larva_length_smooth_5` (n x 1, mm, spine length averaged over 5 frames) and one n x 1
    flag per label name (1.0 active, 0.0 not; `label_names` defaults to `run.label_names`;
    labels not in the list are not written). Identical input gives identical bytes: the
    header's date comes from `run.metadata["date_time"]`, not from the clock.
    """
    names = list(run.label_names if label_names is None else label_names)
    for name in names:
        if not _MATLAB_IDENTIFIER.match(name) or name in _GEOMETRY_FIELDS:
            raise ValueError(f"label {name!r} cannot be a trx.mat behaviour field (needs a MATLAB name, not a geometry field)")
    unknown = [name for name in names if name not in TRX_BEHAVIOUR_FLAGS]
    if unknown:
        log.warning("%s: labels %s are written but are not standard trx behaviour flags", path, unknown)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicated label names {names}")
    numbers = []
    for track in run.tracks:
        try:
            numbers.append(float(int(track.id)))
        except ValueError:
            raise ValueError(f"larva id {track.id!r} is not an integer; trx.mat numbers larvae") from None
    with_outline = bool(run.tracks) and all(track.outline is not None for track in run.tracks)

    per_larva = [
        _matlab_fields(track, number, names, with_outline) for track, number in zip(run.tracks, numbers)
    ]
    fields = list(per_larva[0]) if per_larva else ["t", "numero_larva_num", "x_spine", "y_spine"]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=_USERBLOCK, libver="earliest") as h5:
            refs_group = h5.create_group("#refs#")
            trx = h5.create_group("trx")
            trx.attrs.create("MATLAB_class", np.bytes_("struct"))
            trx.attrs.create("MATLAB_fields", _matlab_field_names(fields), dtype=h5py.vlen_dtype(np.dtype("S1")))
            ref_arrays = {field: np.empty((1, len(per_larva)), dtype=h5py.ref_dtype) for field in fields}
            counter = 0
            for i, values in enumerate(per_larva):
                for field in fields:
                    # MATLAB is column-major: its n x k matrix is h5py's (k, n).
                    ds = refs_group.create_dataset(
                        _ref_name(counter), data=np.ascontiguousarray(values[field].T), track_times=False
                    )
                    ds.attrs.create("MATLAB_class", np.bytes_("double"))
                    ref_arrays[field][0, i] = ds.ref
                    counter += 1
            for field in fields:
                trx.create_dataset(field, data=ref_arrays[field], dtype=h5py.ref_dtype, track_times=False)
        with open(tmp, "r+b") as f:
            f.write(_matlab_header(run.metadata))


def _matlab_fields(track: Track, number: float, names: Sequence[str], with_outline: bool) -> dict[str, np.ndarray]:
    """One larva's struct fields as MATLAB-shaped float64 arrays (rows = frames)."""
    n = track.n_steps
    head_first = track.spine[:, ::-1]  # Janelia files are written head first
    column = lambda v: np.asarray(v, dtype=np.float64).reshape(n, 1)  # noqa: E731
    fields = {
        "t": column(track.t),
        "numero_larva_num": np.array([[number]]),
        "x_spine": head_first[:, :, 0],
        "y_spine": head_first[:, :, 1],
    }
    if with_outline:
        fields["x_contour"] = track.outline[:, :, 0]
        fields["y_contour"] = track.outline[:, :, 1]
        with np.errstate(invalid="ignore"):
            centre = np.nanmean(track.outline, axis=1)
        # A frame with an empty outline falls back to the spine's middle point.
        missing = ~np.isfinite(centre).all(axis=1)
        centre[missing] = track.spine[missing, track.n_points // 2]
    else:
        centre = track.spine[:, track.n_points // 2]
    fields.update(
        x_head=column(track.spine[:, -1, 0]),
        y_head=column(track.spine[:, -1, 1]),
        x_tail=column(track.spine[:, 0, 0]),
        y_tail=column(track.spine[:, 0, 1]),
        x_center=column(centre[:, 0]),
        y_center=column(centre[:, 1]),
        larva_length_smooth_5=column(_moving_average(track.spine_lengths(), 5)),
    )
    if names:
        flags = _flag_matrix(track, names)
        for j, name in enumerate(names):
            fields[name] = column(flags[:, j])
    return {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}


def _flag_matrix(track: Track, names: Sequence[str]) -> np.ndarray:
    """(n, C) float 1/0 flags; steps are mapped through their distinct label tuples."""
    if track.labels is None:
        return np.zeros((track.n_steps, len(names)))
    distinct: dict[LabelStep, int] = {}
    index = np.fromiter((distinct.setdefault(s, len(distinct)) for s in track.labels), np.int64, track.n_steps)
    table = np.array([[name in step for name in names] for step in distinct], dtype=np.float64)
    return table.reshape(len(distinct), len(names))[index]


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` frames, shrinking the window at the ends."""
    half = width // 2
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(values.size)
    lo = np.clip(idx - half, 0, values.size)
    hi = np.clip(idx + half + 1, 0, values.size)
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)


def _matlab_field_names(fields: Sequence[str]) -> np.ndarray:
    """MATLAB's `MATLAB_fields` attribute: one variable-length array of characters per field."""
    out = np.empty(len(fields), dtype=object)
    for i, name in enumerate(fields):
        out[i] = np.array(list(name), dtype="S1")
    return out


def _ref_name(i: int) -> str:
    """Names in `#refs#` the way MATLAB makes them: a, b, ..., z, A, ..., then two letters."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, len(letters))
        name = letters[r] + name
    return name


def _matlab_header(metadata: dict[str, Any]) -> bytes:
    """The 128-byte MATLAB v7.3 header (text, subsystem offset, version 0x0200, 'IM')."""
    when = _dt.datetime(1970, 1, 1)
    date_time = str(metadata.get("date_time", metadata.get("id", "")))
    if DATE_TIME.fullmatch(date_time):
        try:
            when = _dt.datetime.strptime(date_time, "%Y%m%d_%H%M%S")
        except ValueError:
            pass
    # C asctime() layout in English whatever the locale, as MATLAB prints it.
    created = (
        f"{_DAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day:2d} "
        f"{when:%H:%M:%S} {when.year}"
    )
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 .".encode("ascii")
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
