"""Trained member taggers -> one majority-vote ensemble instance (maggotflow.ensemble.assemble)."""

from jobsetup import job

with job(snakemake, subject="ensemble") as log:
    from maggotflow.ensemble import assemble

    ensemble = assemble(list(snakemake.input), snakemake.output[0], post_rule=snakemake.params.post_rule)
    log.info("ensemble of %d members written to %s", len(ensemble.members), snakemake.output[0])
