"""Atomic file output: write to a temporary sibling, then rename over the target.

A crashed or killed job therefore never leaves a partial file under the final name, and a
reader never sees half a file. The temporary name lives in the target's directory so that
the final `os.replace` is a same-filesystem rename (atomic on POSIX, also on NFS/Lustre).

Temporaries are hidden and named `.<target name>.<host>-<pid>.<random>.part`: a folder
scan (manifest, LarvaTagger) never takes one for an output, and the owner in the name lets
a later run remove what a killed writer left behind (`remove_stale_temporaries`).

File modes: the temporary is given the mode a plain `open(..., "w")` would give under the
user's umask (0644 under umask 022), never mkstemp's owner-only 0600, so that colleagues
and LarvaTagger under another account can read every output on a shared cluster. Folders
are created with `mkdir`, which also honours the umask (0755 under 022).

Write failures of the system (disk full, read-only folder, permission denied) raise
`OutputError`: an OSError whose `str()` is one line naming the path and the cause.

A file maggotflow did not write is never replaced, nor deleted: `refuse_foreign` checks one
output file; `first_foreign` / `refuse_foreign_files` check a whole folder that maggotflow
would replace (a model folder); `claim_folder` makes a folder of several outputs (a screen
summary) maggotflow's, by a mark it writes there, and refuses a folder of the user's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Collection, Iterable, Iterator

from maggotflow import __version__

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"
# A temporary of another host (or of a pid we cannot check) is taken as abandoned after this.
STALE_AFTER_S = 24 * 3600


class OutputError(OSError):
    """An output could not be written. `str(err)` is one line: '<path>: cannot write (<cause>)'."""

    def __init__(self, path: str | os.PathLike, cause: OSError | str):
        self.path = str(path)
        if isinstance(cause, OSError):
            reason = cause.strerror or str(cause)
            code = cause.errno
        else:
            reason, code = str(cause), None
        self.reason = reason
        super().__init__(code, reason)

    def __str__(self) -> str:
        hint = ""
        if self.errno == errno.ENOSPC:
            hint = "; free some space and run again"
        elif self.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = "; choose a folder you can write to"
        return f"{self.path}: cannot write ({self.reason}){hint}"


class OutputExistsError(FileExistsError):
    """An output path holds a file that may not be replaced. `str()` is one line: '<path>: <problem>'."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


FOREIGN_FILE = "exists and was not written by maggotflow; it is never replaced: choose another output path"


def may_replace(target: str | os.PathLike, is_ours: Callable[[Path], bool]) -> bool:
    """The one rule of every maggotflow command: a file it did not write is never replaced.

    True when `target` is absent, or is a regular file (not a link) that `is_ours`
    recognises, from its content, as the command's own earlier output; anything else is
    the user's.
    """
    target = Path(target)
    if not os.path.lexists(target):
        return True
    return not target.is_symlink() and target.is_file() and is_ours(target)


def refuse_foreign(target: str | os.PathLike, is_ours: Callable[[Path], bool], problem: str = FOREIGN_FILE) -> None:
    """Raise OutputExistsError (one line) unless `may_replace(target, is_ours)`."""
    if not may_replace(target, is_ours):
        raise OutputExistsError(target, problem)


# Files that file browsers leave in any folder they show (Finder, Explorer): settings of the
# view, never data. They count as maggotflow's, so that looking at a folder does not lock it.
BROWSER_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def first_foreign(folder: str | os.PathLike,
                  is_ours: Callable[[PurePosixPath, Path], bool]) -> PurePosixPath | None:
    """The first entry under `folder` that maggotflow did not write, relative to `folder`; None if none.

    Entries are taken in sorted name order, depth first. `is_ours(relative, path)` decides
    for each file and folder (relative: its path under `folder`); a folder of ours is
    entered and its entries decided in turn. A link is never ours (the folder it sits in
    is the user's arrangement); BROWSER_FILES always are. A missing folder holds nothing.
    """
    root = Path(folder)

    def walk(directory: Path, prefix: PurePosixPath) -> PurePosixPath | None:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise OutputError(directory, err) from None
        for name in names:
            path, relative = directory / name, prefix / name
            if name in BROWSER_FILES and not path.is_symlink():
                continue
            if path.is_symlink() or not is_ours(relative, path):
                return relative
            if path.is_dir():
                found = walk(path, relative)
                if found is not None:
                    return found
        return None

    return walk(root, PurePosixPath())


def refuse_foreign_files(folder: str | os.PathLike, is_ours: Callable[[PurePosixPath, Path], bool],
                         advice: str) -> None:
    """OutputExistsError '<folder>: holds <file>, which maggotflow did not write; <advice>'
    unless every entry under `folder` is maggotflow's (`first_foreign`)."""
    foreign = first_foreign(folder, is_ours)
    if foreign is not None:
        raise OutputExistsError(folder, f"holds {foreign}, which maggotflow did not write; {advice}")


# The mark of a folder that maggotflow fills with several outputs (`claim_folder`): a small
# JSON file {"written_by": "maggotflow <version>", "contents": "<what>"}, hidden so that it
# does not clutter the listing of the results.
FOLDER_MARK = ".maggotflow"


def _marked(folder: Path, contents: str) -> bool:
    try:
        mark = json.loads((folder / FOLDER_MARK).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(mark, dict) and str(mark.get("written_by", "")).startswith("maggotflow")
            and mark.get("contents") == contents)


