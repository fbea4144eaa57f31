# Held-out evaluation: tag the held-out files with the trained tagger (same shard script),
# then compare with their reference .label files.


rule predict_heldout_shard:
    input:
        tracks=heldout_shard_tracks,
        model=TAGGER,
    output:
        "results/evaluation/predictions/shards/{shard}.tsv",
    log:
        "logs/evaluation/predict/{shard}.log",
    benchmark:
        "results/benchmarks/evaluation/{shard}.tsv"
    params:
        files=heldout_shard_params,
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


rule evaluate_heldout:
    input:
        shards=heldout_shard_files,
        references=heldout_references,
    output:
        metrics="results/evaluation/metrics.json",
        per_label=report(
            "results/evaluation/per_label.csv",
            caption="../report/per_label.rst",
            category="Evaluation",
        ),
        confusion=report(
            "results/evaluation/confusion.png",
            caption="../report/confusion.rst",
            category="Evaluation",
        ),
        confusion_csv="results/evaluation/confusion.csv",
        table="results/evaluation/table.txt",
    log:
        "logs/evaluation/evaluate.log",
    params:
        task=task,
        references=heldout_reference_map,
        ignore_ends=config["evaluation"]["ignore_ends"],
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate:
    input:
        "results/evaluation/metrics.json",
