"""Tag the track files of one shard (maggotflow.shards.tag_shard: one model load, only the
files whose label is not current).

Each file's .label goes to `<run>/labels/<relative path with .label>` (atomic; side products
that only this rule's jobs write); the shard's declared output `<run>/shards/<shard>.tsv`
lists every file with its status, the label's sha1, size and time and the track's sha1, size,
mtime and ctime (maggotflow.runtables). The output is flagged update(): the previous table is
there while the job runs (so only changed files are hashed and re-tagged) and Snakemake puts
it back if the job fails. A file that cannot be read does not stop the others; the job then
fails naming it (or, with predict.skip_bad_files, records it as failed and succeeds). No
file is ever deleted here. The device, the batch size and the reader processes are read from
the config, not params: they do not change the labels, so changing them re-tags nothing. The
job's cores (`threads:`) are shared between reader processes and torch
(`maggotflow.threads.reader_split`).
"""

import sys

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.formats import ReadOptions
    from maggotflow.runend import write_failures
    from maggotflow.runtables import write_shard_table
    from maggotflow.shards import tag_run_shard
    from maggotflow.threads import set_torch_threads

    set_torch_threads(snakemake.threads)  # and never more than SLURM allocated
    table = tag_run_shard(snakemake.params.model["path"], snakemake.params.files, snakemake.output[0],
                          read_options=ReadOptions(**snakemake.params.read),
                          batch_size=snakemake.config["predict"]["batch_size"], device=snakemake.config["device"],
                          readers=snakemake.config["predict"]["readers"], cores=snakemake.threads,
                          on_error=lambda path, error: log.error("%s", error))
    failed = [(row["path"], row["problem"]) for row in table if row["status"] != "ok"]
    log.info("%d file(s) tagged, %d failed", len(table) - len(failed), len(failed))
    if failed:
        write_failures(snakemake.log[0], failed)
        if not snakemake.params.skip_bad_files:
            sys.exit(1)  # no table: Snakemake puts the previous one back, or there is none
    write_shard_table(snakemake.output[0], table)
