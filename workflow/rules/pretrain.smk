# Self-supervised pretraining of the encoder on every training file (no labels needed), one
# encoder per window (a single tagger has one window: segment.window).


rule pretrain:
    input:
        training_intermediates,
    output:
        directory("results/models/pretrained/w{window}"),
    log:
        "logs/pretrain/w{window}.log",
    benchmark:
        "results/benchmarks/pretrain/w{window}.tsv"
    params:
        settings=pretrain_settings,
    threads: config["threads"]["pretrain"]
    resources:
        gpu=GPUS,
        mem_mb=memory_mb(8000),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/pretrain.py"
