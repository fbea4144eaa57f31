# Everything computed: manifests, splits, shards, input functions, resources, constraints.
# Stage files only declare inputs, outputs, logs, params and resources, and call a script.
#
# Manifests are read lazily (functools.cache) by input functions, so a run only reads what
# its targets need: `snakemake predict` never scans the training folder. The main process
# scans folders (inputs.rescan) and writes the TSV only when its content changed; job
# processes (cluster jobs re-read this file) only read the TSV written by the main process.

import functools
import hashlib
import json
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import contains_wildcard
from snakemake.logging import logger

from maggotflow import manifest as mf
from maggotflow.atomic import OutputError, write_text_atomic
from maggotflow.tracks import TrackDataError

WORKFLOW_START = time.time()

MANIFEST = "results/manifest.tsv"
HELDOUT_MANIFEST = "results/evaluation/manifest.tsv"
PRETRAINED = "results/models/pretrained"
TAGGER = "results/models/tagger"
DATASET = "results/dataset/dataset.h5"

# A majority-vote ensemble (preset 20221228): one pretrained encoder and one dataset per
# window, one training job per member, then results/models/tagger assembles them.
ENSEMBLE = config["ensemble"]
ENSEMBLE_WINDOWS = sorted({m["window"] for m in ENSEMBLE["members"]}) if ENSEMBLE else []
ENSEMBLE_MEMBERS = (
    [f"w{m['window']}-m{k:03d}" for m in ENSEMBLE["members"] for k in range(m["count"])]
    if ENSEMBLE
    else []
)


wildcard_constraints:
    track=r"[A-Za-z0-9_.][A-Za-z0-9_.-]*",
    window=r"[0-9]+",
    member=r"w[0-9]+-m[0-9]+",
    run=r"[A-Za-z0-9_.][A-Za-z0-9_.-]*",
    shard=r"s[0-9a-f]{10}x*",


# ------------------------------------------------------------------------ manifests


def load_manifest(track_dir, manifest, out):
    """The manifest of a folder (scanned) or a user's TSV, recorded at `out`.

    A scan also records the entries it skipped (not track files) in `skipped.tsv` next to
    `out`. Nothing is written before the inputs are known to be good: a run that stops on a
    missing or empty folder leaves no manifest behind for a later run to trust.
    """
    try:
        if manifest:
            found = mf.read_manifest(manifest, root=track_dir)
        elif not track_dir:
            raise WorkflowError(f"no input: set a track_dir or a manifest (see config/README.md)")
        elif workflow.is_main_process and (config["inputs"]["rescan"] or not Path(out).is_file()):
            found = mf.build_manifest(track_dir, config["inputs"]["patterns"])
            if not len(found):
                skipped = f" ({len(found.skipped)} other entries skipped, e.g. {': '.join(found.skipped[0])})" \
                    if found.skipped else ""
                raise WorkflowError(
                    f"{track_dir}: no track file matching {', '.join(config['inputs']['patterns'])}{skipped}"
                )
        else:
            return mf.read_manifest(out)
        if workflow.is_main_process:
            if not manifest:
                mf.write_skipped(found.skipped, skipped_file(out))
            mf.write_manifest(found, out)
    except TrackDataError as err:
        raise WorkflowError(str(err)) from None
    except OutputError as err:  # results/ read-only, disk full, a file in the way: one line
        raise WorkflowError(str(err)) from None
    return found


def skipped_file(manifest_file):
    return str(Path(manifest_file).with_name("skipped.tsv"))


@functools.cache
def input_manifest():
    """All files of inputs.track_dir (or inputs.manifest)."""
    inputs = config["inputs"]
    return load_manifest(inputs["track_dir"], inputs["manifest"], MANIFEST)


def evaluation_enabled():
    ev = config["evaluation"]
    return bool(ev["track_dir"] or ev["manifest"] or ev["heldout_fraction"] > 0)


