# Material for `snakemake --report`: the landing page (results/report/overview.rst: what was
# trained, the held-out scores and tables; the Snakefile's `report:` points at it once it
# exists), per-file ethograms of the held-out files (predicted above reference), and the
# screen summaries of every prediction run on disk (summary.smk); loss curves, the confusion
# matrix and the behaviour figure are flagged in their own rules.
# The report's rule graph draws a rule once per level of the job graph (Snakemake's
# rulegraph_spec), so screen_summary shows twice when another run is on disk: the held-out
# run's job comes after training, another run's after nothing planned here. The landing page
# says so (maggotflow.report.RULE_GRAPH_NOTE).


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
        manifest=run_manifest_file(HELDOUT_RUN),
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/ethograms.py"


rule report_overview:
    input:
        metrics="results/evaluation/metrics.json",
        per_file="results/evaluation/per_file.tsv",
        behaviour="results/evaluation/behaviour.tsv",
        tagger=TAGGER,
        dataset=f"results/dataset/w{MODELS[0][0]}.h5",
        screens=screen_folders,
    output:
        "results/report/overview.rst",
    log:
        "logs/report/overview.log",
    params:
        settings=overview_settings,
        manifest=run_manifest_file(HELDOUT_RUN),
        runs=screen_run_names,
    localrule: True
    conda:
        "../../envs/maggotflow.yaml"
    script:
        "../scripts/report_overview.py"


rule report:
    input:
        all_targets,
