"""`maggotflow summarize`: many `.label` files -> behaviour tables and plots by group (`maggotflow.screen`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from maggotflow.cli import UsageError

if TYPE_CHECKING:
    from maggotflow.screen import ScreenSummary

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from maggotflow.screen import DEFAULT_GROUP_BY

    parser.add_argument("labels", nargs="+", metavar="LABELS",
                        help=".label files, or folders searched recursively for *.label")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for per_larva.tsv, per_file.tsv, groups.tsv, transitions.tsv, failed.tsv "
                             "and the plots: a new or empty folder, or an earlier summary's (replaced); a folder "
                             "holding any other file is refused")
    parser.add_argument("--group-by", default=",".join(DEFAULT_GROUP_BY), metavar="KEYS",
                        help=f"comma-separated metadata keys that form a group (default {','.join(DEFAULT_GROUP_BY)})")
    parser.add_argument("--metadata", metavar="TSV",
                        help="a manifest TSV (maggotflow's manifest.tsv or your own, with a 'path' column and "
                             "metadata columns): metadata of each label file, matched by its track file")
    parser.add_argument("--labels-order", metavar="NAMES",
                        help="comma-separated behaviours shown first, in this order")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")


def label_files(inputs: list[str]) -> list[Path]:
    """Files as given, folders expanded to their `*.label` files (recursive, sorted, hidden ones skipped)."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(folder) / f for f in files if f.endswith(".label") and not f.startswith(".")]
            if not found:
                log.warning("%s: no .label file in this folder", path)
            out += sorted(found)
        else:
            out.append(path)  # a missing file is reported in failed.tsv like any broken one
    return out


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def format_groups(groups_tsv: Path, behaviours: list[str]) -> str:
    """A short text table: per group, files, larvae and the mean per-larva fraction of each behaviour."""
    from maggotflow.tsv import read_rows

    rows = read_rows(groups_tsv)
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["group"], {"files": row["files"], "larvae": row["larvae"]})
        entry[row["behaviour"]] = row["fraction_mean"]
    width = max([len("group")] + [len(g) for g in table])
    cols = [max(len(b), 6) for b in behaviours]
    lines = ["mean fraction of labelled time per larva:",
             f"{'group':<{width}}  {'files':>6} {'larvae':>7}  " + " ".join(f"{b:>{c}}" for b, c in zip(behaviours, cols))]
    for group, entry in table.items():
        cells = []
        for b, c in zip(behaviours, cols):
            value = entry.get(b, "")
            cells.append(f"{float(value):>{c}.3f}" if value else f"{'-':>{c}}")
        lines.append(f"{group:<{width}}  {entry['files']:>6} {entry['larvae']:>7}  " + " ".join(cells))
    return "\n".join(lines)


def written_files(summary: ScreenSummary) -> list[Path]:
    """The files a summary wrote (`ScreenSummary.tables`, then `.plots`), as found on disk.
    Listed by path, not by name: a table and a plot may share one (transitions.tsv and
    transitions.png)."""
    return [path for path in [*summary.tables.values(), *summary.plots.values()] if Path(path).is_file()]


def run_command(args: argparse.Namespace) -> int:
    from maggotflow.screen import manifest_metadata, summarize

    group_by = _names(args.group_by)
    if not group_by:
        raise UsageError("--group-by needs at least one metadata key, e.g. genotype,effector")
    paths = label_files(args.labels)
    if not paths:
        raise UsageError("no .label files found in " + ", ".join(args.labels))
    metadata = manifest_metadata(args.metadata, paths) if args.metadata else None
    if metadata is not None:
        log.info("%s: metadata for %d of %d label file(s)", args.metadata, len(metadata), len(paths))
    summary = summarize(paths, args.out, metadata=metadata, group_by=group_by,
                        labels_order=_names(args.labels_order) or None, plots=not args.no_plots)
    print(f"summarised {summary.files} label file(s), {summary.larvae} larvae, {len(summary.groups)} group(s) "
          f"by {','.join(group_by)}; {len(summary.failed)} file(s) failed")
    print(f"written to {summary.out_dir}:")
    for path in written_files(summary):
        print(f"  {path.name}")
    print()
    print(format_groups(summary.tables["groups"], summary.behaviours))
    if summary.failed:
        print(f"\n{len(summary.failed)} file(s) could not be read, see {summary.tables['failed']}; first: "
              f"{summary.failed[0][0]}: {summary.failed[0][1]}")
    return 0
