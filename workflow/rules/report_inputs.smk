# Inputs and params of the report's rules (report.smk); screen_folders is also in all_targets.
# (Here rather than in common.smk only because this change was made beside other edits of
# common.smk; they belong with the other input functions.)

import glob


def screen_runs():
    """The held-out run, the configured predict_dir's run, and every other prediction run whose
    screen summary is on disk (taken as it is: such a run's jobs cannot be planned without its
    predict_dir; `snakemake summary --config predict_dir=DIR` makes or updates one)."""
    found = {Path(p).parent.name for p in glob.glob("results/predict/*/screen")}
    if config["predict_dir"]:
        found.add(predict_run())
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
