# Prediction runs: which folder, which model, which shards; and what a run says at its end
# (printed only: every file under results/ is written by its own rule's jobs).
# A run tags one folder with one model: results/predict/<run>/{manifest.tsv, shards/,
# labels/, summary.tsv}. The `heldout` run is tagged by the tagger trained here (an input:
# it is trained first); any other run by config `model` (a param, its fingerprint: tagging
# a folder never trains, and a changed model re-tags).


def predict_run():
    """The run of predict_dir tagged with the configured model."""
    if not config["predict_dir"]:
        stop("snakemake predict needs a folder: --config predict_dir=/path/to/tracks")
    check_path("predict_dir", config["predict_dir"])
    return predict_run_name(config["predict_dir"], model_path())


def model_path():
    return config["model"] or TAGGER


@functools.cache
def model_fingerprint():
    """SHA-1 of the configured model; a run with an unusable model writes nothing."""
    from maggotflow.instance import InstanceError, check_model_folder, fingerprint  # imports torch

    if config["model"] and not os.path.exists(config["model"]):
        stop(f"model={config['model']}: no model instance there (folder does not exist)")
    try:
        check_model_folder(model_path())
    except InstanceError as err:
        hint = (
            "train it first with `snakemake train` (tagging never trains)"
            if model_path() == TAGGER
            else "check --config model=PATH"
        )
        stop(f"{err}; {hint}")
    return fingerprint(model_path())


def run_manifest(run):
    """The run's files: the held-out files, or predict_dir's."""
    if run != HELDOUT_RUN and (not config["predict_dir"] or run != predict_run()):
        # A WorkflowError, not stop(): the default target and the report list every run on
        # disk (their screen summaries), and Snakemake takes another run's files as they are
        # when their jobs cannot be planned.
        raise WorkflowError(
            f"results/predict/{run} does not belong to predict_dir={config['predict_dir']} with "
            f"model={model_path()}; target the `predict` rule with --config predict_dir=DIR"
        )
    return loaded_run_manifest(run)


@functools.cache
@one_line_errors
def loaded_run_manifest(run):
    if run == HELDOUT_RUN:
        found = heldout_manifest()
    else:
        model_fingerprint()
        found = load_manifest(config["predict_dir"], None, run_manifest_file(run), None)
    LOADED.add(run)
    return found


@functools.cache
def shards_of(run):
    """{shard: [track ids]} of a prediction run."""
    return sharding.run_shards(
        run_manifest(run), config["predict"]["files_per_job"], config["predict"]["max_mb_per_job"]
    )


def shard_files(wildcards):
    """The shard's track files as params rows (id, path, relpath)."""
    try:
        ids = shards_of(wildcards.run)[wildcards.shard]
    except KeyError:
        raise WorkflowError(
            f"prediction job {wildcards.shard} is not a shard of {wildcards.run} (files changed?)"
        ) from None
    by_id = run_manifest(wildcards.run).by_id
    return [{k: by_id[i][k] for k in ("id", "path", "relpath")} for i in ids]


def shard_stat(wildcards):
    """One digest of the shard's track files' size, mtime and ctime (runtables.tracks_stat_digest).
    An edit of a track file, even one that keeps its mtime (`cp -p`, `rsync -a`, `touch -r`),
    changes its ctime and so this param: Snakemake's own params trigger runs the job again,
    which hashes only the files whose stat changed and re-tags only those whose bytes changed
    (maggotflow.shards)."""
    return runtables.tracks_stat_digest([r["path"] for r in shard_files(wildcards)])


def shard_tracks(wildcards):
    return trackable([r["path"] for r in shard_files(wildcards)])


def run_shards(wildcards):
    tables = [f"results/predict/{wildcards.run}/shards/{s}.tsv" for s in shards_of(wildcards.run)]
    warn_changed_labels(wildcards.run, tuple(tables))
    return tables


@functools.cache
def warn_changed_labels(run, tables):
    """Print (once per run, main process only) the labels missing or changed since their job
    wrote them, and how to make them again. Only printed: what runs is Snakemake's decision
    (a label is a side product of its shard's job, recorded in its table, not an output)."""
    if not workflow.is_main_process:
        return
    changed = runtables.changed_labels_in_tables(tables)
    if changed:
        logger.warning(
            f"results/predict/{run}: {len(changed)} label file(s) missing or changed since their job "
            f"wrote them (first: {changed[0]}); add `--forcerun predict_shard` to the same command to "
            "make them again (each job re-tags only such files)"
        )


def run_model(wildcards):
    """The run's model folder and fingerprint (held out: none, TAGGER is an input)."""
    if wildcards.run == HELDOUT_RUN:
        return {"path": TAGGER, "sha1": ""}
    return {"path": model_path(), "sha1": model_fingerprint()}


# ------------------------------------------------------------------------ end of a run


