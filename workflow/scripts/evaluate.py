"""Held-out predictions (the held-out run's summary.tsv) vs reference .label files -> metrics.json,
per_label.csv, confusion.*, table.txt; per_file.tsv (each file evaluated alone) and
behaviour.tsv/.png (time in each behaviour and bout durations, reference vs predicted)."""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject="evaluation") as log:
    from maggotflow.atomic import write_text_atomic
    from maggotflow.evaluation import (compare_behaviour, evaluate, format_table, per_file_scores,
                                      write_behaviour, write_per_file, write_report)
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
    settings = {"labels": task["labels"], "synonyms": task["synonyms"], "ignore_ends": snakemake.params.ignore_ends}
    report = evaluate(pairs, **settings)
    write_report(report, Path(snakemake.output.metrics).parent)
    write_per_file(per_file_scores(pairs, **settings), snakemake.output.per_file)
    write_behaviour(*compare_behaviour(report, pairs, synonyms=task["synonyms"]),
                    snakemake.output.behaviour, snakemake.output.behaviour_png)
    table = format_table(report)
    write_text_atomic(snakemake.output.table, table + "\n")
    log.info("%d held-out file(s)\n%s", len(pairs), table)