@functools.cache
def heldout_manifest():
    """Labelled files the tagger is evaluated on and never trained on."""
    ev = config["evaluation"]
    if ev["track_dir"] or ev["manifest"]:
        found = load_manifest(ev["track_dir"], ev["manifest"], HELDOUT_MANIFEST)
        overlap = {r["path"] for r in found} & {r["path"] for r in input_manifest()}
        if overlap:
            raise WorkflowError(
                f"{sorted(overlap)[0]}: listed both for training and for evaluation "
                f"({len(overlap)} file(s)); the tagger must not be evaluated on its training data"
            )
    else:
        candidates = [r["id"] for r in input_manifest() if r["label"]]
        chosen = mf.hash_split(candidates, ev["heldout_fraction"], config["seed"])
        found = input_manifest().subset(chosen)
        if workflow.is_main_process:
            try:
                mf.write_manifest(found, HELDOUT_MANIFEST)
            except OutputError as err:
                raise WorkflowError(str(err)) from None
    unlabelled = [r["relpath"] for r in found if not r["label"]]
    if unlabelled:
        raise WorkflowError(
            f"{unlabelled[0]}: held-out file without a .label file to compare with "
            f"({len(unlabelled)} such file(s)); evaluation needs reference labels"
        )
    if not len(found):
        raise WorkflowError(
            "evaluation: no labelled file to hold out; add labelled files, give evaluation.track_dir "
            "or set evaluation.heldout_fraction: 0"
        )
    return found


@functools.cache
def training_manifest():
    """Files used for pretraining and training: the inputs minus the held-out files."""
    held = set()
    if evaluation_enabled() and not (config["evaluation"]["track_dir"] or config["evaluation"]["manifest"]):
        held = set(heldout_manifest().ids)
    found = input_manifest().subset(set(input_manifest().ids) - held)
    wanted = config["inputs"]["filter"]
    if wanted:
        found = found.where(**wanted)
        if not len(found):
            raise WorkflowError(
                f"inputs.filter {wanted}: no training file matches (metadata columns of {MANIFEST})"
            )
    return found


def predict_run():
    """Folder name under results/predict/ for predict_dir tagged with the configured model."""
    if not config["predict_dir"]:
        raise WorkflowError("snakemake predict needs a folder: --config predict_dir=/path/to/tracks")
    return mf.predict_run_name(config["predict_dir"], model_path())


PREDICT_RUNS = set()  # prediction runs loaded by this invocation


@functools.cache
def predict_manifest(run):
    if run != predict_run():
        raise WorkflowError(
            f"results/predict/{run} does not belong to predict_dir={config['predict_dir']} with "
            f"model={model_path()}; target the `predict` rule with --config predict_dir=DIR"
        )
    model_fingerprint()  # a run with an unusable model writes nothing under results/predict/
    PREDICT_RUNS.add(run)
    return load_manifest(config["predict_dir"], None, f"results/predict/{run}/manifest.tsv")


# ------------------------------------------------------------------------ model


def model_path():
    return config["model"] or TAGGER


@functools.cache
def model_fingerprint():
    """SHA-1 over the model instance's files, so that a changed model re-tags (params)."""
    folder = Path(model_path())
    if not (folder / "config.json").is_file():
        hint = (
            "train it first with `snakemake train` (tagging never trains)"
            if folder == Path(TAGGER)
            else "check --config model=PATH"
        )
        raise WorkflowError(f"{folder}: no model instance there; {hint}")
    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        raise WorkflowError(f"{folder}: config.json is damaged; not a usable model instance") from None
    if kind == "pretrained":
        raise WorkflowError(
            f"{folder}: is a pretrained encoder, not a tagger; give a trained tagger "
            "(results/models/tagger of a training run)"
        )
    digest = hashlib.sha1()
    for path in sorted(folder.rglob("*")):  # rglob: an ensemble's members are subfolders
        if path.is_file() and (path.name == "config.json" or path.suffix == ".pt"):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------ shards