def log_folders():
    """The log folders of what this invocation loaded: a concurrent `snakemake predict` on
    another folder neither reports this run's failures nor has its own reported here."""
    folders = (
        [Path("logs") / f for f in ("isolate", "dataset", "pretrain", "train", "evaluation", "report")]
        if "training" in LOADED
        else []
    )
    return folders + [Path("logs/predict") / run for run in sorted(LOADED - {"training"})]


def print_failed_files(since):
    """The inputs whose jobs failed in this run, and the entries the scans skipped."""
    scans = (
        [(config["inputs"]["track_dir"], mf.skipped_file(MANIFEST))]
        if "training" in LOADED and config["inputs"]["track_dir"] and not config["inputs"]["manifest"]
        else []
    )
    scans += [
        (config["predict_dir"], mf.skipped_file(run_manifest_file(run)))
        for run in sorted(LOADED - {"training", HELDOUT_RUN})
    ]
    for warning in runend.end_of_run_warnings(log_folders(), since, scans):
        logger.warning(warning)


def produced_lines():
    """What this invocation's targets produced and where, for the closing message."""
    lines = []
    if "training" in LOADED and Path(TAGGER).is_dir():
        lines.append(f"tagger: {TAGGER}")
        metrics = Path("results/evaluation/metrics.json")
        if metrics.is_file():
            lines.append(runend.evaluation_line(metrics))
        lines.append("report: snakemake --report results/report.html")
    for run in sorted(LOADED - {"training"}):
        source = config["predict_dir"] if run != HELDOUT_RUN else "the held-out files"
        exported = run != HELDOUT_RUN and config["predict"]["export_next_to_tracks"]
        lines += runend.run_lines(Path("results/predict") / run, source, exported)
    return lines


def closing_messages():
    """The closing message of a successful run, as [(logging level, text)]: what was produced
    and where, then per prediction run how each file's head/tail was decided
    (maggotflow.orientation), the files whose head and tail may be swapped, and those judged
    unlike the tagger's training data (maggotflow.domain)."""
    import logging

    lines, messages = produced_lines(), []
    if lines:
        messages.append((logging.INFO, "\n".join(["Produced:"] + [f"  {line}" for line in lines])))
    for run in sorted(LOADED - {"training"}):
        summary = Path("results/predict") / run / "summary.tsv"
        if summary.is_file():
            rows, where = runtables.read_shard_table(summary), f"results/predict/{run}"
            messages.append((logging.INFO, runend.orientation_line(where, rows)))
            messages += [
                (logging.WARNING, runend.orientation_warning(where, rows)),
                (logging.WARNING, runtables.domain_warning(where, rows)),
            ]
    return [(level, text) for level, text in messages if text]


def print_produced():
    for level, text in closing_messages():
        logger.log(level, text)


def print_prediction_state():
    """Per prediction run of this invocation, the jobs that did not finish (printed, never
    written: every file under results/ belongs to its rule)."""
    for run in sorted(LOADED - {"training"}):
        try:
            shards = sorted(shards_of(run))
        except (WorkflowError, SystemExit):
            continue
        tables = [Path(f"results/predict/{run}/shards/{s}.tsv") for s in shards]
        unfinished = [t for t in tables if not t.is_file()]
        if not unfinished:
            continue
        summary = Path(f"results/predict/{run}/summary.tsv")
        earlier = f"; {summary} is an earlier run's until then" if summary.is_file() else ""
        logger.warning(
            f"results/predict/{run}: {len(unfinished)} of {len(tables)} prediction job(s) did not "
            f"finish, their files are not tagged yet (first: {unfinished[0]}); run the same command "
            f"again to tag them (after `snakemake --unlock` if Snakemake asks for it){earlier}"
        )


# ------------------------------------------------------------------------ the console


def files_done_note():
    """What is done, in files, for the line Ctrl-C leaves (the console plugin asks for it):
    training files isolated, and per prediction run the files of its finished jobs."""
    notes = []
    if "training" in LOADED:
        try:
            ids = training_manifest().ids
            isolated = sum(os.path.exists(f"results/isolated/{i}.h5") for i in ids)
            notes.append(f"{isolated} of {len(ids)} training files isolated")
        except (WorkflowError, SystemExit):
            pass
    for run in sorted(LOADED - {"training"}):
        try:
            tables = [Path(f"results/predict/{run}/shards/{s}.tsv") for s in shards_of(run)]
            total = len(run_manifest(run))
        except (WorkflowError, SystemExit):
            continue
        tagged = runtables.tagged_in_tables(tables)
        notes.append(f"{tagged} of {total} files of results/predict/{run} tagged")
    return "; ".join(notes)


def use_console_hooks():
    """With the console plugin (--logger maggotflow, profiles/default): the closing message
    also when Snakemake finds nothing to do (it then runs no onsuccess), and the files done
    for the Ctrl-C line."""
    if not workflow.is_main_process:
        return
    try:
        import snakemake_logger_plugin_maggotflow as console
    except ImportError:
        return
    console.set_hooks(nothing_to_do=closing_messages, done_note=files_done_note)
