# Screen summaries of prediction runs (maggotflow.screen): per larva, per file and per group
# (summary.group_by metadata columns of the run's manifest) time in each behaviour, bout
# durations and transitions, as tables and plots in results/predict/<run>/screen/.
# `snakemake summary --config predict_dir=DIR` summarises that folder's run (`predict` does
# too); the report shows the held-out run's and every other run's found on disk.


rule screen_summary:
    input:
        summary="results/predict/{run}/summary.tsv",
    output:
        report(
            directory("results/predict/{run}/screen"),
            patterns=["{name}.png"],
            caption="../report/screen.rst",
            category="Screen summary",
            subcategory="{run}",
        ),
    log:
        "logs/predict/{run}/screen.log",
    params:
        # The manifest (metadata columns) is written by the main process before any job:
        # a param, so that the summary does not wait for, or re-run on, its rewrite.
        manifest=run_manifest_path,
        group_by=config["summary"]["group_by"],
    resources:
        mem_mb=memory_mb(4000),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/screen.py"


rule summary:
    input:
        predict_screen,
