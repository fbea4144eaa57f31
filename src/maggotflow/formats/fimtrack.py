"""FIMTrack v2 `.csv` tables (transposed: one column per larva, one row per feature and frame).

Layout::

    ,larva(0),larva(1),...
    head_x(0),312.5,,...          <- feature(frame), then one cell per larva; empty = not tracked
    head_x(1),313.0,,...
    ...
    head_y(0),...
    spinepoint_1_x(0),...         <- spinepoint_1 .. spinepoint_N, x and y blocks
    tail_x(0),...  tail_y(0),...  mom_x, mom_y, radius_i, is_coiled, go_phase, left_bended, ...

The spine is head, spinepoint_1..N, tail (FIMTrack names the ends, so no order option is
needed; `ReadOptions.spine_order` does not apply). The larvae's motion is still checked
(`maggotflow.orientation.check_named_head`): a warning names the file and the figure when
they move decisively backwards (head and tail swapped by the tracker); metadata records
spine_order ("head_first", as the file is laid out), spine_order_decided_by and the figures.
Impossible values (beyond 1e5 px, one-frame jumps of many body lengths, or a spine collapsed
to one point) are bridged by `maggotflow.plausibility` (warning naming file, frame, line and
larva). Coordinates are pixels and the file has no times: `ReadOptions.framerate` (Hz) and
`ReadOptions.pixelsize_um` (um per pixel) give t = frame / framerate (s) and
mm = px * pixelsize_um / 1000. A larva missing in some frames gets a track with a gap (those
frames are absent): a column is one animal (FIMTrack gives a larva it finds again a new id),
so a gap inside a column stays one track, which `maggotflow.segments` interpolates across.
Features other than the spine are ignored on reading.

Re-used ids: a header naming `larva(N)` in two columns (tables joined side by side) is the
csv form of one id used for two animals. When the columns' frames do not overlap, the later
column is read as another larva, numbered from the file's largest id + 1 upwards in column
order, with a warning naming the file, the id and both columns' frames and times; metadata
`reused_larva_ids` maps each new id to N (as for `.spine` files). When they overlap (two
animals at once), TrackDataError names both columns and their frames.

Reading: pandas' C parser reads the cells while a worker thread hashes the bytes and counts
control bytes, line ends and commas. When those counts show the common layout (no blank,
CR-terminated or binary lines, the header's number of cells on every line) and every row
name is exactly `feature(frame)`, the line-by-line scan and the regex extraction are
skipped; otherwise they run as before and name the bad line (same messages, same Run).
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maggotflow.atomic import atomic_path
from maggotflow.formats import ReadOptions, read_input_bytes
from maggotflow.formats.spine import numeric_cells, scan_text_lines, warn_skipped_larvae
from maggotflow.orientation import check_named_head
from maggotflow.plausibility import MAX_ABS_COORDINATE, bridge_or_leave_out
from maggotflow.tracks import Run, Track, TrackDataError, choreography_metadata, run_metadata

log = logging.getLogger(__name__)

_LARVA_CELL = re.compile(r"larva\(([0-9]+)\)")
_ROW_NAME = r"([A-Za-z0-9_]+)\(([0-9]+)\)"
_ROW_NAME_FULL = re.compile(_ROW_NAME)
_SPINEPOINT = re.compile(r"spinepoint_([0-9]+)_([xy])")
# Whole-buffer checks and the fast row-name parser first (tests switch them off to compare).
FAST_PARSER = True
# Frame times written by write_fimtrack must sit on the frame grid within this fraction of a frame.
GRID_TOLERANCE = 0.01


def _parse_header(path: Path, first_line: bytes) -> tuple[list[str], bool]:
    """Larva ids from the header, and whether lines end with an extra (empty) cell."""
    try:
        header = first_line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise TrackDataError(path, "is not a text file (header is not readable text)") from None
    cells = header.split(",")
    if cells[0].strip() != "" or len(cells) < 2:
        raise TrackDataError(path, "is not a FIMTrack v2 csv: the header must be ',larva(0),larva(1),...'")
    trailing = cells[-1].strip() == "" and len(cells) > 2
    larva_cells = cells[1:-1] if trailing else cells[1:]
    ids: list[str] = []
    for column, cell in enumerate(larva_cells, start=2):
        match = _LARVA_CELL.fullmatch(cell.strip())
        if match is None:
            raise TrackDataError(path, f"header cell {column} is {cell!r}, expected 'larva(N)'")
        ids.append(str(int(match.group(1))))  # a repeated id is resolved by _track_ids
    return ids, trailing


def _track_ids(path: Path, larva_ids: list[str], present: np.ndarray, framerate: float) -> tuple[list[str], dict]:
    """The larva id of each column, and the metadata entry for re-used ids ({} when none).

    A `larva(N)` column whose id an earlier column already has is a re-used id when their
    frames do not overlap: it becomes larva max id + 1 (then + 2, ... in column order), with a
    warning naming both columns' frames and times; metadata `reused_larva_ids` maps the new
    id to N. Overlapping frames raise TrackDataError (two animals cannot share one id).
    present: (frame, column) whether the column has a whole spine in that frame.
    """
    if len(set(larva_ids)) == len(larva_ids):
        return larva_ids, {}
    names = list(larva_ids)
    next_id = max(int(larva) for larva in larva_ids) + 1
    columns_of: dict[str, list[int]] = {}
    renamed: dict[str, str] = {}
    for j, larva in enumerate(larva_ids):
        earlier = columns_of.setdefault(larva, [])
        frames = np.flatnonzero(present[:, j])
        for e in earlier:
            other = np.flatnonzero(present[:, e])
            if frames.size and other.size and frames[0] <= other[-1] and other[0] <= frames[-1]:
                raise TrackDataError(
                    path,
                    f"larva {larva} appears twice in the header (columns {e + 2} and {j + 2}) with overlapping "
                    f"frames ({other[0]}-{other[-1]} and {frames[0]}-{frames[-1]}): two animals cannot share one id "
                    "at the same time",
                )
        if earlier:
            names[j] = str(next_id)
            renamed[names[j]] = larva
            next_id += 1
        earlier.append(j)

    def span(j: int) -> str:
        frames = np.flatnonzero(present[:, j])
        if not frames.size:
            return f"column {j + 2} (no complete frame)"
        return (f"column {j + 2} (frames {frames[0]}-{frames[-1]}, "
                f"{frames[0] / framerate:.3f}-{frames[-1] / framerate:.3f} s)")

    for larva, columns in columns_of.items():
        if len(columns) > 1:
            parts = [f"{span(columns[0])} stays larva {larva}"] + [
                f"{span(j)} becomes larva {names[j]}" for j in columns[1:]
            ]
            log.warning(
                "%s: larva id %s is re-used: %d columns of the header are larva(%s), in frames that do not overlap, "
                "so they are read as separate larvae (nothing is interpolated between them): %s",
                path, larva, len(columns), larva, "; ".join(parts),
            )
    return names, {"reused_larva_ids": renamed}


def _check_cell_counts(path: Path, data: bytes, n_cells: int) -> np.ndarray:
    """1-based line numbers of the non-blank data lines; every line must have `n_cells` cells."""
    commas, non_blank = scan_text_lines(path, data, "commas", allow_non_ascii=True, kind="FIMTrack csv")
    lines = np.flatnonzero(non_blank) + 1
    commas = commas[non_blank]
    bad = np.flatnonzero(commas != n_cells - 1)
    if bad.size:
        i = int(bad[0])
        line, n = int(lines[i]), int(commas[i]) + 1
        if i == lines.size - 1 and n < n_cells:
            raise TrackDataError(path, f"last line {line} is truncated ({n} cells instead of {n_cells})")
        raise TrackDataError(path, f"line {line} has {n} cells but the header has {n_cells}: wrong cell count")
    return lines[1:]  # the header is line 1


def _byte_counts(data: bytes) -> tuple[int, int, int]:
    """(control bytes, line ends, commas) of the file: whole-buffer checks of the common layout."""
    b = np.frombuffer(data, dtype=np.uint8)
    return int(np.count_nonzero(b < 32)), int(np.count_nonzero(b == 10)), int(np.count_nonzero(b == 44))


def _plain_lines(counts: tuple[int, int, int], data: bytes, n_cells: int) -> np.ndarray | None:
    """Line numbers of the data rows (2, 3, ...) when the file has the common layout, else None.

    Common layout: no blank lines, no CR, tab or binary byte (the only control bytes are the
    line ends) and as many commas as `n_cells` cells on every line would give. pandas refuses
    a line with too many cells, so with the right total no line has too few either.
    """
    control, newlines, commas = counts
    n_lines = newlines + (not data.endswith(b"\n"))
    if control != newlines or commas != n_lines * (n_cells - 1):
        return None
    return np.arange(2, n_lines + 1)


def _row_names_fast(names: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(feature, frame) per row when every row name is exactly 'feature(frame)', else None
    (then the careful extraction names the bad row). About 5 times faster than str.extract."""
    match = _ROW_NAME_FULL.fullmatch
    try:  # a missing name (NaN) is not a string: TypeError
        parts = [m.groups() if (m := match(name)) else None for name in names.to_numpy(dtype=object)]
        if not parts or None in parts:
            return None
        features, frames = zip(*parts)
        return np.array(features, dtype=object), np.array(frames).astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_cells(
    path: Path, data: bytes, n_cells: int, counts: concurrent.futures.Future
) -> tuple[pd.DataFrame, np.ndarray]:
    """The cell table (pandas C parser) and the file line number of each of its rows.

    `counts` (a future of `_byte_counts`) tells whether the file has the common layout; only
    when it does not, or pandas fails, are the lines scanned one by one
    (`_check_cell_counts`), so that the message names the line and the problem.
    """
    try:
        df = pd.read_csv(
            io.BytesIO(data),
            header=None,
            skiprows=1,
            names=list(range(n_cells)),
            index_col=False,
            dtype={0: str},
            quoting=csv.QUOTE_NONE,
            skipinitialspace=True,
            na_values=["-nan", "-NaN", "nan", "NaN"],  # C++ streams print NaN like this: missing too
            encoding="utf-8",
            engine="c",
        )
        error = None
    except (ValueError, pd.errors.ParserError) as err:
        df, error = None, err
    lines = _plain_lines(counts.result(), data, n_cells) if FAST_PARSER and error is None else None
    if lines is None:
        lines = _check_cell_counts(path, data, n_cells)
    if lines.size == 0:
        raise TrackDataError(path, "has a header but no data rows")
    if error is not None:
        raise TrackDataError(path, f"cannot be parsed as a FIMTrack csv ({str(error).splitlines()[0]})") from None
    if len(df) != lines.size:
        raise TrackDataError(path, f"cannot be parsed as a FIMTrack csv ({len(df)} rows for {lines.size} lines)")
    return df, lines


