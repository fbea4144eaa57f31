"""Tag the track files of one shard with one model load (maggotflow.prediction.predict_files).

Each file's .label goes to `<run>/labels/<relative path with .label>` (atomic); the shard's
output `<run>/shards/<shard>.tsv` lists every file with its status and the label's sha1.
A file that cannot be read does not stop the others; the job then fails naming it (or, with
predict.skip_bad_files, records it as failed in the TSV and succeeds).
"""

import sys
from pathlib import Path

from jobsetup import job, record_failures

with job(snakemake, subject=snakemake.output[0]) as log:
    import torch

    from maggotflow.atomic import write_text_atomic
    from maggotflow.formats import ReadOptions, file_sha1
    from maggotflow.manifest import mirrored_label_path
    from maggotflow.prediction import predict_files

    torch.set_num_threads(snakemake.threads)
    rows = snakemake.params.files
    settings = snakemake.params.settings
    shard_table = Path(snakemake.output[0])
    labels_root = shard_table.parent.parent / "labels"
    outs = [labels_root / mirrored_label_path(r["relpath"]) for r in rows]
    failed = {}

    def on_error(path, error):
        log.error("%s", error)
        failed[str(path)] = error.problem

    model = snakemake.input.get("model") or snakemake.params.model
    predict_files(model, [r["path"] for r in rows], out_paths=outs, batch_size=settings["batch_size"],
                  device=snakemake.params.device, read_options=ReadOptions(**snakemake.params.read),
                  on_error=on_error, overwrite=True)  # its own outputs; never a foreign file
    lines = ["id\tpath\tlabel\tstatus\tproblem\tsha1"]
    for row, out in zip(rows, outs):
        if row["path"] in failed:
            out.unlink(missing_ok=True)  # never leave a stale label from an earlier run
            lines.append(f"{row['id']}\t{row['path']}\t\tfailed\t{' '.join(failed[row['path']].split())}\t")
        else:
            lines.append(f"{row['id']}\t{row['path']}\t{out}\tok\t\t{file_sha1(out)}")
    log.info("%d file(s) tagged, %d failed", len(rows) - len(failed), len(failed))
    if failed:
        record_failures(snakemake.log[0], sorted(failed.items()))
        if not settings["skip_bad_files"]:
            sys.exit(1)
    write_text_atomic(shard_table, "\n".join(lines) + "\n")
