"""Tagging one shard of a prediction run again: only the files whose label is not current.

A prediction job of the workflow tags a shard (a list of track files) into
`<run>/labels/<relative path>.label` and records every file in its shard table
(`maggotflow.runtables`). When the job runs again (a track file changed, a killed or failed
attempt, `--forcerun`), its previous table is still there (the workflow flags the table
`update()`: Snakemake keeps it while the job runs and puts it back if the job fails), and
each file is decided on its own:

- its label is current, and kept as it is, when it is maggotflow's, carries the mark this
  job would write (`prediction.prediction_mark`: version, model fingerprint, read options;
  its `domain_check` is a result, decided by the model and the track bytes, not compared),
  was made from the same track bytes (its `dependencies.sha1`) and, when the previous table
  recorded it, is still the file recorded there (size, mtime, else sha1: not edited since);
- whether the track bytes are the same is decided with one stat when the previous table
  recorded the file: same size, mtime and ctime as when it was tagged (ctime is set by the
  kernel on every change and no user tool sets it back) -> the same bytes, nothing is read.
  Otherwise the track file is hashed once and compared with the label's `dependencies.sha1`;
- every other file is tagged (`prediction.predict_files`), and a file that cannot be read
  fails alone (`on_error`); an earlier label of maggotflow's for it is removed (it would
  describe bytes that are gone), never a file without maggotflow's mark.

So a rerun hashes only the files whose stat changed and re-tags only those whose bytes
changed, plus the files without a current label (missing, edited, from another model or
with other read options). A file that is not maggotflow's at the label's place (a hand-made
`.label`) is never replaced or removed: that file fails, naming it. Every row of a label
carries its domain-check verdict (`label_domain_verdict`), kept labels' included.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from maggotflow.domain import RECORD_KEY, VERDICTS
from maggotflow.formats import ReadOptions, file_sha1
from maggotflow.formats.label import PROVENANCE_KEY, header_value, is_maggotflow_label
from maggotflow.runtables import TRACK_STAT_COLUMNS, label_changed, read_shard_table, shard_row, track_stat

log = logging.getLogger(__name__)


def previous_rows(table: str | Path) -> dict[str, dict[str, str]]:
    """{track path: row} of the shard's previous table; {} when absent or unreadable."""
    try:
        return {row["path"]: row for row in read_shard_table(table)}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}


def label_track_sha1(label: str | Path, mark: Mapping[str, Any]) -> str | None:
    """The track sha1 that the label at `label` was made from, when it is maggotflow's and
    carries exactly `mark`; None otherwise (absent, a user's file, another model...)."""
    if not os.path.isfile(label):
        return None
    metadata = header_value(label, "metadata")
    own = metadata.get(PROVENANCE_KEY) if isinstance(metadata, dict) else None
    if not isinstance(own, dict) or {k: v for k, v in own.items() if k != RECORD_KEY} != dict(mark):
        return None
    dependencies = header_value(label, "dependencies")
    if isinstance(dependencies, list) and len(dependencies) == 1:
        dependencies = dependencies[0]
    sha1 = dependencies.get("sha1") if isinstance(dependencies, dict) else None
    return sha1 if isinstance(sha1, str) else None


def label_domain_verdict(label: str | Path) -> str:
    """The domain-check verdict (`ok`, `unlike_training`) a label of maggotflow's records;
    "" when it has none (not checked, not readable, not maggotflow's)."""
    metadata = header_value(label, "metadata")
    own = metadata.get(PROVENANCE_KEY) if isinstance(metadata, dict) else None
    record = own.get(RECORD_KEY) if isinstance(own, dict) else None
    verdict = record.get("verdict") if isinstance(record, dict) else None
    return verdict if verdict in VERDICTS else ""


def current_row(ident: str, track: str, label: Path, mark: Mapping[str, Any],
                previous: Mapping[str, str] | None, stat: Mapping[str, str]) -> dict[str, str] | None:
    """The table row of a file whose label is current (see the module), else None."""
    made_from = label_track_sha1(label, mark)
    if made_from is None:
        return None
    recorded = previous is not None and previous.get("status") == "ok" and previous.get("label") == str(label)
    if recorded and label_changed(previous):
        return None  # edited or damaged since its job wrote it (the header alone may still read)
    same_stat = (recorded and previous.get("track_sha1") == made_from and all(stat[k] for k in TRACK_STAT_COLUMNS)
                 and all(previous.get(k) == stat[k] for k in TRACK_STAT_COLUMNS))
    if not same_stat:
        try:
            if file_sha1(track) != made_from:
                return None
        except OSError:
            return None
    return shard_row(ident, track, label, track_sha1=made_from, stat=stat, domain=label_domain_verdict(label))


