# The workflow's decisions: which files (manifests, held-out split), which models (windows,
# members), which prediction runs and shards, and each rule's settings; the rule files only
# declare. Manifests are read lazily (functools.cache) by input functions, so a run reads
# only what its targets need (`snakemake predict` never scans the training folder); only
# the main process scans and writes them (jobs, re-reading this file, read the TSVs).

import functools
import glob
import os
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import contains_wildcard
from snakemake.logging import logger

# Light imports only (no torch): every cluster job parses this file.
from maggotflow import manifest as mf
from maggotflow import runend, runtables, sharding
from maggotflow.heldout import check_heldout, heldout_subset
from maggotflow.names import predict_run_name
from maggotflow.atomic import OutputError
from maggotflow.tracks import TrackDataError

WORKFLOW_START = time.time()

MANIFEST = "results/manifest.tsv"
TAGGER = "results/models/tagger"
HELDOUT_RUN = "heldout"  # the prediction run of the held-out files, tagged by TAGGER

# The trained models, as (window, member): one (segment.window, 0) for a single tagger; for
# an ensemble (preset 20221228) `count` members per configured window, numbered per window.
# Each window gets its own pretrained encoder and dataset; results/models/tagger is the
# single model, or the ensemble of all of them.
ENSEMBLE = config["ensemble"]
if ENSEMBLE:
    MODELS = []
    for entry in ENSEMBLE["members"]:
        first = sum(1 for w, _ in MODELS if w == entry["window"])
        MODELS += [(entry["window"], first + k) for k in range(entry["count"])]
else:
    MODELS = [(config["segment"]["window"], 0)]

# What this invocation loaded, for the end-of-run messages: "training" and prediction runs.
LOADED = set()


# The `gpu` resource of the GPU rules: none with device cpu. (With device auto it is 1 even
# on a machine without a GPU: while the Snakefile is parsed, and in dry runs, nothing tells a
# local run from a cluster's; the job blocks that would show it are hidden by the default
# profile's --quiet rules, and a local run is limited by it only with --resources gpu=N.)
GPUS = 0 if config["device"] == "cpu" else 1
TASK = {"labels": config["labels"], "synonyms": config["synonyms"], "target": config["target"]}


wildcard_constraints:
    track=r"[A-Za-z0-9_.][A-Za-z0-9_.-]*",
    window=r"[0-9]+",
    member=r"[0-9]+",
    run=r"[A-Za-z0-9_.][A-Za-z0-9_.-]*",
    shard=r"s[0-9a-f]{10}x*",


def memory_mb(base_mb, per_input_mb=0):
    """A rule's `mem_mb`: `base_mb` plus `per_input_mb` per MB of input, times the attempt
    (a job killed for memory is retried with more: `retries` of profiles/slurm, or --retries)."""

    def mem_mb(wildcards, input, attempt):
        return attempt * int(base_mb + per_input_mb * input.size_mb)

    return mem_mb


def stop(message):
    """End the invocation with one line, before any job runs.

    An input function's exception would reach the user as an InputFunctionException with a
    traceback; SystemExit is not an Exception, so Snakemake lets it through (no lock is held
    yet while the job graph is built)."""
    logger.error(message)
    raise SystemExit(1)


def one_line_errors(function):
    """Bad data or settings, or an unwritable results/: one line, not a traceback."""

    @functools.wraps(function)
    def wrapped(*args):
        try:
            return function(*args)
        except (TrackDataError, OutputError, WorkflowError) as err:
            stop(str(err))

    return wrapped


def check_path(key, path, folder=True):
    """A configured path that must exist: `key=path: folder does not exist` otherwise."""
    kind = "folder" if folder else "file"
    if not os.path.exists(path):
        stop(f"{key}={path}: {kind} does not exist")
    if os.path.isdir(path) != folder:
        stop(f"{key}={path}: is not a {kind}")


# ------------------------------------------------------------------------ manifests


def run_manifest_file(run):
    return f"results/predict/{run}/manifest.tsv"


def run_manifest_path(wildcards):
    return run_manifest_file(wildcards.run)


def run_skipped_file(wildcards):
    """The record of the entries the run's folder scan skipped."""
    return mf.skipped_file(run_manifest_file(wildcards.run))


def load_manifest(track_dir, manifest, out, section):
    """The manifest of a folder (scanned by the main process only) or a user's TSV; the paths
    are config keys `section`.track_dir/.manifest (`predict_dir` for section None)."""
    main = workflow.is_main_process
    if main:
        if manifest:
            check_path(f"{section}.manifest", manifest, folder=False)
        if track_dir:
            check_path(f"{section}.track_dir" if section else "predict_dir", track_dir)
    return mf.load_manifest(
        track_dir, manifest, out, config["inputs"]["patterns"], scan=main and config["inputs"]["rescan"], record=main
    )


@functools.cache
@one_line_errors
def input_manifest():
    """All files of inputs.track_dir (or inputs.manifest)."""
    LOADED.add("training")
    return load_manifest(config["inputs"]["track_dir"], config["inputs"]["manifest"], MANIFEST, "inputs")


