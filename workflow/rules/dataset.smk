# The labelled segment dataset: windows of every labelled step, split by file.


rule dataset:
    input:
        dataset_intermediates,
    output:
        DATASET,
    log:
        "logs/dataset.log",
    benchmark:
        "results/benchmarks/dataset.tsv"
    params:
        segment=segment_spec,
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
