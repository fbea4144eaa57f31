# The labelled segment dataset of one window: windows of every labelled step, split by file.
# Its job leaves out the training files without labels (they serve pretraining only).


rule dataset:
    input:
        training_intermediates,
    output:
        "results/dataset/w{window}.h5",
    log:
        "logs/dataset/w{window}.log",
    benchmark:
        "results/benchmarks/dataset/w{window}.tsv"
    params:
        segment=segment_spec,
        task=TASK,
        settings=config["dataset"],
        seed=config["seed"],
    threads: config["threads"]["dataset"]
    resources:
        mem_mb=memory_mb(4000, per_input_mb=2),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/dataset.py"