def separate_heldout():
    return bool(config["evaluation"]["track_dir"] or config["evaluation"]["manifest"])


def evaluation_enabled():
    return separate_heldout() or config["evaluation"]["heldout_fraction"] > 0


@functools.cache
@one_line_errors
def heldout_manifest():
    """Labelled files the tagger is evaluated on and never trained on."""
    ev, out = config["evaluation"], run_manifest_file(HELDOUT_RUN)
    if separate_heldout():
        found = load_manifest(ev["track_dir"], ev["manifest"], out, "evaluation")
        check_heldout(found, training=input_manifest())
    else:
        found = heldout_subset(input_manifest(), ev["heldout_fraction"], config["seed"])
        check_heldout(found)
        if workflow.is_main_process:
            mf.write_manifest(found, out)
    return found


@functools.cache
def training_manifest():
    """Files used for pretraining and training: the inputs minus the held-out files."""
    held = set(heldout_manifest().ids) if evaluation_enabled() and not separate_heldout() else set()
    found = input_manifest().subset(set(input_manifest().ids) - held)
    wanted = config["inputs"]["filter"]
    if wanted:
        found = found.where(**wanted)
        if not len(found):
            stop(f"inputs.filter {wanted}: no training file matches (metadata columns of {MANIFEST})")
    return found


# ------------------------------------------------------------------------ training inputs


def trackable(paths):
    """The paths Snakemake can take as input files: one holding "{name}" would be read as a
    wildcard pattern (no escape exists); such files reach their job through its params only
    (processed like the others, but a change to them re-runs nothing)."""
    return [p for p in paths if p and not contains_wildcard(p)]


def isolate_files(wildcards):
    row = training_manifest().by_id.get(wildcards.track)
    if row is None:
        raise WorkflowError(f"{wildcards.track}: not a track id of {MANIFEST}")
    return {"track": row["path"], "labels": row["label"] or None}


def isolate_input(wildcards):
    return {k: p for k, p in isolate_files(wildcards).items() if trackable([p])}


def training_intermediates(wildcards):
    """Every training file's intermediate (the dataset job keeps the labelled ones)."""
    return [f"results/isolated/{r['id']}.h5" for r in training_manifest()]


def heldout_references(wildcards):
    return {r["id"]: r["label"] for r in heldout_manifest()}


def heldout_reference_files(wildcards):
    """The held-out reference labels Snakemake can track as inputs."""
    return trackable(heldout_references(wildcards).values())


# ------------------------------------------------------------------------ targets


def predict_screen(wildcards):
    return f"results/predict/{predict_run()}/screen"


def run_tagger(wildcards):
    """The held-out run is tagged by the tagger trained here (an input); any other run by the
    configured model (a param: `run_model`)."""
    return [TAGGER] if wildcards.run == HELDOUT_RUN else []


def predict_targets(wildcards):
    run = predict_run()
    return [f"results/predict/{run}/summary.tsv", f"results/predict/{run}/screen"] + (
        [f"results/predict/{run}/exported.tsv"] if config["predict"]["export_next_to_tracks"] else []
    )


def all_targets(wildcards):
    """Default and `report` targets: the tagger, and when evaluation is enabled its held-out
    evaluation and the report material (landing page, ethograms, the screen summaries of the
    held-out run and of every prediction run on disk: report.smk)."""
    if not evaluation_enabled():
        return [TAGGER]
    return [
        TAGGER,
        "results/evaluation/metrics.json",
        "results/report/ethograms",
        "results/report/overview.rst",
        *screen_folders(wildcards),
    ]


# The report's inputs: the screen summaries it shows (also in all_targets) and what its
# landing page says (report.smk).


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
    from maggotflow.report import settings_from_config

    return settings_from_config(config, len(MODELS))


# ------------------------------------------------------------------------ params


def segment_spec(wildcards):
    return dict(config["segment"], window=int(wildcards.window))


def pretrain_settings(wildcards):
    return dict(config["pretrain"], seed=config["seed"], **segment_spec(wildcards))


def pretrained_encoder(wildcards):
    """The pretrained encoder a training starts from; none for trees on kinematic features
    alone (train.candidates [boosting]): then nothing is pretrained."""
    if list(config["train"].get("candidates") or []) == ["boosting"]:
        return []
    return f"results/models/pretrained/w{wildcards.window}"


def train_settings(wildcards):
    """The keys its training reads (a forest's, or fine-tuning's: changing one never re-runs
    the other); an ensemble member gets its own seed and a bootstrap resample (bagging)."""
    train, seed = config["train"], config["seed"]
    if ENSEMBLE:
        seed = seed * 1000 + MODELS.index((int(wildcards.window), int(wildcards.member)))
    if train.get("classifier", "dense") == "random_forest":
        return {"classifier": "random_forest", "forest": train.get("forest", {}), "seed": seed}
    settings = dict({k: v for k, v in train.items() if k != "forest"}, seed=seed)
    if ENSEMBLE:
        settings["bootstrap"] = ENSEMBLE.get("bootstrap", True)
        settings["decoding"] = "argmax"  # members vote per step: an HMM of theirs would go unused
    return settings
