# One job per track file: parse it once (plus its .label) into the per-file intermediate.
# A file that cannot be read fails this job only (its problem is listed at the end of the run).


rule isolate:
    input:
        unpack(isolate_input),
    output:
        "results/isolated/{track}.h5",
    log:
        "logs/isolate/{track}.log",
    params:
        files=isolate_files,  # the paths themselves (see trackable in common.smk)
        read=config["read"],  # a value, not a function: thousands of these jobs in one DAG
    threads: 1
    resources:
        mem_mb=memory_mb(1000, per_input_mb=10),  # parse + float64 copies
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/isolate.py"
