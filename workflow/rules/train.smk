# Two-stage fine-tuning of the tagger on the dataset, from the pretrained encoder (or, with
# train.classifier random_forest, a forest on the frozen encoder). Ensembles: ensemble.smk.


if not ENSEMBLE:

    rule train_tagger:
        input:
            dataset=DATASET,
            pretrained=PRETRAINED,
        output:
            report(
                directory(TAGGER),
                patterns=["curves/{name}.png"],
                caption="../report/curves.rst",
                category="Training",
            ),
        log:
            "logs/train.log",
        benchmark:
            "results/benchmarks/train.tsv"
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


rule train:
    input:
        TAGGER,
