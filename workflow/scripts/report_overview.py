"""Results -> the report's landing page, results/report/overview.rst
(`maggotflow.report.overview_of_results`)."""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject="report overview") as log:
    from maggotflow import report

    text = report.overview_of_results(
        evaluation=Path(snakemake.input.metrics).parent, tagger=snakemake.input.tagger,
        dataset=snakemake.input.dataset, manifest=snakemake.params.manifest, settings=snakemake.params.settings,
        runs=snakemake.params.runs, screens=snakemake.input.screens)
    report.write_overview(snakemake.output[0], text)
    log.info("%s written", snakemake.output[0])