def remove_own_label(label: Path) -> None:
    """Remove an earlier label of maggotflow's for a file that now fails (it would describe
    bytes that are gone); a file without maggotflow's mark is the user's and stays."""
    if os.path.isfile(label) and not os.path.islink(label) and is_maggotflow_label(label):
        label.unlink(missing_ok=True)


def tag_shard(
    model: str | Path,
    files: Sequence[Mapping[str, str]],
    outs: Sequence[Path],
    previous_table: str | Path | None,
    read_options: ReadOptions,
    batch_size: int | None = None,
    device: str = "auto",
    on_error: Callable[[Path, Exception], None] | None = None,
    readers: int | str = "auto",
    cores: int | None = None,
) -> list[dict[str, str]]:
    """Tag the shard's `files` (dicts with id and path) into `outs` (one label path each),
    keeping current labels; returns the shard table's rows, in the order of `files`.

    A file that cannot be read or whose label place holds a file that is not maggotflow's is
    reported to `on_error(path, error)` and gets a `failed` row; nothing of it is deleted.
    `readers` and `cores`: the reader processes and the job's cores (`prediction.predict_files`).
    """
    from maggotflow.prediction import predict_files, prediction_mark

    previous = previous_rows(previous_table) if previous_table else {}
    stats = [track_stat(f["path"]) for f in files]  # before reading: a change meanwhile re-tags next time
    mark = prediction_mark(model, read_options)
    rows: list[dict[str, str] | None] = [
        current_row(f["id"], f["path"], out, mark, previous.get(f["path"]), stat)
        for f, out, stat in zip(files, outs, stats)
    ]
    todo = [i for i, row in enumerate(rows) if row is None]
    kept = len(files) - len(todo)
    if kept:
        log.info("%d of %d file(s) already have a current label (kept); tagging %d", kept, len(files), len(todo))
    problems: dict[str, str] = {}

    def failed(path: Path, error: Exception) -> None:
        problems[str(path)] = getattr(error, "problem", None) or str(error)
        if on_error is not None:
            on_error(path, error)

    if todo:  # the model is loaded only when there is something to tag
        predict_files(model, [files[i]["path"] for i in todo], out_paths=[outs[i] for i in todo],
                      batch_size=batch_size, device=device, read_options=read_options, on_error=failed,
                      readers=readers, cores=cores, overwrite=True)  # maggotflow's own labels only: a user's file is refused
    for i in todo:
        path = files[i]["path"]
        if path in problems:
            remove_own_label(outs[i])
            rows[i] = shard_row(files[i]["id"], path, problem=problems[path], stat=stats[i])
        else:
            made_from = label_track_sha1(outs[i], mark) or ""
            rows[i] = shard_row(files[i]["id"], path, outs[i], track_sha1=made_from, stat=stats[i],
                                domain=label_domain_verdict(outs[i]))
    return rows


def shard_label_paths(shard_table: str | Path, files: Sequence[Mapping[str, str]]) -> list[Path]:
    """Where a prediction run puts each file's label: `<run>/labels/<relpath with .label>`,
    `<run>` being the folder that holds the shard table's `shards/` folder."""
    from maggotflow.names import mirrored_label_path

    labels_root = Path(shard_table).parent.parent / "labels"
    return [labels_root / mirrored_label_path(f["relpath"]) for f in files]


def tag_run_shard(
    model: str | Path,
    files: Sequence[Mapping[str, str]],
    shard_table: str | Path,
    read_options: ReadOptions,
    batch_size: int | None = None,
    device: str = "auto",
    on_error: Callable[[Path, Exception], None] | None = None,
    readers: int | str = "auto",
    cores: int | None = None,
) -> list[dict[str, str]]:
    """`tag_shard` for the shard of a prediction run whose table is `shard_table` (its
    previous version, when there, decides which labels are current); `files` are dicts with
    id, path and relpath. The labels are this job's alone to write: what a killed attempt left
    next to them (hidden temporaries, never read as labels) is removed first."""
    from maggotflow.atomic import remove_stale_temporaries

    outs = shard_label_paths(shard_table, files)
    remove_stale_temporaries(outs, all_owners=True)
    return tag_shard(model, files, outs, previous_table=shard_table, read_options=read_options,
                     batch_size=batch_size, device=device, on_error=on_error, readers=readers, cores=cores)
