"""Tag the track files of one shard with one model load (maggotflow.prediction.predict_files).

Each file's .label goes to `<run>/labels/<relative path with .label>` (atomic); the shard's
output `<run>/shards/<shard>.tsv` lists every file with its status and the label's sha1,
size and time (maggotflow.records: a label deleted or edited later is re-made). A file that
cannot be read does not stop the others; the job then fails naming it (or, with
predict.skip_bad_files, records it as failed in the table and succeeds). The device and the
batch size are read from the config, not params: they do not change the labels, so changing
them re-tags nothing.
"""

import sys
from pathlib import Path

from jobsetup import job

with job(snakemake, subject=snakemake.output[0]) as log:
    from maggotflow.threads import set_torch_threads

    from maggotflow.atomic import remove_stale_temporaries
    from maggotflow.formats import ReadOptions
    from maggotflow.manifest import mirrored_label_path
    from maggotflow.prediction import predict_files
    from maggotflow.records import shard_row, unfinished_table, write_failures, write_shard_table

    set_torch_threads(snakemake.threads)  # and never more than SLURM allocated
    rows = snakemake.params.files
    shard_table = Path(snakemake.output[0])
    labels_root = shard_table.parent.parent / "labels"
    outs = [labels_root / mirrored_label_path(r["relpath"]) for r in rows]
    # The labels are this job's alone to write (side products, not declared outputs): what
    # a killed attempt left next to them goes, never to be read as a label.
    remove_stale_temporaries(outs, all_owners=True)
    failed = {}

    def on_error(path, error):
        log.error("%s", error)
        failed[str(path)] = error.problem

    predict_files(snakemake.params.model["path"], [r["path"] for r in rows], out_paths=outs,
                  batch_size=snakemake.config["predict"]["batch_size"], device=snakemake.config["device"],
                  read_options=ReadOptions(**snakemake.params.read), on_error=on_error,
                  overwrite=True)  # its own outputs; never a foreign file
    table = []
    for row, out in zip(rows, outs):
        if row["path"] in failed:
            out.unlink(missing_ok=True)  # never leave a stale label from an earlier run
            table.append(shard_row(row["id"], row["path"], problem=failed[row["path"]]))
        else:
            table.append(shard_row(row["id"], row["path"], out))
    log.info("%d file(s) tagged, %d failed", len(rows) - len(failed), len(failed))
    # A job that fails has no output (Snakemake removes it), so what it did write goes next to
    # its log: the end of a failed run lists those files as they are (records.unfinished_run_rows).
    unfinished = unfinished_table(snakemake.log[0])
    if failed:
        write_failures(snakemake.log[0], sorted(failed.items()))
        if not snakemake.params.skip_bad_files:
            write_shard_table(unfinished, table)
            sys.exit(1)
    unfinished.unlink(missing_ok=True)
    write_shard_table(shard_table, table)