def _spine_features(path: Path, features: set[str]) -> list[str]:
    """Feature names of the spine, head first: head, spinepoint_1..N, tail (x then y)."""
    for end in ("head", "tail"):
        for axis in ("x", "y"):
            if f"{end}_{axis}" not in features:
                raise TrackDataError(path, f"has no {end}_{axis} rows: not a FIMTrack spine table")
    numbers = sorted({int(m.group(1)) for f in features if (m := _SPINEPOINT.fullmatch(f))})
    if numbers != list(range(1, len(numbers) + 1)):
        raise TrackDataError(path, f"spine points are numbered {numbers}, expected 1..{len(numbers)} without gaps")
    for i in numbers:
        for axis in ("x", "y"):
            if f"spinepoint_{i}_{axis}" not in features:
                raise TrackDataError(path, f"has spinepoint_{i} rows but no spinepoint_{i}_{axis} rows")
    points = ["head"] + [f"spinepoint_{i}" for i in numbers] + ["tail"]
    return [f"{p}_{axis}" for p in points for axis in ("x", "y")]


def _run_metadata(path: Path) -> dict:
    """id = the date_time when the name is `date_time@genotype@...`, else the file stem."""
    meta = choreography_metadata(path.name)
    return run_metadata(meta.get("date_time", path.stem), meta, path.name)


