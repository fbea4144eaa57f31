"""Names that maggotflow derives from paths: manifest ids of track files, prediction runs'
folder names and the paths of the .label files a prediction writes.

Every name is a pure function of its input paths (no file system access except
`os.path.realpath` in `predict_run_name`), so a file keeps its name across runs and the
workflow, the CLI and the backend agree on it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

from maggotflow.tracks import TrackDataError, printable_path

EXPORT_SUFFIX = ".predicted.label"
EXPORT_TRX_NAME = "predicted.label"
MAX_ID_LENGTH = 150  # leaves room under the 255-byte file-name limit for suffixes

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def text_sha1(text: str) -> str:
    """Hex SHA-1 of `text` (UTF-8): the hash names, splits and shards are derived from."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def safe_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9_.-] replaced by '-'."""
    return _UNSAFE.sub("-", text)


def id_from_relpath(relpath: str) -> str:
    """Safe id from a relative path: components joined by '__', unsafe characters -> '-'.

    't15/GMR@UAS/p/20200101_120000/trx.mat' -> 't15__GMR-UAS__p__20200101_120000__trx.mat'.
    Over-long ids are cut and completed with a hash of the path.
    """
    parts = [p for p in Path(relpath).parts if p not in ("", ".")]
    name = "__".join(safe_name(p) for p in parts).lstrip(".-") or "file"
    if len(name) > MAX_ID_LENGTH:
        name = f"{name[: MAX_ID_LENGTH - 9]}-{text_sha1(relpath)[:8]}"
    return name


def unique_ids(relpaths: Sequence[str]) -> list[str]:
    """`id_from_relpath` of each path; ids that collide get a hash of their path appended."""
    ids = [id_from_relpath(p) for p in relpaths]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    return [i if counts[i] == 1 else f"{i[: MAX_ID_LENGTH - 9]}-{text_sha1(p)[:8]}"
            for i, p in zip(ids, relpaths)]


def predict_run_name(predict_dir: str | Path, model: str | Path) -> str:
    """Name of the output folder for tagging `predict_dir` with `model`.

    `<directory name>-<8 hex>`: readable, and the hash of both absolute paths keeps runs on
    different directories (or with different models) apart even when the names agree.
    """
    directory = os.path.realpath(predict_dir)
    slug = safe_name(os.path.basename(directory.rstrip("/")) or "root").strip(".-")[:40] or "dir"
    digest = text_sha1(directory + "\0" + os.path.realpath(model))[:8]
    return f"{slug}-{digest}"


def mirrored_label_path(relpath: str) -> str:
    """Relative path of the predicted `.label` of a track file in a mirrored output tree.

    'a/b/X.spine' -> 'a/b/X.label'; 'a/b/trx.mat' -> 'a/b/trx.label'. An absolute `relpath`,
    or one with a '..' component, raises TrackDataError: the result is always a path below
    the output folder it is joined to.
    """
    problem = relpath_problem(relpath)
    if problem is None and ".." in Path(relpath).parts:
        problem = f"relpath {printable_path(relpath)} has a '..' component"
    if problem:
        raise TrackDataError(None, problem)
    return str(Path(relpath).with_suffix(".label"))


def relpath_problem(relpath: str) -> str | None:
    """Why `relpath` cannot name a file inside the data folder, or None when it can.

    Lexical (no file system access): absolute, climbing out with '..', naming no file.
    """
    if "\0" in relpath:
        return f"relpath {printable_path(relpath)} contains a NUL character"
    if os.path.isabs(relpath):
        return f"relpath {printable_path(relpath)} is absolute; manifest paths are relative to the data folder"
    normal = os.path.normpath(relpath) if relpath else "."
    if normal == ".." or normal.startswith("../"):
        return f"relpath {printable_path(relpath)} climbs out of the data folder"
    if normal == ".":
        return f"relpath {printable_path(relpath)} names no file"
    return None


def exported_label_path(track_path: str | Path) -> Path:
    """Where a prediction is exported next to its track file.

    trx.mat -> `predicted.label` in the same folder (the name LarvaTagger users know from
    tagging-backend); other files -> `<stem>.predicted.label`, since one folder may hold
    many .spine or .csv files. Neither can be mistaken for ground truth (see `pair_labels`).
    """
    track_path = Path(track_path)
    if track_path.suffix.lower() == ".mat":
        return track_path.with_name(EXPORT_TRX_NAME)
    return track_path.with_name(track_path.stem + EXPORT_SUFFIX)


def is_exported_prediction(name: str) -> bool:
    """Whether a file name is an exported prediction (`exported_label_path`): never ground truth."""
    return name == EXPORT_TRX_NAME or name.endswith(EXPORT_SUFFIX)
