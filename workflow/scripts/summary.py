"""All shards of a prediction run -> summary.tsv (one row per track file, sorted by path).

The rows are the shard tables' (maggotflow.records: status, problem, the label's domain-check
verdict, and its sha1, size and time as written). The log also counts the files judged unlike
the tagger's training data (maggotflow.domain) and the folder's entries that were skipped as
not track files (listed in the run's skipped.tsv).
"""

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.manifest import read_skipped
    from maggotflow.records import counted, domain_warning, read_shard_table, unlike_training, write_shard_table

    rows = [row for shard in snakemake.input for row in read_shard_table(shard)]
    rows.sort(key=lambda row: row["path"])
    failed = [row for row in rows if row["status"] != "ok"]
    write_shard_table(snakemake.output[0], rows)
    log.info("%d file(s) tagged, %d failed, %d unlike the tagger's training data", len(rows) - len(failed),
             len(failed), len(unlike_training(rows)))
    warning = domain_warning(snakemake.output[0], rows)
    if warning:
        log.warning("%s", warning)
    for row in failed:
        log.warning("not tagged: %s: %s", row["path"], row["problem"])
    entries = read_skipped(snakemake.params.skipped)
    if entries:
        log.warning("%s of the folder skipped, not track files; listed in %s",
                    counted(len(entries), "entry", "entries"), snakemake.params.skipped)