@dataclass
class CellTable:
    """A FIMTrack csv parsed and checked cell by cell (`read_cells`), before tracks are built.

    larva_ids: from the header, in column order (an id may repeat: `read_fimtrack` reads a
    re-used id as another larva, see the module docstring). cells: one row per data line,
    column 0 the row name, then one column per larva (NaN = empty). lines: file line number
    of each row. feature, frame: the row name's parts. sha1: hex SHA-1 of the file's bytes.
    """

    larva_ids: list[str]
    cells: pd.DataFrame
    lines: np.ndarray
    feature: pd.Series
    frame: np.ndarray
    sha1: str


def read_cells(path: str | Path) -> CellTable:
    """Read and check a FIMTrack csv's cells (header, cell counts, row names); TrackDataError
    naming the line otherwise. The parsing half of `read_fimtrack` (timed by the benchmarks)."""
    path = Path(path)
    data = read_input_bytes(path)
    if not data[:4096].strip() and not data.strip():
        raise TrackDataError(path, "is empty")
    end = data.find(b"\n")
    first_line = data if end < 0 else data[:end]
    larva_ids, trailing = _parse_header(path, first_line)
    n_cells = len(larva_ids) + 1 + int(trailing)
    # The hash and the whole-buffer checks run on a worker thread while pandas parses
    # (hashlib and numpy release the GIL).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sha1 = pool.submit(lambda: hashlib.sha1(data).hexdigest())  # same as file_sha1(path)
        counts = pool.submit(_byte_counts, data)
        df, lines = _parse_cells(path, data, n_cells, counts)
        sha1 = sha1.result()

    fast = _row_names_fast(df[0]) if FAST_PARSER else None
    if fast is None:
        names = df[0].str.strip().str.extract(_ROW_NAME)
        unnamed = names[0].isna().to_numpy(bool)
        if unnamed.any():
            i = int(np.argmax(unnamed))
            raise TrackDataError(path, f"line {lines[i]}: row name {df[0].iloc[i]!r} is not 'feature(frame)'")
        feature, frame = names[0], names[1].astype(np.int64).to_numpy()
    else:
        feature, frame = pd.Series(fast[0]), fast[1]

    return CellTable(larva_ids, df, lines, feature, frame, sha1)