@functools.cache
def shards_of(run):
    """{shard: [track ids]} of a prediction run ("heldout" = the evaluation files)."""
    found = heldout_manifest() if run == "heldout" else predict_manifest(run)
    settings = config["predict"]
    max_mb = settings["max_mb_per_job"]
    return mf.assign_shards(
        found.ids,
        settings["files_per_job"],
        sizes={r["id"]: int(r["size"] or 0) for r in found},
        max_bytes=None if max_mb is None else int(max_mb * 1e6),
    )


def manifest_of(run):
    return heldout_manifest() if run == "heldout" else predict_manifest(run)


def shard_rows(run, shard):
    try:
        ids = shards_of(run)[shard]
    except KeyError:
        raise WorkflowError(f"prediction job {shard} is not a shard of {run} (files changed?)") from None
    by_id = manifest_of(run).by_id
    return [{k: by_id[i][k] for k in ("id", "path", "relpath")} for i in ids]


# ------------------------------------------------------------------------ input functions


def trackable(paths):
    """The paths Snakemake can take as input files.

    A path holding "{name}" (e.g. a folder called "exp{2}") would be read as a wildcard
    pattern, and Snakemake has no escape for braces; such files reach their job through its
    params only: they are processed like the others, but a change to them does not make
    Snakemake re-run the job.
    """
    return [p for p in paths if p and not contains_wildcard(p)]


def isolate_row(wildcards):
    row = training_manifest().by_id.get(wildcards.track)
    if row is None:
        raise WorkflowError(f"{wildcards.track}: not a track id of {MANIFEST}")
    return row


def isolate_input(wildcards):
    row = isolate_row(wildcards)
    return {k: p for k, p in (("track", row["path"]), ("labels", row["label"])) if trackable([p])}


def isolate_files(wildcards):
    row = isolate_row(wildcards)
    return {"track": row["path"], "labels": row["label"] or None}


def intermediate(row):
    return f"results/isolated/{row['id']}.h5"


def pretraining_intermediates(wildcards):
    """Every training file: pretraining needs no labels."""
    return [intermediate(r) for r in training_manifest()]


def dataset_intermediates(wildcards):
    """Training files with labels: a paired .label, or a trx.mat (flags inside)."""
    rows = [r for r in training_manifest() if r["label"] or r["format"] == "trx"]
    if not rows:
        raise WorkflowError(f"no labelled training file in {MANIFEST}: pair track files with .label files")
    return [intermediate(r) for r in rows]


def rerun_if_labels_changed(shard_table):
    """Make the job of `shard_table` run again when a label it lists is missing or changed.

    The labels are side products of a shard job (one job, hundreds of files in a mirrored
    tree), not declared outputs, so Snakemake cannot see that one was deleted or edited.
    The main process checks them as it builds the job graph (a stat per label, a sha1 only
    for a label whose size matches but whose time does not) and forces the job, the way
    Snakemake itself forces the jobs of --rerun-incomplete; jobs (cluster jobs re-read this
    file) never check, and a dry run shows the job with "Forced execution".
    """
    if not workflow.is_main_process or workflow.dag is None or not Path(shard_table).is_file():
        return
    try:
        changed = mf.changed_labels(mf.read_shard_table(shard_table))
    except (OSError, UnicodeDecodeError, ValueError):
        changed = [shard_table]  # unreadable table: redo the shard
    if changed:
        logger.info(
            f"{shard_table}: {len(changed)} label file(s) missing or changed since it was written "
            f"(first: {changed[0]}); re-tagging its files"
        )
        workflow.dag.forcefiles.add(shard_table)


def predict_shard_tracks(wildcards):
    rerun_if_labels_changed(f"results/predict/{wildcards.run}/shards/{wildcards.shard}.tsv")
    return trackable([r["path"] for r in shard_rows(wildcards.run, wildcards.shard)])


def predict_shard_params(wildcards):
    return shard_rows(wildcards.run, wildcards.shard)


def heldout_shard_tracks(wildcards):
    rerun_if_labels_changed(f"results/evaluation/predictions/shards/{wildcards.shard}.tsv")
    return trackable([r["path"] for r in shard_rows("heldout", wildcards.shard)])


def heldout_shard_params(wildcards):
    return shard_rows("heldout", wildcards.shard)


