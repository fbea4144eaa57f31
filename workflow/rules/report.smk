# Material for `snakemake --report`: the landing page (results/report/overview.rst: what was
# trained, the held-out scores and tables; the Snakefile's `report:` points at it once it
# exists), per-file ethograms of the held-out files (predicted above reference), and the
# screen summaries of every prediction run on disk (summary.smk); loss curves, the confusion
# matrix and the behaviour figure are flagged in their own rules.

import glob


def screen_runs():
    """The held-out run and every prediction run with a summary.tsv on disk."""
    found = {Path(p).parent.name for p in glob.glob("results/predict/*/summary.tsv")}
    return [HELDOUT_RUN] + sorted(found - {HELDOUT_RUN})


def screen_folders(wildcards):
    return [f"results/predict/{run}/screen" for run in screen_runs()]


def screen_run_names(wildcards):
    return screen_runs()


def overview_settings(wildcards):
    """What the landing page says about the data, the tagger and its budget."""
    ev, train = config["evaluation"], config["train"]
    if separate_heldout():
        heldout = f"a separate folder of labelled files, {ev['track_dir'] or ev['manifest']}"
    else:
        heldout = f"{ev['heldout_fraction']:g} of the input files, drawn by a seeded hash"
    return {
        "tagger": config["tagger"],
        "track_dir": config["inputs"]["track_dir"] or config["inputs"]["manifest"],
        "evaluation": heldout,
        "pretrain_steps": config["pretrain"]["steps"],
        "stage1_steps": train["stage1_steps"],
        "stage2_steps": train["stage2_steps"],
        "labels": config["labels"],
        "models": len(MODELS),
        "data_folders": [d for d in (config["inputs"]["track_dir"], ev["track_dir"]) if d],
    }


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
