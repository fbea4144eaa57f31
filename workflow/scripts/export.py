"""Copy each predicted .label next to its track file, never replacing a file unless allowed.

trx.mat -> predicted.label, X.spine/X.csv -> X.predicted.label (maggotflow.manifest
.exported_label_path). exported.tsv lists each track file, the exported path and what
happened: written, unchanged (same bytes already there), kept (another file was there and
predict.overwrite_existing is false), failed (the track file was not tagged).
"""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.atomic import write_bytes_atomic, write_text_atomic
    from maggotflow.manifest import exported_label_path

    lines = ["path\texported\tstatus"]
    kept = 0
    for shard in snakemake.input:
        for line in open(shard, encoding="utf-8").read().splitlines()[1:]:
            ident, track, label, status = line.split("\t")[:4]
            target = exported_label_path(track)
            if status != "ok":
                lines.append(f"{track}\t\tfailed")
                continue
            data = Path(label).read_bytes()
            if target.exists():
                if target.read_bytes() == data:
                    lines.append(f"{track}\t{target}\tunchanged")
                    continue
                if not snakemake.params.overwrite:
                    log.warning("%s: exists and differs; kept (set predict.overwrite_existing: true to replace)",
                                target)
                    lines.append(f"{track}\t{target}\tkept")
                    kept += 1
                    continue
            write_bytes_atomic(target, data)
            lines.append(f"{track}\t{target}\twritten")
    write_text_atomic(snakemake.output[0], "\n".join(lines) + "\n")
    log.info("exported %d label file(s); %d existing file(s) kept", len(lines) - 1 - kept, kept)
