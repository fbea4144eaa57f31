"""Choreography `.spine` / `.outline` files (MWT tracker + Choreography, plain text).

One line per larva per frame, whitespace separated::

    20140101_120000 12 3.141 x1 y1 x2 y2 ... xk yk

i.e. date_time (`YYYYMMDD_HHMMSS`), larva id (whole number), time (s), then k points (mm).
All lines of a `.spine` file have the same k. The `.outline` file with the same stem has
the same layout with a contour whose number of points may change from line to line.

Point order: whether a `.spine` line lists the head or the tail first is a tracker setting
that the file does not record. `ReadOptions.spine_order` "auto" (default) decides it per file
from the larvae's motion (they crawl forward most of the time; `maggotflow.orientation`):
decisive evidence picks the order, weak evidence (still larvae, too little motion) falls
back to head first, the documented convention, with a warning naming the file and the
figure. "head_first" / "tail_first" force the order (a warning when the motion decisively
contradicts it). The order used and the figures go to `run.metadata` (`spine_order`,
`spine_order_decided_by`, `spine_order_forward_fraction`, `spine_order_moving_steps`,
`spine_order_head_sweep_ratio`), so
they reach the intermediate and every predicted `.label` file. Inside maggotflow spines are
tail -> head. Outlines are closed contours and are kept in file order.

Impossible values (beyond 1e5 mm, a one-frame jump of many body lengths, or a spine
collapsed to one point) are bridged like dropped frames by `maggotflow.plausibility`
(warning naming file, lines and larva).

Larvae and blocks of lines: a larva's lines may be interleaved with other larvae's (a
frame-major file lists every larva of a frame, then the next frame); they are one track as
long as its times increase, and a block that continues where the larva's previous block
ended is the same larva. A larva id that comes back in another block of lines after a time
gap (`maggotflow.tracks.is_time_gap`: more than 2 of the larva's usual intervals), where
the file's time went back in between (the file lists larvae one after the other), is a
*re-used id* (a tracker that gives a freed id to a new animal, or two files joined). Each
such block is read as a larva of its own, so no track, and no segment, spans the gap: the
first block keeps the id, later blocks are numbered from the file's largest id + 1 upwards
(by id in the file, then time), whole numbers as LarvaTagger needs. A warning names the
file, the id and each block's lines and times; `run.metadata["reused_larva_ids"]` maps each
new id to the file's id (it reaches the intermediate and every predicted `.label`). The
`.outline` is grouped the same way. Two blocks of one id whose times overlap are two
animals at once: TrackDataError naming both blocks' lines and times. In a file whose lines
are in time order (the time never goes back), a larva absent for a while stays one track
with a gap, as the tracker wrote it, like a gap inside one block; `maggotflow.segments`
interpolates across such gaps.

Reading has two parsers with the same results. The fast one (`_parse_table_fast`) assumes
the common layout: single spaces between values, no blank or CR-terminated lines, one
date_time for the file, whole-number larva ids, finite numbers and (.spine) the same number
of values on every line. For .spine files it runs pyarrow's CSV reader on one thread
(`_parse_arrow`, record batches of `ARROW_BLOCK_BYTES`), where pyarrow is installed and reads
numbers bit for bit as the installed pandas does (`_arrow`); else, and for .outline files
(whose lines differ in length), pandas' single-character-separator C parser on blocks of
`FAST_CHUNK_LINES` lines (`_parse_blocks`). `fast_spine_parser()` names the one in use. Either
reads straight from the file, copying each block into float64 arrays of the whole table,
while a worker thread hashes the bytes (the Run's sha1) and counts their control bytes.
Whenever a check fails, the careful parser (`_parse_table`) reads the file again: it scans
every line's values as bytes, which gives exact line numbers, and raises TrackDataError
naming the line and the problem. So a broken file costs two reads and gets the same message
as before.

Memory: the fast parser never holds the file's bytes, only one block of text and its record
batch or DataFrame besides the table. When each larva is one block of lines (Choreography and
the simulator write them so), tracks are views into the table (no per-larva copy), bridging
returns its input when nothing is impossible, and head-first files are flipped in place. A
1.16 GB .spine is read in well under 2 GB. `ReadOptions.outlines=False` leaves the
`.outline` (about twice the size of the .spine) unopened: prediction needs spines only.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import contextlib
import csv
import functools
import hashlib
import io
import logging
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maggotflow.atomic import atomic_path
from maggotflow.formats import ReadOptions, check_not_gzip, check_regular_file, read_head, read_input_bytes
from maggotflow.orientation import decide_spine_order
from maggotflow.plausibility import bridge_or_leave_out
from maggotflow.tracks import (
    DATE_TIME, Run, Track, TrackDataError, choreography_metadata, is_time_gap, run_metadata, too_short,
    usual_interval,
)

log = logging.getLogger(__name__)

# Placeholder written when a run has no date_time: obviously fake, but keeps the file
# recognisable as a .spine file (detection needs a date_time at the start of line 1).
PLACEHOLDER_DATE_TIME = "00000000_000000"
# Spine and outline lines of the same frame are written from the same data by Choreography;
# allow for a different number of printed decimals only.
OUTLINE_TIME_TOLERANCE = 5e-4  # s
_SHOWN_REUSED = 20  # re-used ids warned about one by one; the rest in one line


@dataclass
class _Table:
    """A parsed Choreography text table, one row per non-blank line."""

    date_time: str  # of the first line
    ids: np.ndarray  # (R,) int64 larva ids
    t: np.ndarray  # (R,) s
    coords: np.ndarray  # (R, C) mm, NaN beyond each line's own values
    counts: np.ndarray | None  # (R,) number of values on the line (date_time and id included); None: all equal
    lines: np.ndarray | None  # (R,) 1-based line numbers in the file; None: row r is line r + 1

    def line(self, rows: slice | np.ndarray, i: int) -> int:
        """File line number of the i-th of `rows` (a slice or row indices)."""
        row = rows.start + i if isinstance(rows, slice) else int(rows[i])
        return row + 1 if self.lines is None else int(self.lines[row])


def _size(rows: slice | np.ndarray) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else int(rows.size)


# Bytes scanned per block: bounds the scan's memory on 100 MB files.
SCAN_CHUNK = 1 << 23


def scan_text_lines(
    path: Path, data: bytes, count: str = "values", allow_non_ascii: bool = False, kind: str = "track"
) -> tuple[np.ndarray, np.ndarray]:
    """Count per line of a text file, vectorised: (counts, non_blank), one entry per line.

    count="values": whitespace-separated values on the line; count="commas": commas.
    non_blank: the line has something other than spaces, tabs and line ends.
    Raises TrackDataError naming the line for control bytes (binary data) and, unless
    `allow_non_ascii`, for bytes above 126. Shared by the text track formats.
    """
    b = np.frombuffer(data, dtype=np.uint8)
    counts, non_blank = [], []
    start, lines_before = 0, 0
    while start < b.size:
        end = min(start + SCAN_CHUNK, b.size)
        if end < b.size:  # cut blocks at line ends so that no line straddles two blocks
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= 0 else (data.find(b"\n", end) + 1 or b.size)
        chunk = b[start:end]
        is_ws = (chunk == 32) | (chunk == 10) | (chunk == 9) | (chunk == 13)
        newlines = np.flatnonzero(chunk == 10)
        binary = ~is_ws & (chunk < 32)
        if not allow_non_ascii:
            binary |= chunk > 126
        if binary.any():
            pos = int(np.argmax(binary))
            line = lines_before + int(np.searchsorted(newlines, pos)) + 1
            what = "binary" if chunk[pos] < 32 else "binary or non-ASCII"
            raise TrackDataError(
                path, f"contains {what} data (byte 0x{chunk[pos]:02x} on line {line}): not a text {kind} file"
            )
        line_ends = newlines if chunk[-1] == 10 else np.append(newlines, chunk.size - 1)
        if count == "values":
            marks = ~is_ws
            marks[1:] &= is_ws[:-1]  # a value starts where non-space follows space
        else:
            marks = chunk == 44
        counts.append(np.diff(np.cumsum(marks, dtype=np.int32)[line_ends], prepend=0))
        non_blank.append(np.diff(np.cumsum(~is_ws, dtype=np.int32)[line_ends], prepend=0) > 0)
        lines_before += line_ends.size
        start = end
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return np.concatenate(counts), np.concatenate(non_blank)


# The fast parser is tried first (tests switch it off to compare it with the careful one).
FAST_PARSER = True
# .spine files: pyarrow's CSV reader when it is usable (`_arrow`), else pandas' (tests run both).
ARROW_PARSER = True
# Bytes per pyarrow block, one record batch each (~4,700 lines of 11-point spines): the batch
# stays in cache while it is copied; 4 MB parsed no faster here.
ARROW_BLOCK_BYTES = 1 << 20
# Lines per block of the pandas parser (~20 MB of text for 11-point spines): bounds the memory
# that parsing needs on top of the result.
FAST_CHUNK_LINES = 1 << 17
# Blocks of at most this many rows are copied at a time from the parser's columns into the result.
_COPY_ROWS = 4096
_FIELDS_SEEN = re.compile(r"Expected ([0-9]+) fields in line [0-9]+, saw ([0-9]+)")
# Bytes that send a file to the careful parser when the fast one reads any: a CR (pandas and
# pyarrow take CR and CR LF for line ends); in .outline files, the letters pandas would read
# as a missing value (nan, NA, null, None, #N/A, <NA>, 1.#IND...), which would make a line
# look shorter; in pyarrow's input, x and X (it reads "0x1f" as a whole number).
_ODD_BYTES = {"pandas spine": (b"\r",), "pandas outline": (b"\r", b"n", b"N", b"#"), "pyarrow": (b"\r", b"x", b"X")}
# Numbers whose float64 depends on the parser rounding correctly (long mantissas, extreme
# exponents): pandas before its fast_float converter (2.x) reads each of them 1 ulp off.
_ROUNDING_PROBES = (
    "1.700000000000000177635684", "0.30000000000000004441", "3.14159265358979323846", "123.45678901234567",
    "0.1234567890123456789", "2.2250738585072012e-308", "7.0064923216240854e-46", "-15.361", "0.1",
)


class _CheckedReader(io.RawIOBase):
    """Read-only binary file wrapper that pandas or pyarrow parses from, checking every block it reads.

    On a worker thread (in file order, while the parser works: numpy and hashlib release the
    GIL), it counts control bytes (below 0x20: line ends, tabs, binary data), notes any of
    `odd_bytes` (`_ODD_BYTES`), and with `sha1` hashes the bytes. Read the figures after
    `pool.shutdown(wait=True)`.
    """

    mode = "rb"

    def __init__(self, f, pool, odd_bytes: tuple[bytes, ...], sha1=None):
        super().__init__()
        self._f, self._pool, self._odd_bytes, self._sha1 = f, pool, odd_bytes, sha1
        self.control = 0  # bytes < 0x20
        self.odd = False  # one of odd_bytes was seen
        self.last = b""  # last byte read

    def read(self, n: int = -1) -> bytes:
        block = self._f.read(n)
        if block:
            self._pool.submit(self._check, block)
            self.last = block[-1:]
        return block

    def readable(self) -> bool:  # pandas 2 decodes through io.TextIOWrapper, which asks
        return True

    def _check(self, block: bytes) -> None:
        if self._sha1 is not None:
            self._sha1.update(block)
        self.control += int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) < 32))
        self.odd = self.odd or any(c in block for c in self._odd_bytes)

    def __iter__(self):  # pandas checks for it; it only ever calls read()
        return self

    def __next__(self) -> bytes:
        raise StopIteration


def _lazy_empty(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """np.empty on anonymous memory of its own: pages cost memory only once written, and they
    are not numpy's transparent huge pages, whose first touch is several times slower on
    virtual machines (0.37 s instead of 0.06 s for 160 MB measured here)."""
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class _Grow:
    """Row-wise float64 / int64 arrays filled block by block; capacity from an estimate of the
    number of lines (pages beyond the rows written are never touched, so cost no memory)."""

    def __init__(self, capacity: int, width: int):
        self.rows = 0
        self.ids = _lazy_empty((capacity,), np.int64)
        self.t = _lazy_empty((capacity,))
        self.coords = _lazy_empty((capacity, width))

    def reserve(self, n: int) -> None:
        if self.rows + n <= self.ids.size:
            return
        capacity = max(self.rows + n, int(self.ids.size * 1.25) + 1)  # rare: the estimate was short
        for name in ("ids", "t", "coords"):
            old = getattr(self, name)
            new = _lazy_empty((capacity, *old.shape[1:]), old.dtype)
            new[: self.rows] = old[: self.rows]
            setattr(self, name, new)

    def append(self, ids: np.ndarray, t: np.ndarray, columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Copy a block of rows to the end: larva ids, times (s) and one array per coordinate
        column (mm). Returns the block's (t, coords) rows of the table, for the caller's checks."""
        n = len(t)
        self.reserve(n)
        r = self.rows
        self.ids[r : r + n] = ids
        self.t[r : r + n] = t
        coords = self.coords[r : r + n]
        for s in range(0, n, _COPY_ROWS):  # in row blocks that stay in cache: a fast transpose
            tile = coords[s : s + _COPY_ROWS]
            for j, column in enumerate(columns):
                tile[:, j] = column[s : s + _COPY_ROWS]
        self.rows += n
        return self.t[r : r + n], coords

    def table(self, date_time: str, reader: _CheckedReader, counts: list[np.ndarray] | None) -> _Table | None:
        """The rows filled as a _Table, once `reader` has seen every byte (its pool shut down),
        or None where the bytes were not the common layout: a control byte other than the line
        ends (a CR line end, a tab, a form feed, binary data) or one of the reader's odd bytes.
        `counts`: the .outline rows' numbers of values, block by block."""
        newlines = self.rows - (reader.last != b"\n")
        if reader.odd or reader.control != newlines:
            return None  # the careful path names the line
        counts_array = None if counts is None else np.concatenate(counts)
        coords = self.coords[: self.rows]
        if counts_array is not None:
            coords = coords[:, : int(counts_array.max()) - 3]
        return _Table(date_time, self.ids[: self.rows], self.t[: self.rows], coords, counts_array, None)


