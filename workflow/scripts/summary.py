"""All shards of a prediction run -> summary.tsv, one row per track file sorted by path
(`maggotflow.runtables.merge_shard_tables`; the log counts failed files, files unlike the
tagger's training data and the folder's skipped entries)."""

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]):
    from maggotflow.runtables import merge_shard_tables

    merge_shard_tables(snakemake.input, snakemake.output[0], snakemake.params.skipped)
