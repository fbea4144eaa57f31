"""All shards of a prediction run -> summary.tsv (one row per track file, sorted by path)."""

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.atomic import write_text_atomic

    header, rows = None, []
    for shard in snakemake.input:
        lines = open(shard, encoding="utf-8").read().splitlines()
        header = lines[0]
        rows += [line for line in lines[1:] if line]
    rows.sort(key=lambda line: line.split("\t")[1])
    failed = [r.split("\t") for r in rows if r.split("\t")[3] != "ok"]
    write_text_atomic(snakemake.output[0], "\n".join([header or ""] + rows) + "\n")
    log.info("%d file(s) tagged, %d failed", len(rows) - len(failed), len(failed))
    for row in failed:
        log.warning("not tagged: %s: %s", row[1], row[4])
