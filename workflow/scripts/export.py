"""Copy each predicted .label next to its track file, never replacing a user's file
(maggotflow.export)."""

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]):
    from maggotflow.export import export_labels
    from maggotflow.runtables import read_shard_table

    export_labels(read_shard_table(snakemake.input.summary), snakemake.output[0], snakemake.params.overwrite)
