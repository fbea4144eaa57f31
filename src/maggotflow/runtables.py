"""The tables of a prediction run: shard tables and summary.tsv, with their one reader and writer.

Shard tables (`results/predict/<run>/shards/<shard>.tsv`, the declared output of a
prediction job, and `summary.tsv`, the same columns for a whole run, the declared output of
the run's summary job, `merge_shard_tables`) are read by the summary, the export, the
evaluation, the ethograms and the next run of the same shard (`maggotflow.shards`: what is
still current)::

    id  path  label  status  problem  domain  spine_order ... spine_order_head_sweep_ratio
    sha1  size  mtime_ns  track_sha1  track_size  track_mtime_ns  track_ctime_ns
    (status: ok | failed; domain: the label's domain-check verdict, ok | unlike_training,
    empty when not checked (`maggotflow.domain`); spine_order ...: the track file's head/tail
    decision as its label's metadata records it (`ORIENTATION_COLUMNS`,
    `maggotflow.orientation`): spine_order (head_first | tail_first | mixed),
    spine_order_decided_by (motion | convention | configured | file), spine_order_evidence
    (supports | contradicts | disagree | weak), spine_order_forward_fraction,
    spine_order_moving_s, spine_order_moving_steps, spine_order_head_sweep_ratio; the
    label's sha1, size and mtime as written; the track file's sha1, size, mtime and inode
    change time (ctime) when it was tagged. Tables written before a column existed read it
    as empty.)

Written and read with `maggotflow.tsv` (a tab, newline, CR or quote in a file name is
quoted and round-trips; pandas and spreadsheets read it). Also here, because they are
read from these tables: the labels changed since their job wrote them (`changed_labels`)
and the files judged unlike the tagger's training data (`unlike_training`, `domain_warning`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from maggotflow import tsv
from maggotflow.atomic import write_text_atomic
from maggotflow.tracks import printable_path

log = logging.getLogger(__name__)


# A track file's head/tail decision (`maggotflow.orientation`): the keys of its label's
# metadata, the same words as columns of the shard tables and the screen's per_file.tsv.
ORIENTATION_COLUMNS = ("spine_order", "spine_order_decided_by", "spine_order_evidence",
                       "spine_order_forward_fraction", "spine_order_moving_s", "spine_order_moving_steps",
                       "spine_order_head_sweep_ratio")
SHARD_COLUMNS = ("id", "path", "label", "status", "problem", "domain", *ORIENTATION_COLUMNS, "sha1", "size",
                 "mtime_ns", "track_sha1", "track_size", "track_mtime_ns", "track_ctime_ns")
# A predicted label's domain check (`maggotflow.domain`): its key in metadata.maggotflow and
# its verdicts; here, where the tables that carry the verdict are, without torch.
DOMAIN_CHECK_KEY = "domain_check"
DOMAIN_VERDICTS = ("ok", "unlike_training")
UNLIKE_TRAINING = DOMAIN_VERDICTS[1]
TRACK_STAT_COLUMNS = ("track_size", "track_mtime_ns", "track_ctime_ns")


def track_stat(path: str | Path) -> dict[str, str]:
    """The track file's size, mtime and ctime (ns) as shard-table cells; empty when it cannot be
    stat'ed. ctime (the inode change time) is set by the kernel on every change of the file
    and no user tool sets it back (`cp -p`, `rsync -a`, `touch -r` keep the mtime, not it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return dict.fromkeys(TRACK_STAT_COLUMNS, "")
    return {"track_size": str(stat.st_size), "track_mtime_ns": str(stat.st_mtime_ns),
            "track_ctime_ns": str(stat.st_ctime_ns)}


def tracks_stat_digest(paths: Iterable[str | Path]) -> str:
    """SHA-1 over the `track_stat` of each path, in order: one short value that changes when
    any file's size, mtime or ctime does (one stat per file, nothing read)."""
    import hashlib

    digest = hashlib.sha1()
    for path in paths:
        stat = track_stat(path)
        digest.update(f"{path}\0{stat['track_size']}\0{stat['track_mtime_ns']}\0{stat['track_ctime_ns']}\n"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def orientation_cells(metadata: Mapping | None) -> dict[str, str]:
    """The head/tail decision in a label's metadata as table cells (`ORIENTATION_COLUMNS`);
    "" for each key it lacks (LarvaTagger's own labels, labels made before it was recorded)."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    cells = {}
    for key in ORIENTATION_COLUMNS:
        value = metadata.get(key)
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        cells[key] = " ".join(str(value).split()) if ok else ""
    return cells


def label_orientation(label: str | Path) -> dict[str, str]:
    """`orientation_cells` of a `.label` file, read from its header only; all "" when unreadable."""
    from maggotflow.formats.label import header_value

    return orientation_cells(header_value(label, "metadata"))


def shard_row(ident: str, track: str, label: str | Path | None = None, problem: str = "",
              status: str | None = None, track_sha1: str = "",
              stat: Mapping[str, str] | None = None, domain: str = "") -> dict[str, str]:
    """A shard-table row: `label` written (its sha1, size and mtime as on disk now, its
    domain-check verdict `domain`, the head/tail decision its metadata records), or not
    (status `failed` with its `problem`, or the given status); the track's `track_sha1` and
    `stat` (`track_stat`, taken before it was read) when known."""
    row = dict.fromkeys(SHARD_COLUMNS, "")
    row.update(id=ident, path=str(track), problem=" ".join(str(problem).split()), track_sha1=track_sha1,
               domain=domain if label is not None else "")
    row.update({k: str(v) for k, v in (stat or {}).items() if k in TRACK_STAT_COLUMNS})
    if label is None:
        row["status"] = status or "failed"
        return row
    from maggotflow.formats import file_sha1

    stat_label = os.stat(label)
    row.update(label=str(label), status=status or "ok", sha1=file_sha1(label), size=str(stat_label.st_size),
               mtime_ns=str(stat_label.st_mtime_ns), **label_orientation(label))
    return row


def shard_table_text(rows: Iterable[Mapping[str, str]]) -> str:
    return tsv.format_rows(SHARD_COLUMNS, rows)


def read_shard_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a shard table (also of one written before the domain, spine_order* or track_*
    columns: those read as empty)."""
    return [dict(dict.fromkeys(SHARD_COLUMNS, ""), **row) for row in tsv.read_rows(path)]


def unlike_training(rows: Iterable[Mapping[str, str]]) -> list[str]:
    """The track files of `ok` rows whose label judged them unlike the tagger's training data."""
    return [row["path"] for row in rows if row.get("status") == "ok" and row.get("domain") == UNLIKE_TRAINING]


def domain_warning(where: str, rows: Iterable[Mapping[str, str]], shown: int = 5) -> str | None:
    """The warning about a run's files judged unlike the tagger's training data (None if
    none): how many, the first `shown` of them by name, and where the verdicts are."""
    rows = list(rows)
    unlike = unlike_training(rows)
    if not unlike:
        return None
    tagged = sum(row.get("status") == "ok" for row in rows)
    names = "\n".join(f"  {printable_path(p)}" for p in unlike[:shown])
    more = f"\n  ... and {len(unlike) - shown} more" if len(unlike) > shown else ""
    return (f"{where}: {len(unlike)} of {tagged} tagged file(s) are unlike the tagger's training data (domain "
            f"check: column domain of the run's summary.tsv, metadata.maggotflow.domain_check of each label); "
            f"check their labels before trusting them:\n{names}{more}")


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """'1 file', '2 files', '0 files'; `plural` for irregular words ('1 entry', '2 entries')."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def label_changed(row: Mapping[str, str]) -> bool:
    """True when the label of an `ok` row is no longer on disk as recorded: missing, or changed.

    One stat; the sha1 is computed only for a label whose size matches but whose
    modification time does not.
    """
    from maggotflow.formats import file_sha1

    try:
        stat = os.stat(row["label"])
    except OSError:
        return True
    if row.get("size") and str(stat.st_size) != row["size"]:
        return True
    if row.get("mtime_ns") and str(stat.st_mtime_ns) != row["mtime_ns"]:
        try:
            return file_sha1(row["label"]) != row.get("sha1")
        except OSError:
            return True
    return False


def changed_labels(rows: Iterable[Mapping[str, str]]) -> list[str]:
    """The labels of `ok` rows that are no longer on disk as recorded (`label_changed`).
    Cheap enough for every workflow run on 10,000 files: one stat per label."""
    return [row["label"] for row in rows
            if row.get("status") == "ok" and row.get("label") and label_changed(row)]


def write_shard_table(path: str | Path, rows: Iterable[Mapping[str, str]]) -> None:
    write_text_atomic(path, shard_table_text(rows))


def merge_shard_tables(shards: Iterable[str | Path], out: str | Path, skipped: str | Path | None = None) -> list[dict]:
    """All shard tables of a prediction run -> its summary.tsv `out` (one row per track file,
    sorted by path). Logs the counts, the files unlike the tagger's training data, each file
    not tagged, and the folder's entries skipped as not track files (listed in `skipped`)."""
    from maggotflow.manifest import read_skipped

    rows = sorted((row for shard in shards for row in read_shard_table(shard)), key=lambda row: row["path"])
    failed = [row for row in rows if row["status"] != "ok"]
    write_shard_table(out, rows)
    log.info("%d file(s) tagged, %d failed, %d unlike the tagger's training data", len(rows) - len(failed),
             len(failed), len(unlike_training(rows)))
    warning = domain_warning(str(out), rows)
    if warning:
        log.warning("%s", warning)
    for row in failed:
        log.warning("not tagged: %s: %s", row["path"], row["problem"])
    entries = read_skipped(skipped) if skipped else []
    if entries:
        log.warning("%s of the folder skipped, not track files; listed in %s",
                    counted(len(entries), "entry", "entries"), skipped)
    return rows


def tagged_in_tables(tables: Iterable[str | Path]) -> int:
    """How many files the shard tables on disk among `tables` record as tagged."""
    return sum(row["status"] == "ok" for table in map(Path, tables) if table.is_file()
               for row in read_shard_table(table))


def changed_labels_in_tables(tables: Iterable[str | Path]) -> list[str]:
    """`changed_labels` of every shard table on disk among `tables`; an unreadable table is
    listed itself (its labels cannot be checked)."""
    changed = []
    for table in map(str, tables):
        if os.path.isfile(table):
            try:
                changed += changed_labels(read_shard_table(table))
            except (OSError, UnicodeDecodeError, ValueError):
                changed.append(table)
    return changed
