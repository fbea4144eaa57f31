"""A prediction run's labels (ok rows of its summary.tsv) -> its screen summary folder
(`maggotflow.screen.summarize_run`: per-larva, per-file and per-group tables, and plots), grouped by
the metadata columns of the run's manifest (config summary.group_by)."""

from jobsetup import job

with job(snakemake, subject=snakemake.input.summary) as log:
    from maggotflow.screen import summarize_run

    summary = summarize_run(snakemake.input.summary, snakemake.params.manifest, snakemake.output[0],
                            group_by=snakemake.params.group_by)
    log.info("screen summary of %d labelled file(s) in %s", summary.files + len(summary.failed), snakemake.output[0])
