"""Held-out predictions (the held-out run's summary.tsv) vs reference .label files -> metrics.json,
per_label.csv, confusion.*, table.txt."""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject="evaluation") as log:
    from maggotflow.atomic import write_text_atomic
    from maggotflow.evaluation import evaluate, format_table, write_report
    from maggotflow.records import read_shard_table

    references = snakemake.params.references
    pairs = []
    for row in read_shard_table(snakemake.input.summary):
        if row["status"] == "ok":
            pairs.append((row["label"], references[row["id"]]))
        else:
            log.warning("%s: not tagged, left out of the evaluation", row["path"])
    pairs.sort(key=lambda pair: pair[1])
    task = snakemake.params.task
    report = evaluate(pairs, labels=task["labels"], synonyms=task["synonyms"],
                      ignore_ends=snakemake.params.ignore_ends)
    write_report(report, Path(snakemake.output.metrics).parent)
    table = format_table(report)
    write_text_atomic(snakemake.output.table, table + "\n")
    log.info("%d held-out file(s)\n%s", len(pairs), table)
