# Tagging in shards: each job loads the model once and tags predict.files_per_job track
# files, writing one .label per file into a tree that mirrors the input tree:
#   results/predict/<run>/labels/<relative path with .label>   (side products of this rule's
#                                                               jobs only, atomic)
#   results/predict/<run>/shards/<shard>.tsv                    (the declared output: every
#                                                               label written + its sha1, and
#                                                               each track's sha1 and stat)
# Snakemake alone decides what runs: a missing or incomplete table (killed job, Ctrl-C,
# --rerun-incomplete), or changed params (a track's size, mtime or ctime: shard_stat).
# The table is update(): kept while the job runs, so that the job re-tags only the files
# whose label is not current (maggotflow.shards), and put back if the job fails.
# Runs: <folder name>-<hash of folder and model> for `snakemake predict` (runs on different
# folders never share an output), and `heldout` for the held-out evaluation files (tagged by
# the tagger trained here). See "prediction runs" in common.smk.


rule predict_shard:
    input:
        tracks=shard_tracks,
        model=run_tagger,
    output:
        update("results/predict/{run}/shards/{shard}.tsv"),
    log:
        "logs/predict/{run}/{shard}.log",
    benchmark:
        "results/benchmarks/predict/{run}/{shard}.tsv"
    params:
        files=shard_files,
        stat=shard_stat,
        model=run_model,
        read=config["read"],
        skip_bad_files=config["predict"]["skip_bad_files"],
    threads: config["threads"]["predict"]
    resources:
        gpu=GPUS,
        mem_mb=memory_mb(6000),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/predict_shard.py"


rule predict_summary:
    input:
        run_shards,
    output:
        "results/predict/{run}/summary.tsv",
    log:
        "logs/predict/{run}/summary.log",
    params:
        skipped=run_skipped_file,
    localrule: True
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/summary.py"


rule export_predictions:
    input:
        summary="results/predict/{run}/summary.tsv",
    output:
        "results/predict/{run}/exported.tsv",
    log:
        "logs/predict/{run}/export.log",
    params:
        overwrite=config["predict"]["overwrite_existing"],
    localrule: True
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/export.py"


rule predict:
    input:
        predict_targets,
