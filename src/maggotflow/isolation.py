"""Per-file isolation: one track file (+ its labels) -> the project's own HDF5 intermediate.

Every later stage reads only these intermediates, so each track file is parsed exactly once
and nothing is shared between files (no common `data/` folder). The layout is columnar
(all larvae of the file concatenated, `offsets` delimit them), see docs/architecture.md:

    / attrs: format_version, source_path, source_name, sha1, format, metadata (JSON),
             label_source ("" when unlabelled); the reader's head/tail decision is in
             metadata (spine_order, spine_order_decided_by and the figures)
    /tracks/ids (L,) str   /tracks/offsets (L+1,) int64   /tracks/t (R,) float64
    /tracks/spine (R, k, 2) float64 mm tail->head   /tracks/outline (R, m, 2) float32 (opt.)
    /labels/names (C,) str   /labels/matrix (R, C) bool   (optional)

The file is written under a temporary name and renamed, with no timestamps, so identical
input gives identical bytes.

Reading an intermediate has one home too: `Intermediate` checks the format once and reads
metadata, labels, larvae and tracks on demand (the dataset reads labels then spines, prediction
a whole Run through `read_isolated`, the output name `source_name` alone).

This module also owns the one decision of which files can be trained on: an intermediate
is labelled when it carries behaviour labels (`split_labelled`, used by the pipeline, the
backend and the workflow's dataset job). Command line: `maggotflow isolate`
(`maggotflow.cli.isolate`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from maggotflow.atomic import atomic_path, is_maggotflow_hdf5, refuse_foreign
from maggotflow.formats import ReadOptions, check_regular_file, read_run
from maggotflow.tracks import Run, Track, TrackDataError, label_matrix, labels_from_matrix

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")


def isolate(
    track_path: str | Path,
    out_path: str | Path,
    label_path: str | Path | None = None,
    options: ReadOptions | None = None,
    check_sha1: bool = True,
) -> Run:
    """Read `track_path` (and `label_path`), write the intermediate `out_path`, return the Run.

    Labels come from the label file when given, else from the track file itself (behaviour
    flags of a `trx.mat`), else the intermediate is unlabelled.
    """
    track_path, out_path = Path(track_path), Path(out_path)
    run = read_run(track_path, options)
    label_source = ""
    if label_path is not None:
        from maggotflow.formats.label import attach_labels, read_label_file

        run = attach_labels(run, read_label_file(label_path), label_path, check_sha1=check_sha1)
        label_source = Path(label_path).name
    elif run.has_labels:
        label_source = track_path.name
    if not run.tracks:
        raise TrackDataError(track_path, "contains no larva with enough time steps to tag")
    write_isolated(run, out_path, label_source=label_source)
    return run


def write_isolated(run: Run, out_path: str | Path, label_source: str = "") -> None:
    """Write `run` as an intermediate (atomic, deterministic bytes)."""
    tracks = run.tracks
    offsets = np.zeros(len(tracks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([tr.n_steps for tr in tracks])
    k = {tr.n_points for tr in tracks}
    if len(k) > 1:
        raise TrackDataError(run.source, f"larvae have different numbers of spine points {sorted(k)}")
    refuse_foreign(out_path, is_maggotflow_hdf5)  # replace an earlier intermediate, nothing else
    with atomic_path(out_path) as tmp:
        # Fixed-size layout, no time tracking, no chunk/filter randomness: same input, same bytes.
        with h5py.File(tmp, "w", track_order=True, libver=("earliest", "v110")) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["source_path"] = str(run.source or "")
            f.attrs["source_name"] = run.source.name if run.source else ""
            f.attrs["sha1"] = run.sha1 or ""
            f.attrs["format"] = run.format or ""
            f.attrs["metadata"] = json.dumps(run.metadata, sort_keys=False, default=str)
            f.attrs["label_source"] = label_source
            f.attrs["read_options"] = "" if run.read_options is None else json.dumps(run.read_options, sort_keys=True)
            g = f.create_group("tracks")
            _dataset(g, "ids", np.array([tr.id for tr in tracks], dtype=object), dtype=_STR)
            _dataset(g, "offsets", offsets)
            _dataset(g, "t", _concat([tr.t for tr in tracks], (0,)))
            _dataset(g, "spine", _concat([tr.spine for tr in tracks], (0, max(k or {1}), 2)))
            if any(tr.outline is not None for tr in tracks):
                _dataset(g, "outline", _outline_block(tracks))
            names = run.label_names
            if run.has_labels:
                lg = f.create_group("labels")
                _dataset(lg, "names", np.array(names, dtype=object), dtype=_STR)
                rows = [tr.labels if tr.labels is not None else [()] * tr.n_steps for tr in tracks]
                matrix = (np.concatenate([label_matrix(r, names) for r in rows]) if rows
                          else np.zeros((0, len(names)), bool))
                _dataset(lg, "matrix", matrix)


def _dataset(group: h5py.Group, name: str, data: np.ndarray, dtype=None) -> None:
    group.create_dataset(name, data=data, dtype=dtype, track_times=False)


def _concat(arrays: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape)


def _outline_block(tracks: list[Track]) -> np.ndarray:
    m = max(tr.outline.shape[1] for tr in tracks if tr.outline is not None)
    parts = []
    for tr in tracks:
        block = np.full((tr.n_steps, m, 2), np.nan, dtype=np.float32)
        if tr.outline is not None:
            block[:, : tr.outline.shape[1]] = tr.outline
        parts.append(block)
    return np.concatenate(parts)


class Intermediate:
    """An intermediate opened for reading: the one reader of the layout above.

    Opening checks once that `path` is a readable intermediate of this format (TrackDataError,
    one line, otherwise) and reads its attributes; behaviour labels, larvae and tracks are
    read on demand, so a caller that needs only the labels never reads a spine. Use as a
    context manager (or call `close()`).
    Attributes: `path`, `metadata` (the track file's), `source_path` and `source_name` (the
    track file's path and basename, "" when unknown), `sha1`, `format`, `label_source` (""
    when unlabelled), `read_options` (dict, or None when not recorded).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_regular_file(self.path)  # before any open: a FIFO would block forever
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise TrackDataError(self.path, f"is not a readable maggotflow intermediate ({err})") from None
        attrs = self._file.attrs
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION or "tracks" not in self._file:
            found = f"found format {version}" if "format_version" in attrs else "no format recorded"
            self.close()
            raise TrackDataError(self.path, f"is not a maggotflow intermediate of format {FORMAT_VERSION} "
                                            f"({found}; make it with `maggotflow isolate`)")
        self.metadata: dict = json.loads(attrs.get("metadata", "{}"))
        self.source_path = str(attrs.get("source_path", ""))
        self.source_name = str(attrs.get("source_name", ""))
        self.sha1 = str(attrs.get("sha1", ""))
        self.format = str(attrs.get("format", ""))
        self.label_source = str(attrs.get("label_source", ""))
        read_options = json.loads(str(attrs.get("read_options", "")) or "null")
        self.read_options: dict | None = read_options if isinstance(read_options, dict) else None

    def label_names(self) -> list[str]:
        """The behaviour label names recorded ([] when unlabelled)."""
        return list(self._file["labels/names"].asstr()[()]) if "labels" in self._file else []

    def label_matrix(self) -> np.ndarray | None:
        """(R, C) bool: time step x label name, one row per time step of all larvae; None when unlabelled."""
        return self._file["labels/matrix"][()] if "labels" in self._file else None

    def larvae(self) -> tuple[list[str], np.ndarray]:
        """Larva ids and their row offsets ((L+1,) int64: larva i holds rows offsets[i]:offsets[i+1]).

        TrackDataError when the offsets disagree with the ids or with the rows stored."""
        g = self._file["tracks"]
        ids, offsets = list(g["ids"].asstr()[()]), g["offsets"][()].astype(np.int64)
        rows = {g["t"].shape[0]} | ({self._file["labels/matrix"].shape[0]} if "labels" in self._file else set())
        if offsets.size != len(ids) + 1 or rows != {int(offsets[-1])}:
            raise TrackDataError(self.path, "is a damaged intermediate (labels and tracks disagree in length)")
        return ids, offsets

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Times (R,) float64 in s and spines (R, k, 2) float64 in mm, tail -> head, all larvae."""
        g = self._file["tracks"]
        return g["t"][()], g["spine"][()]

    def outlines(self) -> np.ndarray | None:
        """Outlines (R, m, 2) float32 in mm (NaN-padded), or None when the file has none."""
        g = self._file["tracks"]
        return g["outline"][()] if "outline" in g else None

    def run(self, with_outline: bool = False) -> Run:
        """The whole file as a Run (see `read_isolated`)."""
        ids, offsets = self.larvae()
        t, spine = self.steps()
        outline = self.outlines() if with_outline else None
        names, matrix = self.label_names(), self.label_matrix()
        tracks = []
        for i, larva in enumerate(ids):
            a, b = int(offsets[i]), int(offsets[i + 1])
            tracks.append(Track(id=larva, t=t[a:b], spine=spine[a:b],
                                outline=None if outline is None else outline[a:b],
                                labels=None if matrix is None else labels_from_matrix(matrix[a:b], names)))
        return Run(metadata=self.metadata, tracks=tracks, source=Path(self.source_path) if self.source_path else None,
                   format=self.format or None, sha1=self.sha1 or None, read_options=self.read_options)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Intermediate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_isolated(path: str | Path, with_outline: bool = False) -> Run:
    """Read an intermediate back into a Run (labels attached when present).

    `run.metadata` is the track file's metadata; `run.source` its original path; `run.sha1`,
    `run.format` and `run.read_options` as recorded at isolation.
    """
    with Intermediate(path) as intermediate:
        return intermediate.run(with_outline)


def isolated_label_names(path: str | Path) -> list[str]:
    """Label names recorded in an intermediate ([] when unlabelled), without reading tracks."""
    with Intermediate(path) as intermediate:
        return intermediate.label_names()


def split_labelled(intermediates: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """The one decision of which files can be trained on: (labelled, unlabelled) intermediates.

    An intermediate is labelled when it carries behaviour labels (from its `.label` file or
    a `trx.mat`'s behaviour flags, see `isolate`); the unlabelled ones can still serve
    pretraining, which needs no labels. Order is kept; each unlabelled one is logged as a
    warning.
    """
    labelled: list[Path] = []
    unlabelled: list[Path] = []
    for path in map(Path, intermediates):
        (labelled if isolated_label_names(path) else unlabelled).append(path)
    for path in unlabelled:
        log.warning("%s: no behaviour labels (no .label file, no behaviour flags); not in the training dataset",
                    path)
    return labelled, unlabelled
