# Held-out evaluation: the held-out run's predictions (predict.smk, run `heldout`) against
# their reference .label files: overall and per file, time budget and bouts per behaviour.
# (The tables are rendered on the report's landing page, report.smk.)


rule evaluate_heldout:
    input:
        summary=f"results/predict/{HELDOUT_RUN}/summary.tsv",
        references=heldout_reference_files,
    output:
        metrics="results/evaluation/metrics.json",
        per_label="results/evaluation/per_label.csv",
        confusion=report(
            "results/evaluation/confusion.png",
            caption="../report/confusion.rst",
            category="Evaluation",
        ),
        confusion_csv="results/evaluation/confusion.csv",
        table="results/evaluation/table.txt",
        per_file="results/evaluation/per_file.tsv",
        behaviour="results/evaluation/behaviour.tsv",
        behaviour_png=report(
            "results/evaluation/behaviour.png",
            caption="../report/behaviour.rst",
            category="Evaluation",
        ),
    log:
        "logs/evaluation/evaluate.log",
    params:
        task=TASK,
        references=heldout_references,
        ignore_ends=config["evaluation"]["ignore_ends"],
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate:
    input:
        "results/evaluation/metrics.json",
