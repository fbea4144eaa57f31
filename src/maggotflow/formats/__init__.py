"""Track-file formats: detection and one reader entry point returning a `Run`.

Supported: Choreography `.spine` (+ `.outline`), Janelia `trx.mat` (MATLAB v7.3), FIMTrack v2
`.csv`, and LarvaTagger `.label` (labels, not tracks). The format is chosen from the
extension and confirmed from the first bytes, so a renamed or foreign file fails with one
clear message instead of a parser traceback.

Only regular files are read: a FIFO, device or socket is refused before it is opened (opening
a FIFO would wait forever for a writer). gzip-compressed files (magic bytes 1f 8b, whatever
their name) are refused with a message that says to decompress them: reading them
transparently would hide from the user which bytes were tagged (the `.label` file's sha1
names the track file as given).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from maggotflow.tracks import Run, TrackDataError

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
SPINE_ORDERS = ("auto", "head_first", "tail_first")
_SPINE_START = re.compile(rb"^\s*[0-9]{8}_[0-9]{6}\s+[0-9]")
_LABEL_START = re.compile(rb'^\s*\{\s*"metadata"\s*:\s*\{\s*"id"')


@dataclass(frozen=True)
class ReadOptions:
    """Settings a track file cannot carry itself.

    framerate: FIMTrack only, frames per second (the csv has no times). Default 30 Hz.
    pixelsize_um: FIMTrack only, micrometres per pixel. None means 1 px = 1 unit (a warning
        is logged: segment normalisation is scale-free, so tagging still works).
    spine_order: order of points in `.spine`/`.outline` files: "auto" (default: decided per
        file from the larvae's motion, see `maggotflow.orientation`; weak evidence falls back
        to head_first with a warning), or forced "head_first" / "tail_first" (a warning when
        the motion decisively contradicts it). FIMTrack names head and tail itself and trx.mat
        is oriented by its x_head/x_tail; for those the motion is only checked (warning).
    min_steps: larvae with fewer time steps are skipped with a warning (a one-frame larva
        carries no motion to tag).
    outlines: read the `.outline` next to a `.spine` (default True). False: the `.outline`
        is neither opened nor checked and tracks have no outline (prediction needs spines
        only, and an `.outline` is about twice the size of its `.spine`). The trx.mat reader
        does not look at it yet.
    """

    framerate: float = 30.0
    pixelsize_um: float | None = None
    spine_order: str = "auto"
    min_steps: int = 2
    outlines: bool = True

    def __post_init__(self) -> None:
        if not self.framerate > 0:
            raise ValueError(f"framerate must be > 0 Hz, got {self.framerate}")
        if self.pixelsize_um is not None and not self.pixelsize_um > 0:
            raise ValueError(f"pixelsize_um must be > 0, got {self.pixelsize_um}")
        if self.spine_order not in SPINE_ORDERS:
            raise ValueError(f"spine_order must be auto, head_first or tail_first, got {self.spine_order!r}")


_NOT_REGULAR = (
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def check_regular_file(path: str | Path) -> None:
    """Raise TrackDataError unless `path` is a regular file (symlinks followed).

    Called before every open of an input file: opening a FIFO blocks until someone writes.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise TrackDataError(path, "file not found") from None
    except OSError as err:
        raise TrackDataError(path, f"cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise TrackDataError(path, "is a directory, not a track file")
    for test, problem in _NOT_REGULAR:
        if test(mode):
            raise TrackDataError(path, problem)
    if not stat.S_ISREG(mode):
        raise TrackDataError(path, "is not a regular file")


def check_not_gzip(path: str | Path, head: bytes) -> None:
    """Raise TrackDataError when `head` (the file's first bytes) is gzip data."""
    if head[:2] == GZIP_MAGIC:
        name = Path(path).name
        if name.lower().endswith(".gz"):
            how = f"gunzip {shlex.quote(name)}"
        else:
            how = f"mv {shlex.quote(name)} {shlex.quote(name + '.gz')} && gunzip {shlex.quote(name + '.gz')}"
        raise TrackDataError(path, f"is gzip-compressed; decompress it first ({how})")


def read_head(path: str | Path, n: int | None = 512) -> bytes:
    """The first `n` bytes of an input file (all with None), after the regular-file check;
    unreadable files are one-line TrackDataErrors."""
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            return f.read() if n is None else f.read(n)
    except FileNotFoundError:
        raise TrackDataError(path, "file not found") from None
    except IsADirectoryError:
        raise TrackDataError(path, "is a directory, not a track file") from None
    except OSError as err:
        raise TrackDataError(path, f"cannot be read ({err.strerror})") from None


def read_input_bytes(path: str | Path) -> bytes:
    """All bytes of a text track file, after the regular-file and gzip checks."""
    data = read_head(path, None)
    check_not_gzip(path, data[:2])
    return data


def detect_format(path: str | Path) -> str:
    """Return 'spine', 'outline', 'trx', 'fimtrack' or 'label' for `path`.

    The extension proposes a format and the first bytes must agree; anything else raises
    TrackDataError naming the file.
    """
    path = Path(path)
    head = read_head(path)
    if not head.strip():
        raise TrackDataError(path, "is empty")
    check_not_gzip(path, head)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        raise TrackDataError(path, "is named .gz but is not gzip-compressed: rename it without .gz")
    if suffix in (".spine", ".outline"):
        if _SPINE_START.match(head):
            return suffix[1:]
        raise TrackDataError(path, f"is not a Choreography {suffix} file (first line does not start with 'YYYYMMDD_HHMMSS <larva> <t>')")
    if suffix == ".mat":
        # MATLAB v7.3 files are HDF5 with a 512-byte user block; plain HDF5 also accepted.
        hdf5 = head[:8] == HDF5_SIGNATURE or _has_hdf5_signature_at_512(path)
        if hdf5:
            return "trx"
        if head.startswith(b"MATLAB 5.0"):
            raise TrackDataError(path, "is a MATLAB v5/v7 file; only MATLAB v7.3 (HDF5) trx.mat files are supported: re-save with save('-v7.3')")
        raise TrackDataError(path, "is not a MATLAB v7.3 (HDF5) file")
    if suffix == ".csv":
        first = head.split(b"\n", 1)[0]
        if first.lstrip(b"\xef\xbb\xbf").startswith(b",larva(") or b"larva(" in first[:64]:
            return "fimtrack"
        raise TrackDataError(path, "is not a FIMTrack v2 csv (header must start with ',larva(0)')")
    if suffix in (".label", ".json"):
        if _LABEL_START.match(head):
            return "label"
        raise TrackDataError(path, "is not a LarvaTagger .label file (must start with {\"metadata\": {\"id\": ...)")
    raise TrackDataError(
        path, f"unsupported file type {suffix or '(no extension)'}: expected .spine, trx.mat, FIMTrack .csv or .label"
    )


def _has_hdf5_signature_at_512(path: Path) -> bool:
    check_regular_file(path)
    with open(path, "rb") as f:
        f.seek(512)
        return f.read(8) == HDF5_SIGNATURE


def read_run(path: str | Path, options: ReadOptions | None = None) -> Run:
    """Read any supported track file into a `Run` (spines tail -> head, mm, s); the options
    it was read with are recorded in `run.read_options` (kept by intermediates, and named in
    the mark of a prediction: they shape the tracks as much as the file's bytes do)."""
    path = Path(path)
    options = options or ReadOptions()
    run = _read_format(path, options)
    run.read_options = dataclasses.asdict(options)
    return run


def _read_format(path: Path, options: ReadOptions) -> Run:
    fmt = detect_format(path)
    if fmt == "spine":
        from maggotflow.formats.spine import read_spine

        return read_spine(path, options)
    if fmt == "outline":
        raise TrackDataError(path, "is an .outline file; give the matching .spine file instead")
    if fmt == "trx":
        from maggotflow.formats.trx import read_trx

        return read_trx(path, options)
    if fmt == "fimtrack":
        from maggotflow.formats.fimtrack import read_fimtrack

        return read_fimtrack(path, options)
    raise TrackDataError(path, "is a .label file, not a track file")


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes (LarvaTagger's `dependencies.sha1`)."""
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
