"""A prediction run's labels (ok rows of its summary.tsv) -> its screen summary folder
(maggotflow.screen.summarize: per-larva, per-file and per-group tables, and plots), grouped by
the metadata columns of the run's manifest (config summary.group_by)."""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject=snakemake.input.summary) as log:
    from maggotflow.manifest import read_manifest
    from maggotflow.records import read_shard_table
    from maggotflow.screen import summarize

    META = ("tracker", "genotype", "effector", "protocol", "date_time")
    rows = [row for row in read_shard_table(snakemake.input.summary) if row["status"] == "ok"]
    metadata = None
    if Path(snakemake.params.manifest).is_file():
        by_id = read_manifest(snakemake.params.manifest).by_id
        metadata = {row["label"]: {k: by_id[row["id"]].get(k, "") for k in META}
                    for row in rows if row["id"] in by_id}
    else:
        log.warning("%s: no manifest, files are not grouped by their metadata", snakemake.params.manifest)
    summarize([row["label"] for row in rows], snakemake.output[0], metadata=metadata,
              group_by=tuple(snakemake.params.group_by))
    log.info("screen summary of %d labelled file(s) in %s", len(rows), snakemake.output[0])