def _parse_table_fast(path: Path, kind: str, sha1=None) -> _Table | None:
    """The common layout parsed at pyarrow's or pandas' C speed, or None when anything is off.

    Common layout: single spaces between values, no blank, padded or CR-terminated lines,
    one date_time for the whole file, whole-number larva ids >= 0, finite numbers only, and
    (.spine) the same number of values on every line. .spine files go through pyarrow's CSV
    reader (`_parse_arrow`) when `_arrow()` finds it usable, else (and .outline files, whose
    lines have different numbers of values) through pandas' in blocks of FAST_CHUNK_LINES
    lines; either way straight into the result arrays, and `sha1` (a hashlib object) is fed
    every byte. None means: use `_parse_table`, which reports the exact problem.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(codecs.BOM_UTF8):
        return None  # pandas and pyarrow skip it; the careful parser refuses it (non-ASCII)
    head_lines = head.split(b"\n")[:-1] or [head]
    first = head_lines[0].split(b" ")
    if kind == "spine":
        width = len(first)
        if width < 5 or (width - 3) % 2:
            return None
    else:  # outlines: the widest line of the head, with a margin; a wider one later retries
        width = int(max(line.count(b" ") + 1 for line in head_lines) * 1.25) + 8
    capacity = int(size / max(1.0, sum(map(len, head_lines)) / len(head_lines) + 1) * 1.1) + 1024
    pa = _arrow() if kind == "spine" and ARROW_PARSER else None
    if pa is not None:
        return _parse_arrow(pa, path, width, capacity, sha1)
    for _ in range(3):
        try:
            return _parse_blocks(path, kind, width, capacity, sha1)
        except _TooWide as err:  # outlines only (no sha1): retry wider
            width = int(err.seen * 1.25) + 8
    return None


@functools.cache
def _arrow():
    """pyarrow, with pyarrow.csv loaded, when it can read .spine files for the fast parser; else None.

    Usable: importable (a missing or broken install costs speed, not the reading), and it
    reads numbers bit for bit as the installed pandas does (the careful parser's converter;
    both round correctly since pandas 3, pandas 2 reads some long numbers 1 ulp off)."""
    try:
        import pyarrow
        import pyarrow.csv
    except ImportError as err:
        log.debug("pyarrow is not usable (%s): .spine files are parsed with pandas", err)
        return None
    line = f"{PLACEHOLDER_DATE_TIME} 0 {' '.join(_ROUNDING_PROBES)}\n".encode()
    width = 2 + len(_ROUNDING_PROBES)
    careful = pd.read_csv(io.BytesIO(line), sep=" ", header=None, quoting=csv.QUOTE_NONE, engine="c")
    expected = careful.iloc[0, 2:].to_numpy(np.float64)
    try:
        batch = pyarrow.csv.read_csv(io.BytesIO(line), **_arrow_options(pyarrow, width)).to_batches()[0]
        got = np.array([batch.column(j)[0].as_py() for j in range(2, width)], dtype=np.float64)
    except (pyarrow.ArrowException, ValueError, TypeError) as err:  # TypeError: an option it lacks
        log.debug("pyarrow %s cannot parse .spine files (%s): they are parsed with pandas", pyarrow.__version__, err)
        return None
    if not np.array_equal(expected.view(np.uint64), got.view(np.uint64)):
        log.debug("pyarrow %s and pandas %s round numbers differently: .spine files are parsed with pandas",
                  pyarrow.__version__, pd.__version__)
        return None
    return pyarrow


def fast_spine_parser() -> str:
    """The fast parser that reads .spine files here, with its version: "pyarrow 26.0.1" or
    "pandas 3.1.1" (pyarrow when `_arrow` finds it usable and `ARROW_PARSER` allows it)."""
    pa = _arrow() if ARROW_PARSER else None
    return f"pandas {pd.__version__}" if pa is None else f"pyarrow {pa.__version__}"


def _arrow_options(pa, width: int) -> dict:
    """open_csv / read_csv options for `width` space-separated values per line: one thread,
    column 0 the date_time (dictionary encoded: one value per file), 1 the larva id (int64),
    the rest float64. No quoting, no text read as a missing value (null_values=[]), blank
    lines kept (so that they fail to convert instead of vanishing)."""
    names = [str(i) for i in range(width)]
    types = {names[0]: pa.dictionary(pa.int32(), pa.string()), names[1]: pa.int64()}
    types.update((name, pa.float64()) for name in names[2:])
    return {
        "read_options": pa.csv.ReadOptions(use_threads=False, column_names=names, block_size=ARROW_BLOCK_BYTES),
        "parse_options": pa.csv.ParseOptions(
            delimiter=" ", quote_char=False, double_quote=False, newlines_in_values=False, ignore_empty_lines=False
        ),
        "convert_options": pa.csv.ConvertOptions(
            column_types=types, null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    }


def _parse_arrow(pa, path: Path, width: int, capacity: int, sha1) -> _Table | None:
    """A .spine file in the common layout parsed by pyarrow's CSV reader, record batch by
    record batch into the result arrays; None when anything is off.

    pyarrow refuses (raises) a line with another number of values, a blank line, an empty,
    quoted or non-numeric value, an id that is not a whole number, bytes that are not UTF-8.
    What it accepts that the careful parser reads otherwise or refuses is checked here: CR
    and CR LF line ends and tabs next to a number (it trims them), by the reader's count of
    control bytes; hexadecimal ids ("0x1f"), by the reader's odd bytes; non-finite numbers
    (nan, inf) and more than one date_time per file."""
    out = _Grow(capacity, width - 3)
    date_time = None
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with open(path, "rb") as f:
            reader = _CheckedReader(f, pool, _ODD_BYTES["pyarrow"], sha1)
            try:
                for batch in pa.csv.open_csv(reader, **_arrow_options(pa, width)):
                    date_time = _batch_date_time(batch, date_time)
                    if date_time is None:
                        return None
                    ids = batch.column(1).to_numpy()
                    if ids.size and int(ids.min()) < 0:
                        return None
                    columns = [batch.column(j).to_numpy() for j in range(3, width)]
                    t, coords = out.append(ids, batch.column(2).to_numpy(), columns)
                    if not (np.isfinite(t.sum()) and np.isfinite(coords.sum())):
                        return None
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                return None
    finally:
        pool.shutdown(wait=True)
    return None if date_time is None else out.table(date_time, reader, None)


def _batch_date_time(batch, date_time: str | None) -> str | None:
    """The date_time of every line of a record batch (column 0, dictionary encoded) when it is
    `date_time` (the file's so far; None: none yet, then any date_time), else None."""
    column = batch.column(0)
    if batch.num_rows == 0:
        return date_time
    if len(column.dictionary) != 1 or column.null_count:
        return None
    value = column.dictionary[0].as_py()
    if date_time is None:
        return value if DATE_TIME.fullmatch(value) else None
    return value if value == date_time else None


class _TooWide(Exception):
    def __init__(self, seen: int):
        self.seen = seen


def _parse_blocks(path: Path, kind: str, width: int, capacity: int, sha1) -> _Table | None:
    """The common layout parsed by pandas' C parser in blocks of FAST_CHUNK_LINES lines, or
    None when anything is off; raises _TooWide for an .outline line wider than `width`."""
    out = _Grow(capacity, width - 3)
    date_time = None
    counts = [] if kind == "outline" else None
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with open(path, "rb") as f:
            reader = _CheckedReader(f, pool, _ODD_BYTES[f"pandas {kind}"], sha1)
            try:
                blocks = pd.read_csv(
                    reader, sep=" ", header=None, names=list(range(width)), dtype={0: "category"},
                    quoting=csv.QUOTE_NONE, skip_blank_lines=False, engine="c", chunksize=FAST_CHUNK_LINES,
                )
                for df in blocks:
                    n = len(df)
                    dt = df[0]
                    if len(dt.cat.categories) != 1 or int(dt.cat.codes.min()) < 0:
                        return None
                    value = str(dt.cat.categories[0])
                    if date_time is None:
                        if not DATE_TIME.fullmatch(value):
                            return None
                        date_time = value
                    elif value != date_time:
                        return None
                    if df[1].dtype != np.int64 or (n and int(df[1].min()) < 0):
                        return None
                    for column in range(2, width):
                        kind_ = df[column].dtype.kind
                        if kind_ == "i":
                            if n and int(np.abs(df[column].to_numpy()).max()) >= 2**53:  # not exact as float64
                                return None
                        elif kind_ != "f":
                            return None
                    columns = [df[column].to_numpy() for column in range(3, width)]
                    t, coords = out.append(df[1].to_numpy(), df[2].to_numpy(), columns)
                    if not np.isfinite(t.sum()):
                        return None
                    if kind == "spine":
                        if not np.isfinite(coords.sum()):  # NaN = a missing value or a short line
                            return None
                    else:
                        present = ~np.isnan(coords)
                        number = present.sum(axis=1)
                        if np.isinf(coords).any() or (number % 2).any() or (present[:, 1:] & ~present[:, :-1]).any():
                            return None  # infinite, odd, or a gap (missing value inside a line)
                        counts.append(number + 3)
            except pd.errors.ParserError as err:
                match = _FIELDS_SEEN.search(str(err))
                if kind == "outline" and match and int(match.group(2)) > width:
                    raise _TooWide(int(match.group(2))) from None
                return None
            except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
                return None
    finally:
        pool.shutdown(wait=True)
    return None if date_time is None else out.table(date_time, reader, counts)


def _parse_table(path: Path, data: bytes, kind: str) -> _Table:
    """Parse a `.spine` (kind="spine", fixed number of points) or `.outline` table.

    The careful path: every check names the first bad line (`_parse_table_fast` reads the
    common layout and falls back here when anything is off)."""
    if not data.strip():
        raise TrackDataError(path, "is empty")
    counts, non_blank = scan_text_lines(path, data, "values", kind=f".{kind}")
    lines = np.flatnonzero(non_blank) + 1
    counts = counts[non_blank]
    if kind == "spine":
        _check_spine_counts(path, counts, lines)
    else:
        _check_outline_counts(path, counts, lines)
    width = int(counts.max())
    df = _read_frame(path, data, kind, width, counts.size)
    date_time = _date_time_column(path, df[0], lines)
    ids = _larva_id_column(path, df[1], lines)
    values = numeric_cells(path, df.iloc[:, 2:], lines)
    # A value is 'present' when the line has it; beyond that pandas pads with NaN.
    present = np.arange(width - 2)[None, :] < (counts - 2)[:, None]
    bad_value = present & ~np.isfinite(values)
    if bad_value.any():
        row = int(np.argmax(bad_value.any(axis=1)))
        if bad_value[row, 0]:
            raise TrackDataError(path, f"line {lines[row]} has a NaN or infinite time")
        raise TrackDataError(path, f"line {lines[row]} has NaN or infinite coordinates")
    return _Table(date_time, ids, values[:, 0].copy(), values[:, 1:], counts, lines)


def _check_spine_counts(path: Path, counts: np.ndarray, lines: np.ndarray) -> None:
    """Every .spine line has the first line's number of values: date_time, larva, t and at
    least one x y pair (a short last line: the file was cut short)."""
    expected = int(counts[0])
    if expected < 5:
        raise TrackDataError(
            path,
            f"line {lines[0]} has {expected} values; expected 'date_time larva t x1 y1 ...' with at least one point",
        )
    if (expected - 3) % 2:
        raise TrackDataError(
            path, f"line {lines[0]} has an odd number of coordinates ({expected - 3}); expected x y pairs"
        )
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        i = int(bad[0])
        line, n = int(lines[i]), int(counts[i])
        if line == int(lines[-1]) and n < expected:
            raise TrackDataError(
                path, f"last line {line} is truncated ({n} values instead of {expected}); the file was cut short"
            )
        raise TrackDataError(
            path,
            f"line {line} has {n} values but line {lines[0]} has {expected}: wrong column count "
            f"(every line must have the same number of spine points)",
        )


def _check_outline_counts(path: Path, counts: np.ndarray, lines: np.ndarray) -> None:
    """Every .outline line has date_time, larva, t, then whole x y pairs (any number)."""
    bad = np.flatnonzero((counts < 3) | ((counts - 3) % 2 == 1))
    if bad.size:
        i = int(bad[0])
        what = "is truncated" if int(lines[i]) == int(lines[-1]) else "has a wrong column count"
        raise TrackDataError(
            path,
            f"line {lines[i]} {what} ({counts[i]} values): expected 'date_time larva t' then x y pairs",
        )


def _read_frame(path: Path, data: bytes, kind: str, width: int, n_lines: int) -> pd.DataFrame:
    """The table's cells as pandas reads them (`width` columns, NaN-padded; column 0 text),
    one row per non-blank line."""
    try:
        df = pd.read_csv(
            io.BytesIO(data),
            sep=r"\s+",
            header=None,
            names=list(range(width)),
            dtype={0: str},
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as err:  # not expected after the line scan
        raise TrackDataError(path, f"cannot be parsed as a {kind} table ({str(err).splitlines()[0]})") from None
    if len(df) != n_lines:
        raise TrackDataError(path, f"cannot be parsed as a {kind} table ({len(df)} rows for {n_lines} lines)")
    return df


def _date_time_column(path: Path, column: pd.Series, lines: np.ndarray) -> str:
    """The first line's date_time, once every line is checked to start with one."""
    # Fast path: one experiment per file, so the date_time column is one repeated value.
    first = column.iloc[0]
    same = bool((column == first).all()) if isinstance(first, str) else False
    ok = np.full(len(column), True) if same and DATE_TIME.fullmatch(first) else (
        column.str.fullmatch(DATE_TIME.pattern).fillna(False).to_numpy(bool)
    )
    if not ok.all():
        i = int(np.argmin(ok))
        raise TrackDataError(
            path, f"line {lines[i]} does not start with a date_time (YYYYMMDD_HHMMSS): {column.iloc[i]!r}"
        )
    return str(first)


def _larva_id_column(path: Path, ids: pd.Series, lines: np.ndarray) -> np.ndarray:
    """The larva ids as int64, each checked to be a whole number >= 0."""
    if not pd.api.types.is_integer_dtype(ids.dtype) or (ids < 0).any():
        numeric = pd.to_numeric(ids, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(numeric) | (numeric % 1 != 0) | (numeric < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise TrackDataError(path, f"line {lines[i]}: larva id {str(ids.iloc[i])!r} is not a whole number")
        ids = pd.Series(numeric)
    return ids.to_numpy().astype(np.int64)


def numeric_cells(path: Path, numbers: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
    """Cells of a text table as float64 (NaN where empty), rows in file order, `lines` their
    file line numbers: TrackDataError naming the first cell (in file order) that is not a
    number. Shared by the .spine/.outline and FIMTrack readers."""
    if all(pd.api.types.is_numeric_dtype(dtype) for dtype in numbers.dtypes):
        return numbers.to_numpy(dtype=np.float64)
    first_bad: tuple[int, str] | None = None
    for column in numbers.columns:
        if pd.api.types.is_numeric_dtype(numbers[column].dtype):
            continue
        coerced = pd.to_numeric(numbers[column], errors="coerce")
        rows = np.flatnonzero((coerced.isna() & numbers[column].notna()).to_numpy(bool))
        if rows.size and (first_bad is None or rows[0] < first_bad[0]):
            first_bad = (int(rows[0]), str(numbers[column].iloc[rows[0]]))
    if first_bad is not None:
        row, value = first_bad
        raise TrackDataError(path, f"line {lines[row]}: value {value!r} is not a number")
    return numbers.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def warn_skipped_larvae(
    logger: logging.Logger, path: Path, skipped: list[tuple[str, int]], min_steps: int
) -> dict[str, str]:
    """One warning per file for larvae too short to keep: [(larva id, number of steps)].

    Returns them as `Run.left_out` entries (larva id -> why)."""
    if not skipped:
        return {}
    shown = ", ".join(f"larva {larva} ({n} step{'s' if n != 1 else ''})" for larva, n in skipped[:20])
    more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    logger.warning(
        "%s: skipped %d larva(e) with fewer than %d time steps (min_steps): %s%s",
        path, len(skipped), min_steps, shown, more,
    )
    return {str(larva): too_short(n) for larva, n in skipped}


def _group_by_larva(
    path: Path, table: _Table
) -> tuple[list[tuple[int, slice | np.ndarray]], dict[int, list[int]]]:
    """Tracks of the table: ([(larva id, rows in file order)] sorted by id, re-used ids).

    A larva's lines may come in several blocks (other larvae's lines between them) as long
    as its times keep increasing: frame-major files list every larva of a frame, then the
    next frame. Where the file's time goes back between two blocks of one id (the file lists
    larvae one after the other) and the second block starts after a time gap
    (`maggotflow.tracks.is_time_gap`), the id is re-used: that block and what follows it are
    another larva, numbered from the file's largest id + 1 upwards (by file id, then time).
    Two blocks of one id whose times overlap raise TrackDataError (two animals, one id).
    Re-used ids: {file id: [its larvae's ids, the file id first]}.

    When every larva is one block of lines (Choreography and the simulator write them so),
    rows are slices, so that tracks are views into the table instead of copies.
    """
    ids, t = table.ids, table.t
    if ids.size:
        change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        starts = np.concatenate(([0], change))
        block_ids = ids[starts]
        if np.unique(block_ids).size == block_ids.size:
            backwards = np.diff(t) <= 0
            backwards[change - 1] = False  # a new larva starts there
            if not backwards.any():
                stops = np.append(change, ids.size)
                return [
                    (int(block_ids[b]), slice(int(starts[b]), int(stops[b])))
                    for b in np.argsort(block_ids, kind="stable")
                ], {}
    order = np.argsort(ids, kind="stable")
    ids_s, t_s = ids[order], t[order]
    same = ids_s[1:] == ids_s[:-1]
    dt = np.diff(t_s)
    # Pair j (sorted rows j, j+1 of one larva) starts a new block of lines of that larva
    # where the file's time goes back somewhere between the two lines.
    descents = t[1:] < t[:-1]
    if descents.any():  # else the lines are in time order (frame-major): no block is new
        new_block = same & (np.diff(order) > 1)
        back = np.zeros(ids.size, dtype=np.int32 if ids.size < 2**31 else np.int64)
        np.cumsum(descents, out=back[1:])
        new_block &= back[order[1:]] > back[order[:-1]]
    else:
        new_block = np.zeros_like(same)
    bad = np.flatnonzero(same & (dt <= 0))
    if bad.size:
        # Report the offending line that comes first in the file (line numbers grow with rows).
        j = int(bad[np.argmin(order[bad + 1])])
        raise TrackDataError(path, _time_order_problem(table, order, same, new_block, j))

    split = np.zeros_like(same)
    candidates = np.flatnonzero(new_block)
    if candidates.size:
        first = np.concatenate(([0], np.flatnonzero(~same) + 1))  # sorted row where each id starts
        stop = np.append(first[1:], ids.size)
        larva_of = np.searchsorted(first, candidates, side="right") - 1
        for g in np.unique(larva_of):  # only larvae whose id comes back in another block
            usual = usual_interval(t_s[first[g] : stop[g]])
            pairs = candidates[larva_of == g]
            split[pairs[is_time_gap(dt[pairs], usual)]] = True
    groups = [(int(ids[rows[0]]), rows) for rows in np.split(order, np.flatnonzero(~same | split) + 1)]
    if not split.any():
        return groups, {}
    reused: dict[int, list[int]] = {}
    next_id = int(ids.max()) + 1
    named = []
    for i, (larva, rows) in enumerate(groups):
        if i and groups[i - 1][0] == larva:
            named.append((next_id, rows))
            reused.setdefault(larva, [larva]).append(next_id)
            next_id += 1
        else:
            named.append((larva, rows))
    named.sort(key=lambda group: group[0])
    return named, reused


def _lines(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _time_order_problem(table: _Table, order: np.ndarray, same: np.ndarray, new_block: np.ndarray, j: int) -> str:
    """Message for sorted rows j, j+1 of one larva whose times do not increase."""
    prev, row = order[j], order[j + 1]
    problem = "is duplicated" if table.t[row] == table.t[prev] else "is not increasing"
    larva = int(table.ids[row])
    detail = (f"time {table.t[row]:.4f} s on line {table.line(order, j + 1)} {problem} "
              f"(line {table.line(order, j)} has {table.t[prev]:.4f} s)")
    if not new_block[j]:
        return f"larva {larva}: {detail}"
    # Two blocks of lines of one id overlap in time: name both blocks (consecutive lines).
    joined = same & (np.diff(order) == 1)
    breaks = np.flatnonzero(~joined)
    a = int(breaks[np.searchsorted(breaks, j) - 1]) + 1 if np.searchsorted(breaks, j) else 0
    later = breaks[breaks > j]
    b = int(later[0]) if later.size else order.size - 1
    blocks = [
        f"{_lines(table.line(order, lo), table.line(order, hi))}: "
        f"{table.t[order[lo:hi + 1]].min():.3f}-{table.t[order[lo:hi + 1]].max():.3f} s"
        for lo, hi in ((a, j), (j + 1, b))
    ]
    return (f"larva {larva} is in two blocks of lines whose times overlap ({blocks[0]}; {blocks[1]}): "
            f"two animals cannot share one id at the same time; {detail}")


def _warn_reused(path: Path, table: _Table, groups: list, reused: dict[int, list[int]]) -> dict:
    """One warning per re-used id (file, id, each block's lines and times); the metadata
    entry `reused_larva_ids` ({larva id read: id in the file}), or {} when none."""
    if not reused:
        return {}
    rows_of = dict(groups)
    for shown, (larva, names) in enumerate(sorted(reused.items())):
        if shown == _SHOWN_REUSED:
            log.warning("%s: %d more larva ids are re-used (see metadata reused_larva_ids)",
                        path, len(reused) - _SHOWN_REUSED)
            break
        parts = []
        for name in names:
            rows = rows_of[name]
            n = _size(rows)
            span = (f"{_lines(table.line(rows, 0), table.line(rows, n - 1))} "
                    f"({table.t[rows][0]:.3f}-{table.t[rows][-1]:.3f} s)")
            parts.append(f"{span} stay larva {larva}" if name == larva else f"{span} become larva {name}")
        log.warning(
            "%s: larva id %d is re-used: it comes back after other larvae's lines and a time gap, so its "
            "%d blocks of lines are read as separate larvae (nothing is interpolated across the gap): %s",
            path, larva, len(names), "; ".join(parts),
        )
    return {"reused_larva_ids": {str(name): str(larva) for larva, names in sorted(reused.items()) for name in names[1:]}}


def read_table(path: Path, kind: str, hash_bytes: bool = False) -> tuple[_Table, str | None]:
    """The table of a .spine or .outline file, and the file's hex SHA-1 when `hash_bytes`.

    The fast parser when the file has the common layout, else the careful one, which names
    the line and the problem (`FAST_PARSER` False: always the careful one). The parsing half
    of `read_spine` (timed by the benchmarks); the table's fields are private."""
    check_not_gzip(path, read_head(path, 2))
    if FAST_PARSER:
        sha1 = hashlib.sha1() if hash_bytes else None
        table = _parse_table_fast(path, kind, sha1)
        if table is not None:
            return table, None if sha1 is None else sha1.hexdigest()
    data = read_input_bytes(path)
    digest = hashlib.sha1(data).hexdigest() if hash_bytes else None  # same as file_sha1(path)
    return _parse_table(path, data, kind), digest


def _read_outlines(
    outline_path: Path,
    spine_path: Path,
    spine: _Table,
    spine_groups: list[tuple[int, slice | np.ndarray]],
    wanted: set[int],
) -> dict[int, np.ndarray]:
    """Outlines (n, m, 2) mm, NaN-padded, for the larvae in `wanted`, checked against the spine."""
    table, _ = read_table(outline_path, "outline")
    groups = dict(_group_by_larva(outline_path, table)[0])
    spine_rows = dict(spine_groups)
    extra = sorted(set(groups) - set(spine_rows))
    if extra:
        raise TrackDataError(outline_path, f"larva {extra[0]} is in the outline file but not in {spine_path.name}")
    outlines: dict[int, np.ndarray] = {}
    for larva, rows in spine_rows.items():
        orows = groups.get(larva)
        if orows is None:
            raise TrackDataError(outline_path, f"larva {larva} of {spine_path.name} has no outline lines")
        if _size(orows) != _size(rows):
            raise TrackDataError(
                outline_path,
                f"larva {larva} has {_size(orows)} outline lines but {_size(rows)} spine lines in {spine_path.name}",
            )
        off = np.abs(table.t[orows] - spine.t[rows]) > OUTLINE_TIME_TOLERANCE
        if off.any():
            i = int(np.argmax(off))
            raise TrackDataError(
                outline_path,
                f"larva {larva}: outline time {table.t[orows][i]:.4f} s on line {table.line(orows, i)} does not "
                f"match spine time {spine.t[rows][i]:.4f} s in {spine_path.name}",
            )
        if larva in wanted:
            m = int((table.counts[orows].max() - 3) // 2)
            outlines[larva] = table.coords[orows, : 2 * m].reshape(-1, m, 2)
    return outlines


def _run_metadata(path: Path, first_date_time: str) -> dict:
    """id first (the date_time), then what the `@`-separated name says, then the file name."""
    meta = choreography_metadata(path.name)
    if not meta:
        meta = {"date_time": first_date_time}
    elif meta["date_time"] != first_date_time:
        log.warning(
            "%s: file name says date_time %s but the lines say %s; using the file name",
            path, meta["date_time"], first_date_time,
        )
    return run_metadata(meta["date_time"], meta, path.name)


def read_spine(path: str | Path, options: ReadOptions | None = None) -> Run:
    """Read a Choreography `.spine` file (and its sibling `.outline` when present).

    In: path to `<stem>.spine`; `options.spine_order` gives the point order in the file
    ("auto": decided from the larvae's motion), `options.min_steps` the fewest time steps a
    larva needs to be kept.
    Out: a Run with one Track per larva (sorted by id; the later blocks of a re-used id are
    larvae of their own, see the module docstring): t (s), spine (n, k, 2) mm tail -> head,
    outline (n, m, 2) mm NaN-padded when `<stem>.outline` exists and `options.outlines`
    (False: the .outline is not opened). Metadata: id (= date_time),
    tracker/genotype/effector/protocol from the `@`-separated name, date_time, filename, then
    spine_order, spine_order_decided_by and the figures (`maggotflow.orientation`).
    Impossible frames are bridged (warning); larvae too short or corrupt are left out
    (`Run.left_out`). Raises TrackDataError naming the file and line for malformed content.
    """
    path = Path(path)
    options = options or ReadOptions()
    table, sha1 = read_table(path, "spine", hash_bytes=True)
    k = int(table.coords.shape[1] // 2)
    groups, reused = _group_by_larva(path, table)
    reused_metadata = _warn_reused(path, table, groups, reused)

    kept = [(larva, rows) for larva, rows in groups if _size(rows) >= options.min_steps]
    short = [(str(larva), _size(rows)) for larva, rows in groups if _size(rows) < options.min_steps]
    left_out = warn_skipped_larvae(log, path, short, options.min_steps)

    outline_path = path.with_suffix(".outline")
    outlines = None
    # exists, not is_file: a FIFO .outline must be refused, not skipped
    if options.outlines and outline_path.exists():
        check_regular_file(outline_path)
        outlines = _read_outlines(outline_path, path, table, groups, {larva for larva, _ in kept})

    # File order, impossible frames bridged (line numbers name them), before orientation.
    # Spines are views into the table where a larva is one block of lines (no copy).
    # Plausibility hands its body measures (`BodyMeasures`: centre, median length, half means)
    # on to the orientation evidence.
    larvae = []
    for larva, rows in kept:
        measures: list = []
        bridged = bridge_or_leave_out(
            left_out, path, str(larva), table.t[rows], table.coords[rows].reshape(-1, k, 2),
            None if outlines is None else outlines[larva],
            where=lambda i, rows=rows: f"line {table.line(rows, i)}", measures=measures,
        )
        if bridged is not None:
            larvae.append((larva, rows, *bridged, measures[0] if measures else None))
    order, orientation = decide_spine_order(
        path, [(table.t[rows], spine, measured) for _, rows, spine, _, measured in larvae], options.spine_order
    )

    tracks = []
    for larva, rows, spine, outline, _ in larvae:
        if order == "head_first":
            spine[:] = spine[:, ::-1]  # in place (numpy buffers the overlap): no second copy of the run
        try:
            tracks.append(Track(str(larva), table.t[rows], spine, outline=outline))
        except TrackDataError as err:
            raise err.with_path(path) from None
    if not tracks:
        log.warning("%s: no larva has at least %d time steps", path, options.min_steps)
    return Run(
        metadata={**_run_metadata(path, table.date_time), **orientation, **reused_metadata},
        tracks=tracks,
        source=path,
        format="spine",
        sha1=sha1,
        left_out=left_out,
    )


def _time_decimals(run: Run) -> int:
    """3 decimals like Choreography, 4 when 3 would merge frames (fast cameras)."""
    for decimals in (3, 4):
        if all(np.all(np.diff(np.round(track.t, decimals)) > 0) for track in run.tracks):
            return decimals
    raise ValueError("time steps closer than 0.1 ms cannot be written to a .spine file")


def _date_time_of(run: Run) -> str:
    for key in ("date_time", "id"):
        value = str(run.metadata.get(key, ""))
        if DATE_TIME.fullmatch(value):
            return value
    log.warning("run %s has no date_time (YYYYMMDD_HHMMSS); writing %s", run.metadata.get("id"), PLACEHOLDER_DATE_TIME)
    return PLACEHOLDER_DATE_TIME


def _spine_text(run: Run, date_time: str, head_first: bool, t_decimals: int, precision: int) -> str:
    chunks = []
    for track in run.tracks:
        spine = track.spine[:, ::-1] if head_first else track.spine
        k = spine.shape[1]
        fmt = f"{date_time} {int(track.id)} %.{t_decimals}f" + f" %.{precision}f" * (2 * k)
        rows = np.column_stack([track.t, spine.reshape(-1, 2 * k)]).tolist()
        chunks.append("\n".join(fmt % tuple(row) for row in rows))
    return "\n".join(chunks) + "\n"


def _outline_text(run: Run, date_time: str, t_decimals: int, precision: int) -> str:
    chunks = []
    formats: dict[int, str] = {}
    for track in run.tracks:
        outline = np.asarray(track.outline, dtype=np.float64)
        valid = np.isfinite(outline).all(axis=2)  # (n, m): points that exist
        # Move each line's points to the front (stable: contour order kept), drop the padding.
        order = np.argsort(~valid, axis=1, kind="stable")
        packed = np.take_along_axis(outline, order[:, :, None], axis=1).reshape(len(outline), -1)
        n_points = valid.sum(axis=1)
        prefix = f"{date_time} {int(track.id)} %.{t_decimals}f"
        lines = []
        for t, c, row in zip(track.t.tolist(), n_points.tolist(), packed.tolist()):
            fmt = formats.get(c)
            if fmt is None:  # one format per point count, not one per value
                fmt = formats[c] = f" %.{precision}f" * (2 * c)
            lines.append(prefix % t + fmt % tuple(row[: 2 * c]))
        chunks.append("\n".join(lines))
    return "\n".join(chunks) + "\n"


def write_spine(
    run: Run,
    path: str | Path,
    spine_order: str = "head_first",
    write_outline: bool = True,
    precision: int = 4,
    overwrite: bool = True,
) -> None:
    """Write `run` as a Choreography `.spine` file (and `.outline` next to it), atomically.

    In: spines tail -> head in mm, times in s; larva ids must be whole numbers.
    `spine_order` is the point order in the written file; coordinates get `precision`
    decimals (mm), times 3 decimals (4 when frames are closer than 1 ms).
    The `.outline` (same stem) is written when `write_outline` and every track has an outline;
    NaN padding is dropped, so lines have each frame's own number of contour points.
    """
    path = Path(path)
    if spine_order not in ("head_first", "tail_first"):
        raise ValueError(f"spine_order must be head_first or tail_first, got {spine_order!r}")
    if not run.tracks:
        raise ValueError("a .spine file needs at least one larva")
    for track in run.tracks:
        if not str(track.id).isdigit():
            raise ValueError(f"larva id {track.id!r} is not a whole number; .spine files need integer ids")
    date_time = _date_time_of(run)
    t_decimals = _time_decimals(run)
    spine_text = _spine_text(run, date_time, spine_order == "head_first", t_decimals, precision)

    outline_text = None
    if write_outline:
        with_outline = sum(track.outline is not None for track in run.tracks)
        if with_outline == len(run.tracks):
            outline_text = _outline_text(run, date_time, t_decimals, precision)
        elif with_outline:
            log.warning(
                "%s: only %d of %d larvae have an outline; no .outline file written",
                path, with_outline, len(run.tracks),
            )
    outline_path = path.with_suffix(".outline")
    if outline_text is None and outline_path.exists():
        log.warning("%s: an older %s exists next to it and will not match", path, outline_path.name)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
        tmp.write_text(spine_text, encoding="ascii")
        if outline_text is not None:
            tmp_outline = stack.enter_context(atomic_path(outline_path, overwrite=overwrite))
            tmp_outline.write_text(outline_text, encoding="ascii")
