# Material for `snakemake --report`: per-file ethograms of the held-out files (predicted
# above reference); loss curves and the confusion matrix are flagged in their own rules.


rule ethograms:
    input:
        summary=f"results/predict/{HELDOUT_RUN}/summary.tsv",
    output:
        report(
            directory("results/report/ethograms"),
            patterns=["{name}.png"],
            caption="../report/ethograms.rst",
            category="Ethograms",
        ),
    log:
        "logs/report/ethograms.log",
    params:
        n_files=config["report"]["ethograms"],
        references=heldout_references,
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/ethograms.py"


rule report:
    input:
        all_targets,
