# Two-stage fine-tuning and the boosted-tree candidates (or, with train.classifier
# random_forest, a forest on the frozen encoder; with train.candidates [boosting], trees on
# kinematic features alone, which need no pretrained encoder) of each model (window, member) of MODELS, then results/models/tagger: the single
# model, or the majority-vote ensemble of all of them (config `ensemble`, preset 20221228;
# a cluster trains the members in parallel).


rule train_model:
    input:
        dataset="results/dataset/w{window}.h5",
        pretrained=pretrained_encoder,
    output:
        report(
            directory("results/models/trained/w{window}/m{member}"),
            patterns=["curves/{name}.png"],
            caption="../report/curves.rst",
            category="Training",
        ),
    log:
        "logs/train/w{window}/m{member}.log",
    benchmark:
        "results/benchmarks/train/w{window}/m{member}.tsv"
    params:
        settings=train_settings,
    threads: config["threads"]["train"]
    resources:
        gpu=GPUS,
        mem_mb=memory_mb(8000),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/train.py"


rule tagger:
    input:
        [f"results/models/trained/w{window}/m{member}" for window, member in MODELS],
    output:
        directory(TAGGER),
    log:
        "logs/train/tagger.log",
    params:
        ensemble=bool(ENSEMBLE),
        post_rule=config["train"].get("post_rule") if ENSEMBLE else None,
    localrule: True  # a copy, or assembling finished members: seconds, not worth a cluster job
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/tagger.py"


rule train:
    input:
        TAGGER,