def temporary_of(name: str) -> str | None:
    """The target name of a temporary file name (`temporary_name`, `atomic_path`), else None."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    parts = name[1:-len(TEMP_SUFFIX)].rsplit(".", 2)  # [target, host-pid, random]
    return parts[0] if len(parts) == 3 else None


def claim_folder(folder: str | os.PathLike, contents: str, names: Collection[str]) -> Path:
    """Make `folder` an output folder of maggotflow's holding `contents` (e.g. "summary"); return it.

    maggotflow writes only into a new or empty folder (created, and marked: FOLDER_MARK),
    or into one it marked for the same `contents` earlier, whose entries are all among
    `names` (the files it writes there, replaced; their temporaries too). Anything else
    raises OutputExistsError (one line naming the folder and its first foreign file) before
    anything is written: a folder without the mark is the user's, so a `groups.tsv` of
    theirs is never replaced; a file added to an earlier output is named rather than left
    beside new results it does not describe.
    """
    folder = Path(folder)
    names = frozenset(names) | {FOLDER_MARK}
    advice = f"nothing is written there: write the {contents} into a new or empty folder, or move the file"
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(folder, f"is a file, not a folder; it is never replaced: write the {contents} "
                                        "into a new or empty folder")

    def output(relative: PurePosixPath, path: Path) -> bool:  # a file of `names`, directly in the folder
        return len(relative.parts) == 1 and path.is_file() and relative.name in names

    def temporary(relative: PurePosixPath, path: Path) -> bool:  # what a killed writer of ours left
        return len(relative.parts) == 1 and path.is_file() and temporary_of(relative.name) in names

    if _marked(folder, contents):
        refuse_foreign_files(folder, lambda rel, path: output(rel, path) or temporary(rel, path), advice)
    else:
        foreign = first_foreign(folder, temporary)
        if foreign is not None:
            raise OutputExistsError(folder, f"holds {foreign} and no earlier {contents} of maggotflow's; {advice}")
    make_dirs(folder)
    write_text_atomic(folder / FOLDER_MARK, json.dumps({"written_by": f"maggotflow {__version__}",
                                                        "contents": contents}) + "\n")
    return folder


def is_maggotflow_hdf5(path: str | os.PathLike) -> bool:
    """True for an HDF5 file maggotflow wrote: an intermediate or a dataset (by its root attributes)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            attrs = set(f.attrs.keys())
    except (OSError, ValueError):
        return False
    return {"format_version", "source_path", "sha1"} <= attrs or {"segment_spec", "labels", "split_by"} <= attrs


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way: set and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def _owner_tag() -> str:
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname()[:32]) or "host"
    return f"{host}-{os.getpid()}"


def temporary_name(target: str | os.PathLike, token: str) -> str:
    """Hidden sibling name of a temporary for `target` (file or folder), owned by this process."""
    return f".{Path(target).name}.{_owner_tag()}.{token}{TEMP_SUFFIX}"


def make_dirs(folder: str | os.PathLike) -> None:
    """`mkdir -p` that reports failures as one-line OutputError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # Name the file that is in the way (the folder itself or one of its parents).
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise OutputError(blocker, "a file of that name is in the way of the folder") from None
    except OSError as err:
        raise OutputError(folder, err) from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it to `target`.

    On any exception the temporary file is removed and `target` is left untouched.
    With `overwrite=False`, an existing `target` raises FileExistsError before anything
    is written (used where we must never clobber a user's file). The file gets the mode
    of the user's umask. OSErrors of the system while writing (disk full, read-only
    folder) are raised as OutputError naming `target`.
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise FileExistsError(f"{target}: exists already and will not be overwritten")
    make_dirs(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_owner_tag()}.", suffix=TEMP_SUFFIX,
                                   dir=target.parent)
        try:
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
    except OSError as err:
        raise OutputError(target, err) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OutputError:
            raise
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO):
                raise OutputError(target, err) from None
            raise
        if not overwrite and target.exists():
            raise FileExistsError(f"{target}: appeared while writing; not overwritten")
        try:
            os.replace(tmp_path, target)
        except OSError as err:
            raise OutputError(target, err) from None
    except BaseException:
        with contextlib.suppress(OSError):
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _abandoned(name: str, path: Path, all_owners: bool, now: float) -> bool:
    if all_owners:
        return True
    owner = name.rsplit(".", 3)  # [.target, host-pid, random, part]
    host, _, pid = owner[1].rpartition("-") if len(owner) == 4 else ("", "", "")
    if pid.isdigit() and host == _owner_tag().rpartition("-")[0]:
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    try:
        return now - path.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_temporaries(targets: Iterable[str | os.PathLike], *, all_owners: bool = False) -> list[Path]:
    """Remove temporaries that killed writers left next to `targets`; return the ones removed.

    A temporary of target `X` is a hidden sibling `.X.<...>.part` (also a folder: model
    instances are written as temporary folders). With `all_owners=True` every such
    temporary goes: for callers that hold the only right to write these targets (a
    Snakemake job and its declared outputs). Otherwise only the temporaries of dead
    processes of this host, and any older than STALE_AFTER_S, are removed, so that a
    concurrent writer's file is never pulled from under it. Each folder is listed once.
    """
    import shutil

    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        target = Path(target)
        by_folder.setdefault(target.parent, set()).add(target.name)
    removed: list[Path] = []
    now = time.time()
    for folder, names in by_folder.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if not (entry.startswith(".") and entry.endswith(TEMP_SUFFIX)):
                continue
            stem = entry[1:-len(TEMP_SUFFIX)]
            # The target's own name may hold dots: try every split point.
            if not any(stem[:i] in names for i, c in enumerate(stem) if c == "."):
                continue
            path = folder / entry
            if not _abandoned(entry, path, all_owners, now):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as err:
                log.warning("%s: could not remove a stale temporary (%s)", path, err.strerror)
                continue
            removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run (first: %s)", len(removed), removed[0])
    return removed
