# Majority-vote ensembles (config `ensemble`, preset 20221228): per window an encoder and a
# dataset, one training job per member (a cluster trains them in parallel), then one
# ensemble instance at results/models/tagger. Same scripts as the single-tagger rules.

if ENSEMBLE:

    rule pretrain_window:
        input:
            pretraining_intermediates,
        output:
            directory("results/models/pretrained-w{window}"),
        log:
            "logs/pretrain-w{window}.log",
        benchmark:
            "results/benchmarks/pretrain-w{window}.tsv"
        params:
            settings=pretrain_settings,
        threads: config["threads"]["pretrain"]
        resources:
            gpu=gpus,
            mem_mb=model_mem_mb,
        conda:
            "../../envs/maggotflow.yaml"
        script:
            "../scripts/pretrain.py"

    rule dataset_window:
        input:
            dataset_intermediates,
        output:
            "results/dataset/dataset-w{window}.h5",
        log:
            "logs/dataset-w{window}.log",
        params:
            segment=window_segment_spec,
            task=task,
            settings=config["dataset"],
            seed=config["seed"],
        threads: config["threads"]["dataset"]
        resources:
            mem_mb=dataset_mem_mb,
        conda:
            "../../envs/maggotflow.yaml"
        script:
            "../scripts/dataset.py"

    rule train_member:
        input:
            dataset=member_dataset,
            pretrained=member_pretrained,
        output:
            directory("results/models/members/{member}"),
        log:
            "logs/train/{member}.log",
        benchmark:
            "results/benchmarks/train/{member}.tsv"
        params:
            settings=train_settings,
        threads: config["threads"]["train"]
        resources:
            gpu=gpus,
            mem_mb=model_mem_mb,
        conda:
            "../../envs/maggotflow.yaml"
        script:
            "../scripts/train.py"

    rule assemble_ensemble:
        input:
            ensemble_members,
        output:
            report(
                directory(TAGGER),
                patterns=["members/{name}/curves/training.png"],
                caption="../report/curves.rst",
                category="Training",
            ),
        log:
            "logs/ensemble.log",
        params:
            post_rule=config["train"]["post_rule"],
        conda:
            "../../envs/maggotflow.yaml"
        script:
            "../scripts/ensemble.py"