def heldout_shard_files(wildcards):
    return [f"results/evaluation/predictions/shards/{s}.tsv" for s in shards_of("heldout")]


def heldout_references(wildcards):
    return trackable([r["label"] for r in heldout_manifest()])


def heldout_reference_map(wildcards):
    return {r["id"]: r["label"] for r in heldout_manifest()}


def predict_shard_files(wildcards):
    return [f"results/predict/{wildcards.run}/shards/{s}.tsv" for s in shards_of(wildcards.run)]


def predict_job_settings(wildcards):
    """The predict.* keys a tagging job reads: the export's keys never re-run a shard."""
    return {k: config["predict"][k] for k in ("batch_size", "skip_bad_files")}


def predict_skipped_file(wildcards):
    return skipped_file(f"results/predict/{wildcards.run}/manifest.tsv")


def predict_model_fingerprint(wildcards):
    return model_fingerprint()


def predict_model(wildcards):
    return model_path()


# ------------------------------------------------------------------------ targets


def predict_targets(wildcards):
    run = predict_run()
    targets = [f"results/predict/{run}/summary.tsv"]
    if config["predict"]["export_next_to_tracks"]:
        targets.append(f"results/predict/{run}/exported.tsv")
    return targets


def report_targets(wildcards):
    targets = [TAGGER]
    if evaluation_enabled():
        targets += ["results/evaluation/metrics.json", "results/report/ethograms"]
    return targets


def all_targets(wildcards):
    return report_targets(wildcards)


# ------------------------------------------------------------------------ params


def read_options(wildcards):
    return dict(config["read"])


def segment_spec(wildcards):
    return dict(config["segment"])


def task(wildcards):
    return {"labels": config["labels"], "synonyms": config["synonyms"], "target": config["target"]}


def pretrain_settings(wildcards):
    settings = dict(config["pretrain"], seed=config["seed"], device=config["device"], **config["segment"])
    if "window" in wildcards.keys():  # an ensemble's per-window encoder
        settings["window"] = int(wildcards.window)
    return settings


def train_settings(wildcards):
    settings = dict(config["train"], seed=config["seed"], device=config["device"])
    if "member" in wildcards.keys():  # an ensemble member: own seed, bagging
        settings["seed"] = config["seed"] * 1000 + ENSEMBLE_MEMBERS.index(wildcards.member)
        settings["bootstrap"] = ENSEMBLE.get("bootstrap", True)
    return settings


def window_segment_spec(wildcards):
    return dict(config["segment"], window=int(wildcards.window))


def member_dataset(wildcards):
    return f"results/dataset/dataset-w{member_window(wildcards)}.h5"


def member_pretrained(wildcards):
    return f"results/models/pretrained-w{member_window(wildcards)}"


def member_window(wildcards):
    return int(wildcards.member.split("-")[0][1:])


def ensemble_members(wildcards):
    return [f"results/models/members/{m}" for m in ENSEMBLE_MEMBERS]


# ------------------------------------------------------------------------ resources


def gpus(wildcards):
    """GPUs per job of the GPU rules: none when the device is the CPU."""
    return 0 if config["device"] == "cpu" else 1


def isolate_mem_mb(wildcards, input, attempt):
    # Reading holds the file's arrays about twice over (parse + float64 copies).
    return attempt * int(1000 + 10 * input.size_mb)


def dataset_mem_mb(wildcards, input, attempt):
    return attempt * int(4000 + 2 * input.size_mb)


def model_mem_mb(wildcards, attempt):
    return attempt * 8000


def predict_mem_mb(wildcards, attempt):
    return attempt * 6000


# ------------------------------------------------------------------------ failures


