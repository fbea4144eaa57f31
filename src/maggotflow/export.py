"""Copies of a prediction run's labels next to their track files, never replacing a user's file.

`trx.mat` -> `predicted.label`, `X.spine`/`X.csv` -> `X.predicted.label`
(`names.exported_label_path`). Each track file gets one status in `exported.tsv`
(columns path, exported, status):

- `written`: the label was copied;
- `unchanged`: the same bytes were already there;
- `kept`: an earlier export of maggotflow's that differs, and `overwrite` is false;
- `kept (not written by maggotflow)`: a file without maggotflow's mark sits there; it is
  never replaced, whatever `overwrite` says;
- `failed`: the track file was not tagged (no label to copy).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from maggotflow import tsv
from maggotflow.atomic import may_replace, write_bytes_atomic, write_text_atomic
from maggotflow.formats.label import is_maggotflow_label
from maggotflow.names import exported_label_path

log = logging.getLogger(__name__)

EXPORT_COLUMNS = ("path", "exported", "status")
FOREIGN = "kept (not written by maggotflow)"


@dataclass(frozen=True)
class ExportCounts:
    written: int
    kept: int


def export_label(track: str, label: str | Path, overwrite: bool) -> tuple[Path, str]:
    """Copy one predicted `label` next to `track` unless the file there forbids it: (target, status)."""
    target = exported_label_path(track)
    data = Path(label).read_bytes()
    if os.path.lexists(target):
        if target.is_file() and target.read_bytes() == data:
            return target, "unchanged"
        if not may_replace(target, is_maggotflow_label):
            log.warning("%s: not written by maggotflow; kept, never replaced (the prediction is in %s)",
                        target, label)
            return target, FOREIGN
        if not overwrite:
            log.warning("%s: an earlier export that differs; kept (set predict.overwrite_existing: true "
                        "to replace it)", target)
            return target, "kept"
    write_bytes_atomic(target, data)
    return target, "written"


def export_labels(summary_rows: Iterable[Mapping[str, str]], out: str | Path, overwrite: bool) -> ExportCounts:
    """Export the label of every tagged row of a run's summary (`runtables.read_shard_table`)
    and write the statuses to `out` (exported.tsv)."""
    table = []
    for row in summary_rows:
        if row["status"] != "ok":
            table.append((row["path"], "", "failed"))
            continue
        target, status = export_label(row["path"], row["label"], overwrite)
        table.append((row["path"], str(target), status))
    write_text_atomic(out, tsv.format_rows(EXPORT_COLUMNS, table))
    statuses = [status for _, _, status in table]
    counts = ExportCounts(written=statuses.count("written"), kept=statuses.count("kept") + statuses.count(FOREIGN))
    log.info("exported %d label file(s); %d existing file(s) kept", counts.written, counts.kept)
    return counts