def read_fimtrack(path: str | Path, options: ReadOptions | None = None) -> Run:
    """Read a FIMTrack v2 csv.

    In: path; `options.framerate` (Hz), `options.pixelsize_um` (um/px, None = keep pixels as
    units, with a warning), `options.min_steps`.
    Out: a Run with one Track per tracked `larva(N)` column (id "N"; a re-used id's later
    column gets a new id, see the module docstring): t = frame / framerate (s), spine
    (n, k, 2) tail -> head in mm (k = N spine points + 2). Frames where a larva's spine cells
    are empty are left out of its track (a gap).
    """
    path = Path(path)
    options = options or ReadOptions()
    table = read_cells(path)
    spine = _spine_block(path, table)
    track_ids, reused_metadata = _track_ids(path, table.larva_ids, spine.present, options.framerate)
    partial = spine.any_cell & ~spine.present
    if partial.any():
        log.warning(
            "%s: %d larva-frame(s) with an incomplete spine (some cells empty) were left out",
            path, int(partial.sum()),
        )
    scale = _mm_per_unit(path, options)
    tracks = []
    skipped = []
    left_out: dict[str, str] = {}
    for j, larva in enumerate(track_ids):
        frames = np.flatnonzero(spine.present[:, j])
        if frames.size < options.min_steps:
            skipped.append((larva, int(frames.size)))
            continue
        track = _larva_track(path, spine, j, larva, frames, options.framerate, scale, left_out)
        if track is not None:
            tracks.append(track)
    left_out.update(warn_skipped_larvae(log, path, skipped, options.min_steps))
    orientation = check_named_head(path, [(tr.t, tr.spine) for tr in tracks], "file", "the file's head/tail rows")
    return Run(
        metadata={**_run_metadata(path), "spine_order": "head_first", **orientation, **reused_metadata},
        tracks=tracks,
        source=path,
        format="fimtrack",
        sha1=table.sha1,
        left_out=left_out,
    )