def print_failed_files(since):
    """List the files whose jobs failed in this run (records written by the job scripts).

    Only the log folders of the data this invocation loaded are searched, so a concurrent
    `snakemake predict` on another folder does not report this run's failures, nor this run
    its failures.
    """
    folders = []
    if input_manifest.cache_info().currsize:  # training: isolate, dataset, pretrain, train
        folders += [Path("logs"), Path("logs/isolate"), Path("logs/train")]
    if heldout_manifest.cache_info().currsize:
        folders += [Path("logs/evaluation"), Path("logs/evaluation/predict"), Path("logs/report")]
    folders += [Path("logs/predict") / run for run in sorted(PREDICT_RUNS)]
    records = []
    for folder in folders:
        for path in sorted(folder.glob("*.failed")):
            try:
                if path.stat().st_mtime < since - 1:
                    continue  # from an earlier run
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            log_file = path.with_suffix(".log")
            records += [line.split("\t", 1) + [log_file] for line in text.splitlines() if line]
    report_skipped()
    if not records:
        return
    lines = [f"{len(records)} input(s) failed (file, problem, log):"]
    lines += [f"  {r[0]}\n      {r[1] if len(r) > 2 else ''}\n      log: {r[-1]}" for r in records]
    logger.warning("\n".join(lines))


def report_skipped():
    """Say how many entries of each scanned folder were not taken as track files, and where
    they are listed (skipped.tsv next to the run's manifest)."""
    scanned = []
    if input_manifest.cache_info().currsize and config["inputs"]["track_dir"] and not config["inputs"]["manifest"]:
        scanned.append((config["inputs"]["track_dir"], skipped_file(MANIFEST)))
    scanned += [(config["predict_dir"], skipped_file(f"results/predict/{run}/manifest.tsv")) for run in sorted(PREDICT_RUNS)]
    for folder, listing in scanned:
        entries = mf.read_skipped(listing)
        if entries:
            logger.warning(
                f"{folder}: {len(entries)} entries skipped, not track files "
                f"(e.g. {entries[0][0]}: {entries[0][-1]}); listed in {listing}"
            )


def record_unfinished_predictions(since):
    """After a failed run, rewrite each prediction run's summary.tsv to say what is on disk.

    A shard whose job failed has no table, so the summary job could not run and the summary
    of an earlier run would still list its files as `ok` with old sha1s. Its files are listed
    as the failed job left them (predict_shard.py writes its rows next to its log: a bad
    file `failed` with its problem, its stale label removed), else from the job's failure
    record, else as `not tagged` (the job did not finish; see its log): never as `ok`
    without a label on disk.
    """
    for run in sorted(PREDICT_RUNS):
        try:
            shards = shards_of(run)
            by_id = predict_manifest(run).by_id
        except WorkflowError:
            continue
        rows, unfinished = [], 0
        for shard, ids in shards.items():
            table = Path(f"results/predict/{run}/shards/{shard}.tsv")
            if table.is_file():
                rows += mf.read_shard_table(table)
                continue
            unfinished += 1
            log_file = Path(f"logs/predict/{run}/{shard}.log")
            written = log_file.with_suffix(".table.tsv")  # what the failed job wrote (predict_shard.py)
            try:
                if written.stat().st_mtime >= since - 1:
                    rows += mf.read_shard_table(written)
                    continue
            except OSError:
                pass
            problems = {}
            record = failure_record_of(log_file)
            try:
                if record.stat().st_mtime >= since - 1:
                    problems = dict(line.split("\t", 1) for line in record.read_text(encoding="utf-8").splitlines()
                                    if "\t" in line)
            except OSError:
                pass
            for ident in ids:
                track = by_id[ident]["path"]
                if track in problems:
                    rows.append(mf.shard_row(ident, track, problem=problems[track]))
                else:
                    rows.append(mf.shard_row(ident, track, status="not tagged",
                                             problem=f"its job did not finish; see {log_file}"))
        if not unfinished:
            continue
        summary = f"results/predict/{run}/summary.tsv"
        try:
            write_text_atomic(summary, mf.shard_table_text(sorted(rows, key=lambda r: r["path"])))
        except OutputError as err:
            logger.error(str(err))
            continue
        logger.warning(f"{summary}: {unfinished} prediction job(s) did not finish; their files are listed "
                       "as failed or not tagged")


def failure_record_of(log_file):
    return Path(log_file).with_suffix(".failed")  # as workflow/scripts/jobsetup.py writes it
