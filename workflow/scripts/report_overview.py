"""Results -> the report's landing page, results/report/overview.rst (maggotflow.report)."""

from jobsetup import job

with job(snakemake, subject="report overview") as log:
    from pathlib import Path

    from maggotflow import report
    from maggotflow.manifest import read_manifest

    settings = snakemake.params.settings
    manifest = read_manifest(snakemake.params.manifest)
    relpaths = {row["label"]: row["relpath"] for row in manifest if row["label"]}
    tracks = [row["path"] for row in manifest][:20]
    text = report.overview(
        metrics=report.load_json(snakemake.input.metrics),
        per_file=report.read_tsv(snakemake.input.per_file),
        behaviour=report.read_tsv(snakemake.input.behaviour),
        provenance=report.load_json(Path(snakemake.input.tagger) / "provenance.json"),
        settings=settings,
        dataset=report.dataset_stats(snakemake.input.dataset),
        relpaths=relpaths,
        runs=snakemake.params.runs,
        simulated=report.is_simulated(settings["data_folders"] + tracks),
        domain=report.tagger_domain(snakemake.input.tagger),
        run_domain={run: report.run_domain_counts(screen)
                    for run, screen in zip(snakemake.params.runs, snakemake.input.screens)},
    )
    report.write_overview(snakemake.output[0], text)
    log.info("%s written", snakemake.output[0])
