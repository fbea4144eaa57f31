# Self-supervised pretraining of the encoder on every training file (no labels needed).


rule pretrain:
    input:
        pretraining_intermediates,
    output:
        directory(PRETRAINED),
    log:
        "logs/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain.tsv"
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
