"""Large numpy arrays handed from a reader process to its parent through shared memory.

A reader's result (a Run of ~100 MB of float64 per big track file) pickled through a pipe is
copied four times (pickled, written, read, unpickled): about a quarter of the reading cost
on both sides. `pack` instead writes every array of at least `MIN_BYTES` once into a file
in `/dev/shm` (tmpfs: memory, not disk) and pickles the rest with references to it;
`unpack` maps that file copy-on-write (the arrays are views of the mapping: no copy, and
writable), removes its name at once, and rebuilds the object. The memory goes back when
the last array of it is freed.

Files are named `maggotflow-handover-<owner>-<random>`, the owner being `new_owner()`'s
`<parent pid>.<random>` (one per reading run of the parent): `remove_owned(owner)` removes
what a run never took (stopped early, a reader that died after writing), and
`remove_orphans()` what parents that no longer exist left (a job killed by SLURM).
Where there is no `/dev/shm`, or too little room in it (containers often give 64 MB), the
object is pickled whole, as a pipe would carry it: slower, never wrong.
"""

from __future__ import annotations

import glob
import io
import mmap
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

SHARED_DIR = "/dev/shm"
MIN_BYTES = 1 << 16  # smaller arrays travel inside the pickle
_PREFIX = "maggotflow-handover-"
_ALIGN = 64


@dataclass
class Packed:
    """A pickled object whose large arrays are in the shared-memory file `path` (None: none)."""

    data: bytes
    path: str | None = None
    size: int = 0


class _Pickler(pickle.Pickler):
    """Pickles large plain arrays as references (offset, dtype, shape) into one file."""

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays: list[tuple[int, np.ndarray]] = []
        self.size = 0

    def persistent_id(self, obj: Any):
        if type(obj) is not np.ndarray or obj.nbytes < MIN_BYTES or obj.dtype.hasobject:
            return None
        offset = -(-self.size // _ALIGN) * _ALIGN
        self.arrays.append((offset, obj))
        self.size = offset + obj.nbytes
        return offset, obj.dtype.str, obj.shape


def new_owner() -> str:
    """A name for one reading run of this process: `<pid>.<random>`."""
    return f"{os.getpid()}.{os.urandom(4).hex()}"


def pack(obj: Any, owner: str) -> Packed:
    """`obj` pickled, its large arrays written once to a shared-memory file of `owner`
    (`new_owner()` of the process that will `unpack` it); a plain pickle where that cannot
    be done."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(obj)
    if not pickler.arrays:
        return Packed(buffer.getvalue())
    try:
        path = _write_arrays(pickler.arrays, pickler.size, owner)
    except OSError:  # no /dev/shm, or not room enough in it
        return Packed(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    return Packed(buffer.getvalue(), path, pickler.size)


def _write_arrays(arrays: list[tuple[int, np.ndarray]], size: int, owner: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"{_PREFIX}{owner}-", dir=SHARED_DIR)
    try:
        os.posix_fallocate(fd, 0, size)  # ENOSPC now rather than SIGBUS when the pages are written
        with mmap.mmap(fd, size) as mapped:
            for offset, array in arrays:
                view = np.frombuffer(mapped, dtype=array.dtype, count=array.size, offset=offset)
                np.copyto(view.reshape(array.shape), array)
                del view
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path


def unpack(packed: Packed) -> Any:
    """The object of `pack`, its large arrays views of the shared-memory file (whose name is
    removed here)."""
    if packed.path is None:
        return pickle.loads(packed.data)
    fd = os.open(packed.path, os.O_RDONLY)
    try:
        mapped = mmap.mmap(fd, packed.size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
        os.unlink(packed.path)
    unpickler = pickle.Unpickler(io.BytesIO(packed.data))

    def load(reference):
        offset, dtype, shape = reference
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(mapped, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)

    unpickler.persistent_load = load
    return unpickler.load()


def remove_owned(owner: str) -> None:
    """Remove the files packed for `owner` that it never unpacked."""
    for path in glob.glob(os.path.join(SHARED_DIR, f"{_PREFIX}{owner}-*")):
        try:
            os.unlink(path)
        except OSError:
            pass


def remove_orphans() -> None:
    """Remove the files packed for processes that no longer exist (killed before unpacking)."""
    for path in glob.glob(os.path.join(SHARED_DIR, f"{_PREFIX}*-*")):
        pid = os.path.basename(path)[len(_PREFIX):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
