"""Atomic file output: write to a temporary sibling, then rename over the target.

A crashed or killed job therefore never leaves a partial file under the final name, and a
reader never sees half a file. The temporary name lives in the target's directory so that
the final `os.replace` is a same-filesystem rename (atomic on POSIX, also on NFS/Lustre).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it to `target`.

    On any exception the temporary file is removed and `target` is left untouched.
    With `overwrite=False`, an existing `target` raises FileExistsError before anything
    is written (used where we must never clobber a user's file).
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise FileExistsError(f"{target}: exists already and will not be overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not overwrite and target.exists():
            raise FileExistsError(f"{target}: appeared while writing; not overwritten")
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(target: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
