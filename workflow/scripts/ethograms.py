"""Ethograms of held-out files for the report (`maggotflow.ethogram.run_ethograms`): per larva,
predicted above reference labels, one PNG per file (the first `n_files` held-out files by path)
in the output folder, titled by the file's path relative to its folder (the run's manifest)."""

from jobsetup import job

with job(snakemake, subject="ethograms") as log:
    from maggotflow.ethogram import run_ethograms

    written = run_ethograms(snakemake.input.summary, snakemake.params.references, snakemake.params.manifest,
                            snakemake.params.n_files, snakemake.output[0])
    log.info("%d ethogram(s) in %s", len(written), snakemake.output[0])
