"""The records the workflow's jobs leave for each other, each with its one reader and writer.

Shard tables (`results/predict/<run>/shards/<shard>.tsv`, and `summary.tsv`, the same
columns for a whole run), written by the prediction jobs (workflow/scripts/predict_shard.py)
and read by the summary, the export, the evaluation, the ethograms and the workflow's
re-tag check (`changed_labels`)::

    id  path  label  status  problem  sha1  size  mtime_ns
    (status: ok | failed | not tagged; label's sha1, size and time as written)

Failure records (`<log stem>.failed` next to a job's log), written by a job that stopped on
bad input (workflow/scripts/jobsetup.py) and listed by the workflow at the end of the run::

    <file>\t<problem>            one line per failed input

After a run: `end_of_run_warnings` (failed inputs, skipped entries) and, after a failed
run, `rewrite_unfinished_summary` (what a prediction run's summary says about each file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from maggotflow.atomic import write_text_atomic


SHARD_COLUMNS = ("id", "path", "label", "status", "problem", "sha1", "size", "mtime_ns")


def shard_row(ident: str, track: str, label: str | Path | None = None, problem: str = "",
              status: str | None = None) -> dict[str, str]:
    """A shard-table row: `label` written (its sha1, size and mtime as on disk now), or not
    (status `failed` with its `problem`, or the given status)."""
    row = dict.fromkeys(SHARD_COLUMNS, "")
    row.update(id=ident, path=str(track), problem=" ".join(str(problem).split()))
    if label is None:
        row["status"] = status or "failed"
        return row
    from maggotflow.formats import file_sha1

    stat = os.stat(label)
    row.update(label=str(label), status=status or "ok", sha1=file_sha1(label), size=str(stat.st_size),
               mtime_ns=str(stat.st_mtime_ns))
    return row


def shard_table_text(rows: Iterable[Mapping[str, str]]) -> str:
    lines = ["\t".join(SHARD_COLUMNS)]
    lines += ["\t".join(str(r.get(c, "")) for c in SHARD_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def read_shard_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a shard table (also of one written before the size/mtime_ns columns)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(dict.fromkeys(SHARD_COLUMNS, ""), **dict(zip(header, line.split("\t"))))
            for line in lines[1:] if line]


def changed_labels(rows: Iterable[Mapping[str, str]]) -> list[str]:
    """The labels of `ok` rows that are no longer on disk as recorded: missing, or changed.

    Cheap enough for every workflow start on 10,000 files: one stat per label; the sha1 is
    computed only for a label whose size matches but whose modification time does not.
    """
    from maggotflow.formats import file_sha1

    changed = []
    for row in rows:
        if row.get("status") != "ok" or not row.get("label"):
            continue
        try:
            stat = os.stat(row["label"])
        except OSError:
            changed.append(row["label"])
            continue
        if row.get("size") and str(stat.st_size) != row["size"]:
            changed.append(row["label"])
        elif row.get("mtime_ns") and str(stat.st_mtime_ns) != row["mtime_ns"]:
            try:
                if file_sha1(row["label"]) != row.get("sha1"):
                    changed.append(row["label"])
            except OSError:
                changed.append(row["label"])
    return changed


def write_shard_table(path: str | Path, rows: Iterable[Mapping[str, str]]) -> None:
    write_text_atomic(path, shard_table_text(rows))


def stale_labels(shard_table: str | Path) -> list[str]:
    """`changed_labels` of a shard table on disk; [] when it does not exist, the table
    itself when it cannot be read (its shard must be made again)."""
    if not Path(shard_table).is_file():
        return []
    try:
        return changed_labels(read_shard_table(shard_table))
    except (OSError, UnicodeDecodeError, ValueError):
        return [str(shard_table)]


# --------------------------------------------------------------------------------------
# Failure records

FAILED_SUFFIX = ".failed"


def failure_record(log_path: str | Path) -> Path:
    """`logs/x/y.log` -> `logs/x/y.failed`."""
    return Path(log_path).with_suffix(FAILED_SUFFIX)


def write_failures(log_path: str | Path, failures: Iterable[tuple[str, str]]) -> None:
    """Record `(file, problem)` pairs next to the job's log (atomic; one line each)."""
    text = "".join(f"{f}\t{' '.join(str(p).split())}\n" for f, p in failures)
    write_text_atomic(failure_record(log_path), text)


