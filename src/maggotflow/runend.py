"""What a workflow run says at its end (printed by the main process, never written), and the
failure records it reads them from.

Failure records (`<log stem>.failed` next to a job's log), written by a job that stopped on
bad input (workflow/scripts/jobsetup.py)::

    <file>\t<problem>            one row per failed input

At the end of a run: `end_of_run_warnings` (failed inputs, skipped entries), `run_lines`
and `evaluation_line` (what was produced and where), `orientation_line` (how the head/tail
of the run's files was decided) and `orientation_warning` (the files whose head and tail
may be swapped: read head first by convention, or contradicted by the motion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from maggotflow import tsv
from maggotflow.atomic import write_text_atomic
from maggotflow.runtables import counted, read_shard_table, unlike_training
from maggotflow.tracks import printable_path

# How a head/tail decision was made (spine_order_decided_by), in words, in the order counted.
DECIDED_BY = {"motion": "decided by the larvae's motion", "configured": "set by read.spine_order",
              "file": "named by the track file", "convention": "read head first by convention"}
EVIDENCE = {"supports": "the motion agrees", "contradicts": "the motion contradicts it",
            "disagree": "crawling direction and head sweeps disagree", "weak": "too little motion to tell"}


def head_tail_doubts(rows: Iterable[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(track file, why) of the `ok` rows whose head and tail may be swapped: read head first
    by convention, or decided otherwise but contradicted by the motion (`maggotflow.orientation`)."""
    doubts = []
    for row in rows:
        how, evidence = row.get("spine_order_decided_by", ""), row.get("spine_order_evidence", "")
        if row.get("status") != "ok" or (how != "convention" and evidence != "contradicts"):
            continue
        why = {"convention": "head first by convention", "configured": f"read.spine_order {row.get('spine_order')}",
               "file": "head as the file names it"}.get(how, how or "not recorded")
        figures = []
        fraction = row.get("spine_order_forward_fraction", "")
        try:
            figures.append(f"forward motion {100 * float(fraction):.0f}%")
        except ValueError:
            pass
        if row.get("spine_order_moving_s"):
            figures.append(f"{row['spine_order_moving_s']} s moving")
        if row.get("spine_order_head_sweep_ratio"):
            figures.append(f"head/tail sweep ratio {row['spine_order_head_sweep_ratio']}")
        why = f"{why}, {EVIDENCE[evidence]}" if evidence in EVIDENCE else why
        doubts.append((row["path"], f"{why} ({', '.join(figures)})" if figures else why))
    return doubts


def orientation_line(where: str, rows: Iterable[Mapping[str, str]]) -> str | None:
    """One line on how the head/tail of a run's tagged (`ok`) files was decided: by motion,
    config, the file, or convention, and how many the motion contradicts; None when no file
    was tagged. Short when every file was decided by the larvae's motion."""
    tagged = [row for row in rows if row.get("status") == "ok"]
    if not tagged:
        return None
    counts = {how: 0 for how in DECIDED_BY}
    unknown = 0
    for row in tagged:
        how = row.get("spine_order_decided_by", "")
        if how in counts:
            counts[how] += 1
        else:
            unknown += 1
    if counts["motion"] == len(tagged):
        return f"{where}: head/tail of {'the' if len(tagged) == 1 else 'all'} {counted(len(tagged), 'tagged file')} " \
               f"{DECIDED_BY['motion']}"
    parts = [f"{n} {DECIDED_BY[how]}" for how, n in counts.items() if n]
    if unknown:
        parts.append(f"{unknown} not recorded")
    contradicted = sum(row.get("spine_order_evidence") == "contradicts" for row in tagged)
    return (f"{where}: head/tail of {counted(len(tagged), 'tagged file')}: {', '.join(parts)}; "
            f"{contradicted} contradicted by the motion (columns spine_order* of summary.tsv)")


def orientation_warning(where: str, rows: Iterable[Mapping[str, str]], shown: int = 5) -> str | None:
    """The warning naming a run's files whose head and tail may be swapped (`head_tail_doubts`;
    None if none): how many, the first `shown` with why and the figures, and where to look."""
    rows = list(rows)
    doubts = head_tail_doubts(rows)
    if not doubts:
        return None
    tagged = sum(row.get("status") == "ok" for row in rows)
    names = "\n".join(f"  {printable_path(p)}: {why}" for p, why in doubts[:shown])
    more = f"\n  ... and {len(doubts) - shown} more" if len(doubts) > shown else ""
    return (f"{where}: head and tail may be swapped in {len(doubts)} of {counted(tagged, 'tagged file')} "
            f"(read head first by convention, or contradicted by the larvae's motion; columns spine_order* of "
            f"summary.tsv): in a swapped file, larvae crawling forward look like backing up to the tagger; check "
            f"them (config read.spine_order forces the order of .spine files):\n{names}{more}")


def run_lines(folder: str | Path, source: str, exported: bool) -> list[str]:
    """What a prediction run produced, for the closing message: where its labels are, how many
    files were tagged, failed or judged unlike the training data, and the exported list and
    screen summary when present; [] without its summary.tsv."""
    folder = Path(folder)
    if not (folder / "summary.tsv").is_file():
        return []
    rows = read_shard_table(folder / "summary.tsv")
    tagged = sum(r["status"] == "ok" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    unlike = len(unlike_training(rows))
    note = f", {unlike} unlike the tagger's training data" if unlike else ""
    lines = [f"labels of {source}: {folder / 'labels'} ({tagged} file(s) tagged, {failed} failed{note})"]
    if exported and (folder / "exported.tsv").is_file():
        lines.append(f"  also next to the track files (list: {folder / 'exported.tsv'})")
    if (folder / "screen").is_dir():
        lines.append(f"  screen summary: {folder / 'screen'}")
    return lines


def evaluation_line(metrics: str | Path) -> str:
    """The held-out evaluation's scores from its metrics.json, for the closing message."""
    import json

    try:
        scores = json.loads(Path(metrics).read_text(encoding="utf-8"))
        return f"held-out evaluation: macro-F1 {scores['macro_f1']:.3f}, accuracy {scores['accuracy']:.3f} ({metrics})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"held-out evaluation: {metrics}"


FAILED_SUFFIX = ".failed"


def failure_record(log_path: str | Path) -> Path:
    """`logs/x/y.log` -> `logs/x/y.failed`."""
    return Path(log_path).with_suffix(FAILED_SUFFIX)


def write_failures(log_path: str | Path, failures: Iterable[tuple[str, str]]) -> None:
    """Record `(file, problem)` pairs next to the job's log (atomic; one row each)."""
    text = "".join(tsv.format_line([str(f), " ".join(str(p).split())]) for f, p in failures)
    write_text_atomic(failure_record(log_path), text)


def read_failures(log_path: str | Path, since: float = 0.0) -> dict[str, str]:
    """{file: problem} of the job's failure record; {} when absent, unreadable or older
    than `since` (a record left by an earlier run)."""
    record = failure_record(log_path)
    try:
        if record.stat().st_mtime < since - 1:
            return {}
        return {cells[0]: cells[1] for cells in tsv.read_lines(record) if len(cells) >= 2}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}


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
        warnings.append("\n".join(lines + [f"  {printable_path(f)}\n      {p}\n      log: {log}"
                                            for f, p, log in failures]))
    for folder, listing in scans:
        entries = read_skipped(listing)
        if entries:
            warnings.append(f"{folder}: {counted(len(entries), 'entry', 'entries')} skipped, not track files "
                            f"(e.g. {printable_path(entries[0][0])}: {entries[0][-1]}); listed in {listing}")
    return warnings