@dataclass
class _SpineBlock:
    """The spine rows of a FIMTrack table as a dense (feature, frame, larva) block, in pixels.

    features: head_x, head_y, spinepoint_1_x, ..., tail_y (head first, as in the file).
    block: (F, frames, L), NaN where the tracker has no value. line_of: (F, frames) file line
    of each row, for messages. present: (frames, L) the whole spine is known; any_cell:
    (frames, L) at least one of its cells is.
    """

    features: list[str]
    block: np.ndarray
    line_of: np.ndarray
    present: np.ndarray
    any_cell: np.ndarray


def _spine_block(path: Path, table: CellTable) -> _SpineBlock:
    """The table's spine rows checked (each feature(frame) once, numbers, none infinite) and
    laid out as a `_SpineBlock`; the other features are ignored."""
    features = _spine_features(path, set(table.feature.unique()))
    code_of = {f: c for c, f in enumerate(features)}
    codes = table.feature.map(code_of).fillna(-1).to_numpy(dtype=np.int64)  # -1: a feature we do not need
    wanted = np.flatnonzero(codes >= 0)
    codes, frame, wanted_lines = codes[wanted], table.frame[wanted], table.lines[wanted]

    key = codes * (frame.max() + 1) + frame
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise TrackDataError(
            path,
            f"row {features[codes[a]]}({frame[a]}) appears twice (lines {wanted_lines[a]} and {wanted_lines[b]})",
        )
    values = numeric_cells(path, table.cells.iloc[wanted, 1 : 1 + len(table.larva_ids)], wanted_lines)
    if np.isinf(values).any():
        i = int(np.argmax(np.isinf(values).any(axis=1)))
        raise TrackDataError(path, f"line {wanted_lines[i]} has infinite coordinates")

    n_frames = int(frame.max()) + 1
    block = np.full((len(features), n_frames, len(table.larva_ids)), np.nan)
    block[codes, frame] = values
    line_of = np.zeros((len(features), n_frames), dtype=np.int64)
    line_of[codes, frame] = wanted_lines
    finite = np.isfinite(block)
    return _SpineBlock(features, block, line_of, finite.all(axis=0), finite.any(axis=0))


def _mm_per_unit(path: Path, options: ReadOptions) -> float:
    """mm per pixel from `options.pixelsize_um`; 1 (pixels kept, with a warning) when unknown."""
    if options.pixelsize_um is None:
        log.warning("%s: pixel size unknown; coordinates kept in pixels (1 px = 1 unit)", path)
        return 1.0
    return options.pixelsize_um / 1000.0


def _larva_track(path: Path, spine: _SpineBlock, j: int, larva: str, frames: np.ndarray, framerate: float,
                 scale: float, left_out: dict[str, str]) -> Track | None:
    """Column `j`'s track over its complete `frames`: implausible frames bridged (checked in
    pixels, the file's units), spine turned tail -> head and scaled to mm. None when the
    larva is corrupt (noted in `left_out` by `bridge_or_leave_out`)."""
    k = len(spine.features) // 2
    raw = spine.block[:, frames, j]  # (features, n) -> (n, k, 2), head first in the file
    line_of = spine.line_of
    bridged = bridge_or_leave_out(
        left_out, path, larva, frames / framerate, raw.T.reshape(-1, k, 2),
        where=lambda i: _where(raw[:, i], line_of[:, frames[i]], int(frames[i])),
    )
    if bridged is None:
        return None
    points = bridged[0][:, ::-1] * scale  # head first in the file -> tail first in maggotflow
    try:
        return Track(larva, frames / framerate, np.ascontiguousarray(points))
    except TrackDataError as err:
        raise err.with_path(path) from None