def read_failures(log_path: str | Path, since: float = 0.0) -> dict[str, str]:
    """{file: problem} of the job's failure record; {} when absent, unreadable or older
    than `since` (a record left by an earlier run)."""
    record = failure_record(log_path)
    try:
        if record.stat().st_mtime < since - 1:
            return {}
        lines = record.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def recent_failures(folders: Iterable[str | Path], since: float) -> list[tuple[str, str, Path]]:
    """(file, problem, log) of every failure recorded under `folders` since `since`."""
    found = []
    for folder in folders:
        for record in sorted(Path(folder).rglob(f"*{FAILED_SUFFIX}")):
            log_path = record.with_suffix(".log")
            found += [(f, p, log_path) for f, p in read_failures(log_path, since).items()]
    return found


def end_of_run_warnings(log_folders: Iterable[str | Path], since: float,
                        scans: Iterable[tuple[str | Path, str | Path]] = ()) -> list[str]:
    """What a workflow run says at its end: the inputs that failed since `since` (recorded
    under `log_folders`), and per scanned folder `(folder, skipped listing)` how many of its
    entries were skipped as not track files, and where they are listed."""
    from maggotflow.manifest import read_skipped

    warnings = []
    failures = recent_failures(log_folders, since)
    if failures:
        lines = [f"{len(failures)} input(s) failed (file, problem, log):"]
        warnings.append("\n".join(lines + [f"  {f}\n      {p}\n      log: {log}" for f, p, log in failures]))
    for folder, listing in scans:
        entries = read_skipped(listing)
        if entries:
            warnings.append(f"{folder}: {len(entries)} entries skipped, not track files "
                            f"(e.g. {entries[0][0]}: {entries[0][-1]}); listed in {listing}")
    return warnings


# --------------------------------------------------------------------------------------
# A prediction run after a failure


def unfinished_table(log_path: str | Path) -> Path:
    """Where a prediction job that fails writes the rows it did tag (it has no output)."""
    return Path(log_path).with_suffix(".table.tsv")


def rewrite_unfinished_summary(run_dir: str | Path, log_dir: str | Path, shards: Mapping[str, Sequence[str]],
                               tracks: Mapping[str, str], since: float) -> str | None:
    """After a failed workflow run, rewrite `run_dir/summary.tsv` to say what is on disk.

    A shard whose job failed has no table, so the summary job could not run and the summary
    of an earlier run would still list its files as `ok` with old sha1s. Returns the warning
    to print, or None when every shard finished (the summary is then left alone).
    """
    run_dir, log_dir = Path(run_dir), Path(log_dir)
    rows, unfinished = unfinished_run_rows(shards, tracks, table_of=lambda shard: run_dir / "shards" / f"{shard}.tsv",
                                           log_of=lambda shard: log_dir / f"{shard}.log", since=since)
    if not unfinished:
        return None
    write_shard_table(run_dir / "summary.tsv", rows)
    return f"{run_dir / 'summary.tsv'}: {unfinished} prediction job(s) did not finish; their files are listed as " \
           "failed or not tagged"


def unfinished_run_rows(
    shards: Mapping[str, Sequence[str]],
    tracks: Mapping[str, str],
    table_of: Callable[[str], Path],
    log_of: Callable[[str], Path],
    since: float,
) -> tuple[list[dict[str, str]], int]:
    """The rows of a run's summary after a failed workflow run, and the number of shards
    whose job did not finish.

    `shards` maps each shard to its track ids, `tracks` each id to its track path. A shard
    with a table is taken as it is; without one, its rows are what its failed job wrote next
    to its log (this run's), else its failure record's problems (`failed`), else `not
    tagged` (its job did not finish): never `ok` without a label on disk.
    """
    rows, unfinished = [], 0
    for shard, ids in shards.items():
        table = table_of(shard)
        if table.is_file():
            rows += read_shard_table(table)
            continue
        unfinished += 1
        log_path = log_of(shard)
        written = unfinished_table(log_path)
        try:
            if written.stat().st_mtime >= since - 1:
                rows += read_shard_table(written)
                continue
        except OSError:
            pass
        problems = read_failures(log_path, since)
        for ident in ids:
            track = tracks[ident]
            if track in problems:
                rows.append(shard_row(ident, track, problem=problems[track]))
            else:
                rows.append(shard_row(ident, track, status="not tagged",
                                      problem=f"its job did not finish; see {log_path}"))
    return sorted(rows, key=lambda r: r["path"]), unfinished
