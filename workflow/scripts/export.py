"""Copy each predicted .label next to its track file, never replacing a user's file.

trx.mat -> predicted.label, X.spine/X.csv -> X.predicted.label (maggotflow.manifest
.exported_label_path). exported.tsv lists each track file, the exported path and what
happened: written, unchanged (same bytes already there), kept (an earlier export of
maggotflow's, different, and predict.overwrite_existing is false), kept (not written by
maggotflow) (a file without maggotflow's mark: never replaced, whatever the setting),
failed (the track file was not tagged).
"""

import os
from pathlib import Path

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.atomic import may_replace, write_bytes_atomic, write_text_atomic
    from maggotflow.formats.label import is_maggotflow_label
    from maggotflow.manifest import exported_label_path
    from maggotflow.records import read_shard_table

    lines = ["path\texported\tstatus"]
    kept = written = 0
    for row in read_shard_table(snakemake.input[0]):  # the run's summary.tsv
        track = row["path"]
        target = exported_label_path(track)
        if row["status"] != "ok":
            lines.append(f"{track}\t\tfailed")
            continue
        data = Path(row["label"]).read_bytes()
        if os.path.lexists(target):
            if target.is_file() and target.read_bytes() == data:
                lines.append(f"{track}\t{target}\tunchanged")
                continue
            if not may_replace(target, is_maggotflow_label):
                log.warning("%s: not written by maggotflow; kept, never replaced (the prediction is in %s)",
                            target, row["label"])
                lines.append(f"{track}\t{target}\tkept (not written by maggotflow)")
                kept += 1
                continue
            if not snakemake.params.overwrite:
                log.warning("%s: an earlier export that differs; kept (set predict.overwrite_existing: true "
                            "to replace it)", target)
                lines.append(f"{track}\t{target}\tkept")
                kept += 1
                continue
        write_bytes_atomic(target, data)
        lines.append(f"{track}\t{target}\twritten")
        written += 1
    write_text_atomic(snakemake.output[0], "\n".join(lines) + "\n")
    log.info("exported %d label file(s); %d existing file(s) kept", written, kept)
