"""Held-out predictions (the held-out run's summary.tsv) vs reference .label files -> metrics.json,
per_label.csv, confusion.*, table.txt; per_file.tsv (each file evaluated alone) and
behaviour.tsv/.png (time in each behaviour and bout durations, reference vs predicted):
`maggotflow.evaluation.write_evaluation` into the folder of the rule's outputs."""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject="evaluation") as log:
    from maggotflow.evaluation import format_table, run_pairs, write_evaluation

    task = snakemake.params.task
    pairs = run_pairs(snakemake.input.summary, snakemake.params.references)
    report = write_evaluation(pairs, Path(snakemake.output.metrics).parent, labels=task["labels"],
                              synonyms=task["synonyms"], ignore_ends=snakemake.params.ignore_ends)
    log.info("%d held-out file(s)\n%s", len(pairs), format_table(report))