def _where(cells: np.ndarray, lines: np.ndarray, frame: int) -> str:
    """'frame 17 (line 123)': the line of the first impossible cell, else of the head_x row."""
    with np.errstate(invalid="ignore"):
        beyond = np.flatnonzero(np.abs(cells) > MAX_ABS_COORDINATE)
    return f"frame {frame} (line {lines[beyond[0] if beyond.size else 0]})"


def write_fimtrack(
    run: Run,
    path: str | Path,
    framerate: float = 30.0,
    pixelsize_um: float | None = None,
    overwrite: bool = True,
) -> None:
    """Write `run` as a FIMTrack v2 csv, atomically.

    In: tracks on a common frame grid (t * framerate within 1% of a whole frame, t >= 0),
    whole-number larva ids, the same number k >= 2 of spine points everywhere.
    Out: blocks head_x, head_y, spinepoint_1..k-2 x/y, tail_x, tail_y, mom_x, mom_y for frames
    0..max, in pixels (mm * 1000 / pixelsize_um; None writes mm values unchanged). Frames where
    a larva is absent are empty cells. mom (centre of mass) is approximated by the mean of the
    spine points; radius and behaviour blocks are not written.
    """
    path = Path(path)
    if not framerate > 0:
        raise ValueError(f"framerate must be > 0 Hz, got {framerate}")
    if not run.tracks:
        raise ValueError("a FIMTrack csv needs at least one larva")
    ks = {track.n_points for track in run.tracks}
    if len(ks) != 1 or min(ks) < 2:
        raise ValueError(f"FIMTrack needs the same number (>= 2) of spine points for every larva, got {sorted(ks)}")
    k = ks.pop()
    scale = 1.0 if pixelsize_um is None else 1000.0 / pixelsize_um  # px per mm

    frames_of = []
    for track in run.tracks:
        if not str(track.id).isdigit():
            raise ValueError(f"larva id {track.id!r} is not a whole number; FIMTrack needs larva(N) columns")
        exact = track.t * framerate
        frames = np.rint(exact).astype(np.int64)
        if np.abs(exact - frames).max() > GRID_TOLERANCE or frames.min() < 0:
            raise ValueError(f"larva {track.id}: times are not on a {framerate} Hz frame grid starting at 0 s")
        if np.any(np.diff(frames) <= 0):
            raise ValueError(f"larva {track.id}: two time steps fall on the same frame at {framerate} Hz")
        frames_of.append(frames)
    n_frames = int(max(frames.max() for frames in frames_of)) + 1

    points = ["head"] + [f"spinepoint_{i}" for i in range(1, k - 1)] + ["tail"]
    features = [f"{p}_{axis}" for p in points for axis in ("x", "y")] + ["mom_x", "mom_y"]
    block = np.full((len(features), n_frames, len(run.tracks)), np.nan)
    for j, (track, frames) in enumerate(zip(run.tracks, frames_of)):
        head_first = track.spine[:, ::-1] * scale  # (n, k, 2)
        block[: 2 * k, frames, j] = head_first.reshape(len(frames), 2 * k).T
        block[2 * k :, frames, j] = head_first.mean(axis=1).T

    index = [f"{feature}({f})" for feature in features for f in range(n_frames)]
    table = pd.DataFrame(
        block.reshape(len(features) * n_frames, len(run.tracks)),
        index=index,
        columns=[f"larva({int(track.id)})" for track in run.tracks],
    )
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.to_csv(tmp, float_format="%.4f", na_rep="", lineterminator="\n", encoding="ascii")
