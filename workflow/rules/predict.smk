# Tagging in shards: each job loads the model once and tags predict.files_per_job track
# files, writing one .label per file into a tree that mirrors the input tree:
#   results/predict/<run>/labels/<relative path with .label>   (side products, atomic)
#   results/predict/<run>/shards/<shard>.tsv                    (the tracked output: every
#                                                               label written + its sha1)
# A label deleted or changed later makes its shard run again (rerun_if_labels_changed).
# <run> = <folder name>-<hash of folder and model>, so runs on different folders never
# share an output. The model is a parameter (its fingerprint), not an input: tagging a
# folder never triggers training, and a changed model re-tags.


rule predict_shard:
    input:
        tracks=predict_shard_tracks,
    output:
        "results/predict/{run}/shards/{shard}.tsv",
    log:
        "logs/predict/{run}/{shard}.log",
    benchmark:
        "results/benchmarks/predict/{run}/{shard}.tsv"
    params:
        files=predict_shard_params,
        model=predict_model,
        model_sha1=predict_model_fingerprint,
        settings=predict_job_settings,
        read=read_options,
        device=config["device"],
    threads: config["threads"]["predict"]
    resources:
        gpu=gpus,
        mem_mb=predict_mem_mb,
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/predict_shard.py"


rule predict_summary:
    input:
        predict_shard_files,
    output:
        "results/predict/{run}/summary.tsv",
    log:
        "logs/predict/{run}/summary.log",
    params:
        skipped=predict_skipped_file,
    localrule: True
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/summary.py"


rule export_predictions:
    input:
        predict_shard_files,
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
