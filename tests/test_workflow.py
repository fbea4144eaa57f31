"""The Snakemake workflow, run for real (snakemake CLI) on small simulated data.

Every test works in its own temporary project folder (the working directory of the runs)
and points at this checkout's Snakefile with an absolute path, with a tiny config overlay
(few short files, a tiny encoder, a few optimisation steps). The trained project is built
once per module and reused by the tests that need a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import yaml

from maggotflow import names, sharding
from maggotflow import manifest as mf
from maggotflow import runtables
from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.label import read_label_file
from maggotflow.simulation import SimulationConfig, simulate
from maggotflow.tracks import printable_path

from helpers import SNAKEMAKE, local_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TRACK_SUFFIXES = (".spine", ".mat", ".csv")
READ = ReadOptions(pixelsize_um=100)  # the simulator's FIMTrack pixel size

# The test experiment: 8 short files, an encoder ~1/100 of the default, a few steps.
TINY_CONFIG = """\
inputs:
  track_dir: data/train
read:
  pixelsize_um: 100
device: cpu
pretrain:
  steps: 20
  eval_every: 10
  batch_size: 32
  filters: [8, 8, 8, 8, 8, 8]
  latent_dim: 8
train:
  stage1_steps: 10
  stage2_steps: 10
  eval_every: 10
  batch_size: 32
predict:
  files_per_job: 2
evaluation:
  heldout_fraction: 0.25
threads:
  dataset: 1
  pretrain: 1
  train: 1
  predict: 1
report:
  ethograms: 2
"""
EXPORT_CONFIG = "predict:\n  export_next_to_tracks: true\n"
SMALL = SimulationConfig(duration_s=10, larvae=(2, 3))
# How a job's start shows: Snakemake's job block (dry runs, --verbose) or the job's own line.
STARTED_JOB = re.compile(r"^((local)?rule \w+:|\[\w+[^\]\n]*\] started \(log: )", re.M)


def snakemake(workdir: Path, *args: str, configfiles: tuple[str, ...] = (), timeout: float = 180,
              background: str | None = None):
    """Run the workflow in `workdir`: `snakemake ARGS -s SNAKEFILE --configfile tiny.yaml ...`.

    ARGS come first (targets, --config: options taking several values must be closed by the
    next option). Returns the CompletedProcess (stdout holds stdout + stderr), or the Popen
    (output in workdir/<background>) when `background` names an output file.
    """
    cmd = [str(SNAKEMAKE), *args, "-s", str(SNAKEFILE),
           "--configfile", str(workdir / "tiny.yaml"), *(str(workdir / c) for c in configfiles),
           "--cores", "2"]
    env = local_env()
    if background:
        with open(workdir / background, "w") as out:
            # SIGINT handled as in a terminal even when the tests run with it ignored (a
            # background job of a non-interactive shell): Python then never raises
            # KeyboardInterrupt, and a Ctrl-C test would see the run finish.
            return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=default_sigint)
    return subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ok(result) -> str:
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def job_counts(output: str) -> dict[str, int]:
    """The jobs planned, {rule: jobs}: the console's "N jobs to run: rule n, ..." line, or
    Snakemake's own "Job stats" table (dry runs)."""
    if "Job stats:" in output:
        table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
        return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}
    line = re.search(r"^\d+ jobs to run: (.*)$", output, re.M)
    assert line, output[-3000:]
    return {rule: int(n) for rule, n in (item.rsplit(" ", 1) for item in line[1].split(", "))}


def new_project(root: Path, n_files: int = 8, seed: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    (root / "export.yaml").write_text(EXPORT_CONFIG)
    simulate(root / "data" / "train", n_files, seed=seed, config=SMALL)
    return root


def track_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in TRACK_SUFFIXES)


def unlabelled_folder(folder: Path, n_files: int, seed: int) -> Path:
    simulate(folder, n_files, seed=seed, config=SMALL)
    for label in folder.rglob("*.label"):
        label.unlink()
    return folder


def label_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.label"))}


def run_folder(project: Path, predict_dir: Path) -> Path:
    return project / "results" / "predict" / names.predict_run_name(predict_dir, project / "results/models/tagger")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project on which the whole default target ran once (train + held-out evaluation)."""
    project = new_project(tmp_path_factory.mktemp("trained"))
    result = snakemake(project)
    return SimpleNamespace(dir=project, output=ok(result))


# ---------------------------------------------------------------------------- static checks


def schema_keys(schema: dict, prefix: str = "", leaves: bool = True) -> Iterator[tuple[str, dict]]:
    """(dotted key, schema) of every leaf key of the config schema (and of every key with
    leaves=False)."""
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if "properties" in sub:
            if not leaves:
                yield key, sub
            yield from schema_keys(sub, f"{key}.", leaves)
        else:
            yield key, sub


def render(value) -> str:
    """A default as config/README.md writes it (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render(v)}" for k, v in value.items()) + "}"
    return str(value)


def test_config_readme_explains_every_schema_key_with_its_default():
    schema = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())
    readme = (REPO / "config/README.md").read_text()
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z_.0-9]+)` \| `([^`]*)` \|", readme, re.M)}
    for key, sub in schema_keys(schema):
        assert key in rows or f"`{key}`" in readme, \
            f"config key {key} is not explained in config/README.md (add a table row: | `{key}` | `default` | ...)"
        if key in rows and "default" in sub:
            assert rows[key] == render(sub["default"]), \
                f"config/README.md gives {key} the default {rows[key]!r}; the schema says {render(sub['default'])!r}"
    known = {key for key, _ in schema_keys(schema, leaves=False)}  # a section may have a row too
    assert set(rows) <= known, f"config/README.md documents keys the schema lacks: {sorted(set(rows) - known)}"


def test_lint_reports_nothing(tmp_path):
    project = new_project(tmp_path, n_files=3)
    output = ok(snakemake(project, "--lint"))
    assert "Congratulations, your workflow is in a good condition!" in output
    assert "Lints for" not in output


def test_dry_run_plans_every_stage_and_runs_nothing(tmp_path):
    project = new_project(tmp_path)
    output = ok(snakemake(project, "-n"))
    manifest = mf.read_manifest(project / "results/manifest.tsv")
    heldout = mf.read_manifest(project / "results/predict/heldout/manifest.tsv")
    assert len(manifest) == len(track_files(project / "data/train")) == 8
    assert 0 < len(heldout) < len(manifest) and set(heldout.ids) <= set(manifest.ids)
    shards = sharding.assign_shards(heldout.ids, 2, sizes={r["id"]: int(r["size"]) for r in heldout},
                              max_bytes=1000 * 10**6)
    assert job_counts(output) == {
        "all": 1, "isolate": len(manifest) - len(heldout), "dataset": 1, "pretrain": 1,
        "train_model": 1, "tagger": 1, "predict_shard": len(shards), "predict_summary": 1,
        "evaluate_heldout": 1, "ethograms": 1, "screen_summary": 1, "report_overview": 1,
    }
    # Nothing but the manifests (and the list of skipped entries): no job ran, no log was opened.
    written = sorted(str(p.relative_to(project)) for p in (project / "results").rglob("*") if p.is_file())
    assert written == ["results/manifest.tsv", "results/predict/heldout/manifest.tsv", "results/skipped.tsv"]
    assert not (project / "logs").exists()


# ---------------------------------------------------------------------------- the full run


def test_full_run_trains_on_training_files_and_tags_the_held_out_ones(trained):
    from maggotflow.dataset import Dataset
    from maggotflow.instance import ModelInstance

    project = trained.dir
    manifest = mf.read_manifest(project / "results/manifest.tsv")
    heldout = mf.read_manifest(project / "results/predict/heldout/manifest.tsv")
    training = [r for r in manifest if r["id"] not in set(heldout.ids)]
    assert sorted(Path(r["path"]) for r in manifest) == track_files(project / "data/train")

    # isolate: one intermediate + one log per training file, none for held-out files.
    isolated = sorted(p.name for p in (project / "results/isolated").iterdir())
    assert isolated == sorted(f"{r['id']}.h5" for r in training)
    assert all((project / "logs/isolate" / f"{r['id']}.log").is_file() for r in training)

    # dataset: built from training files only, split by whole files.
    dataset = Dataset.load(project / "results/dataset/w20.h5")
    sources = {s["source_path"] for s in dataset.sources}
    assert sources <= {r["path"] for r in training}
    assert not sources & {r["path"] for r in heldout}

    # pretrain -> train: a loadable tagger whose encoder has the configured size.
    tagger = ModelInstance.load(project / "results/models/tagger")
    assert tagger.kind == "tagger" and tagger.encoder_config.latent_dim == 8
    assert ModelInstance.load(project / "results/models/pretrained/w20").kind == "pretrained"
    # One window (segment.window 20), one model: the tagger is the trained model, copied.
    trained_model = ModelInstance.load(project / "results/models/trained/w20/m0")
    assert trained_model.config == tagger.config
    for name in ("pretrain/w20", "train/w20/m0", "dataset/w20"):
        assert (project / "logs" / f"{name}.log").stat().st_size > 0
        assert (project / "results/benchmarks" / f"{name}.tsv").is_file()

    # held-out predictions: one .label per held-out file in a tree mirroring the input
    # tree, every time step of every larva tagged with one of the tagger's labels.
    labels_root = project / "results/predict/heldout/labels"
    predicted = sorted(str(p.relative_to(labels_root)) for p in labels_root.rglob("*.label"))
    assert predicted == sorted(names.mirrored_label_path(r["relpath"]) for r in heldout)
    for row in heldout:
        label = read_label_file(labels_root / names.mirrored_label_path(row["relpath"]))
        run = read_run(row["path"], READ)
        assert label.dependencies[0]["filename"] == Path(row["path"]).name
        steps = {str(int(t.id)): t.n_steps for t in run.tracks if t.n_steps >= 2}
        assert {k: len(v[1]) for k, v in label.tracks.items()} == steps
        assert all(len(s) == 1 and s[0] in tagger.labels for _, v in label.tracks.items() for s in v[1])

    # evaluation: metrics over the held-out files' steps.
    metrics = json.loads((project / "results/evaluation/metrics.json").read_text())
    assert len(metrics["files"]) == len(heldout) and metrics["n_steps"] > 0 and metrics["n_missing"] == 0
    assert 0 <= metrics["macro_f1"] <= 1 and set(metrics["per_label"]) == set(metrics["labels"])
    assert (project / "results/evaluation/confusion.png").stat().st_size > 0
    assert len(list((project / "results/report/ethograms").glob("*.png"))) == min(2, len(heldout))

    # Readable by the lab: every file and folder under results/ has the umask's mode.
    from maggotflow.atomic import current_umask
    umask = current_umask()
    modes = {(p.is_dir(), p.stat().st_mode & 0o777) for p in (project / "results").rglob("*")}
    assert modes == {(False, 0o666 & ~umask), (True, 0o777 & ~umask)}, sorted(modes)

    # Up to date: nothing to re-run; nor after changing settings that change no result (each
    # job gets only the keys that decide its output: the device, threads, batch size of
    # tagging and the export settings are none of them).
    assert "Nothing to be done" in ok(snakemake(project, "-n"))
    (project / "unrelated.yaml").write_text(
        "device: auto\nthreads: {train: 2, predict: 2}\n"
        "predict: {batch_size: 7, export_next_to_tracks: true, overwrite_existing: true}\n"
    )
    assert "Nothing to be done" in ok(snakemake(project, "-n", configfiles=("unrelated.yaml",)))


def landing_page(html: str) -> str:
    """The report's landing page (HTML): Snakemake 9 embeds it as a JSON string."""
    found = re.search(r"var workflow_desc = (\".*?\");\n", html, re.S)
    assert found, "no workflow description in the report"
    return json.loads(found[1])


def test_report_is_written(trained):
    project = trained.dir
    ok(snakemake(project, "--report", "report.html"))
    html = (project / "report.html").read_text(errors="replace")
    assert "confusion" in html.lower() and "ethogram" in html.lower()
    assert "Screen summary" in html and "fraction_by_group.png" in html and "behaviour.png" in html
    page = landing_page(html)
    metrics = json.loads((project / "results/evaluation/metrics.json").read_text())
    # Opens on the headline numbers, says the data are simulated, renders the tables.
    assert f"Held-out macro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}" in page
    assert "simulated" in page and "does not carry over to real recordings" in page
    assert "data/train" in page and "20 pretraining steps" in page and "10 stage-1" in page
    for name, m in metrics["per_label"].items():
        assert re.search(rf"{name}</tt></td>\s*<td>{m['precision']:.3f}</td>\s*<td>{m['recall']:.3f}</td>"
                         rf"\s*<td>{m['f1']:.3f}</td>\s*<td>{m['support']}</td>", page), name
    # The candidates the default tagger was chosen from, their validation scores and times.
    provenance = json.loads((project / "results/models/tagger/provenance.json").read_text())
    assert set(provenance["candidates"]) == {"network", "boosting", "combined"}
    assert "Candidates compared on the whole validation split" in page
    for name, c in provenance["candidates"].items():
        kept = " (kept)" if name == provenance["chosen"] else ""
        assert re.search(rf"<tt[^>]*>{name}</tt>{re.escape(kept)}</td>\s*<td>{c['val_macro_f1']:.3f}</td>", page), name
    assert "epochs of the training segments" in page and "Validation during training" in page
    heldout = mf.read_manifest(project / "results/predict/heldout/manifest.tsv")
    import html as html_text  # docutils writes "@" as "&#64;"

    assert all(r["relpath"] in html_text.unescape(page) for r in heldout)  # the per-file table
    assert "{{" not in page and "raw %}" not in page


def test_held_out_run_has_a_screen_summary(trained):
    screen = trained.dir / "results/predict/heldout/screen"
    for name in ("per_larva.tsv", "per_file.tsv", "groups.tsv", "transitions.tsv", "fraction_by_group.png"):
        assert (screen / name).stat().st_size > 0, name
    per_file = (screen / "per_file.tsv").read_text()
    heldout = mf.read_manifest(trained.dir / "results/predict/heldout/manifest.tsv")
    assert all(names.mirrored_label_path(r["relpath"]) in per_file for r in heldout)
    per_file_scores = (trained.dir / "results/evaluation/per_file.tsv").read_text().splitlines()
    assert per_file_scores[0].split("\t") == ["predicted", "reference", "n_steps", "macro_f1", "accuracy"]
    assert len(per_file_scores) == 1 + len(heldout)


# ---------------------------------------------------------------------------- predict


def mirrored(folder: Path, track: Path) -> str:
    """The label path, relative to a run's labels/ folder, of a track file in `folder`."""
    return names.mirrored_label_path(str(track.relative_to(folder)))


def exported_status(run: Path) -> dict[str, str]:
    """{track file: what the export did} from a run's exported.tsv."""
    rows = (run / "exported.tsv").read_text().splitlines()[1:]
    return {line.split("\t")[0]: line.split("\t")[2] for line in rows}


@pytest.fixture(scope="module")
def exported_screen(trained, tmp_path_factory):
    """A folder of unlabelled files tagged once by `snakemake predict` with the trained model,
    exporting next to the track files. The folder holds what a user's folder can: a path
    with braces and spaces, a file already where a label would be exported, and entries that
    are not track files.

    The tests below read this run; the last two change it (labels damaged, then a file
    broken) and come after the others in the file, which is the order pytest runs them in.
    """
    project = trained.dir
    tagger = project / "results/models/tagger"
    tagger_before = {p.name: p.stat().st_mtime_ns for p in tagger.iterdir()}
    folder = unlabelled_folder(tmp_path_factory.mktemp("exported-screen") / "screen", 3, seed=5)
    # Braces and spaces in a path: Snakemake would take "{b}" for a wildcard in an input.
    odd = next(folder.rglob("*.spine"))
    odd_copy = folder / "run {b}" / odd.name.replace("@", "@{b}", 1)
    odd_copy.parent.mkdir()
    shutil.copy(odd, odd_copy)
    tracks = track_files(folder)
    # A file already sits where one prediction would be exported: it must survive.
    occupied = names.exported_label_path(tracks[0])
    occupied.write_bytes(b"my own notes\n")
    # Entries that are not track files are listed, with the reason, not skipped silently.
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "x.spine.gz").write_bytes(b"\x1f\x8b\x08\x00")
    os.mkfifo(folder / "pipe.spine")  # reading it would block the scan: never opened

    output = ok(snakemake(project, "predict", "--config", f"predict_dir={folder}", configfiles=("export.yaml",)))
    run = run_folder(project, folder)
    return SimpleNamespace(project=project, tagger=tagger, tagger_before=tagger_before, folder=folder, tracks=tracks,
                           occupied=occupied, output=output, run=run, produced=label_bytes(run / "labels"))


def test_predict_runs_only_prediction_jobs_and_never_trains(exported_screen):
    jobs = set(job_counts(exported_screen.output))
    assert jobs == {"predict", "predict_shard", "predict_summary", "export_predictions", "screen_summary"}
    tagger = exported_screen.tagger
    assert {p.name: p.stat().st_mtime_ns for p in tagger.iterdir()} == exported_screen.tagger_before


def test_predict_labels_are_the_library_prediction_of_every_track_file(exported_screen, tmp_path):
    from maggotflow.prediction import predict_files

    folder, tracks, produced = exported_screen.folder, exported_screen.tracks, exported_screen.produced
    assert sorted(produced) == sorted(mirrored(folder, t) for t in tracks)
    # The same bytes as the library's own prediction of the same files.
    reference = tmp_path / "reference"
    predict_files(exported_screen.tagger, tracks, out_paths=[reference / f"{i}.label" for i in range(len(tracks))],
                  device="cpu", read_options=READ)
    for i, track in enumerate(tracks):
        assert produced[mirrored(folder, track)] == (reference / f"{i}.label").read_bytes()


def test_predict_exports_next_to_the_tracks_but_never_over_a_user_file(exported_screen):
    run, tracks, occupied = exported_screen.run, exported_screen.tracks, exported_screen.occupied
    summary = (run / "summary.tsv").read_text().splitlines()
    assert len(summary) == 1 + len(tracks) and all(line.split("\t")[3] == "ok" for line in summary[1:])
    assert exported_status(run) == {str(t): "kept (not written by maggotflow)" if t == tracks[0] else "written"
                                    for t in tracks}
    assert occupied.read_bytes() == b"my own notes\n"
    log = (exported_screen.project / f"logs/predict/{run.name}/export.log").read_text()
    assert f"{occupied}: not written by maggotflow; kept" in log
    produced, folder = exported_screen.produced, exported_screen.folder
    assert all(names.exported_label_path(t).read_bytes() == produced[mirrored(folder, t)] for t in tracks[1:])


def test_predict_lists_the_entries_that_are_not_track_files_with_the_reason(exported_screen):
    run = exported_screen.run
    skipped = dict(line.split("\t") for line in (run / "skipped.tsv").read_text().splitlines()[1:])
    assert skipped["notes.txt"].startswith("unknown extension .txt")
    assert skipped["x.spine.gz"] == "gzip-compressed: decompress it first"
    assert skipped["pipe.spine"] == "not a regular file"
    assert not any(name.endswith(".label") for name in skipped)
    assert re.search(rf"{re.escape(str(exported_screen.folder))}: {len(skipped)} entries skipped, not track files .*"
                     rf"listed in results/predict/{run.name}/skipped.tsv", exported_screen.output)


def test_predict_jobs_of_large_files_are_cut_by_size(exported_screen):
    # A cap below every file's size gives one job per file.
    project, folder = exported_screen.project, exported_screen.folder
    (project / "small_jobs.yaml").write_text("predict:\n  max_mb_per_job: 0.001\n")
    planned = ok(snakemake(project, "-n", "-F", "predict", "--config", f"predict_dir={folder}",
                           configfiles=("small_jobs.yaml",)))
    assert all(t.stat().st_size > 1000 for t in exported_screen.tracks)
    assert job_counts(planned)["predict_shard"] == len(exported_screen.tracks)


def test_predict_again_has_nothing_to_do_and_exports_are_not_ground_truth(exported_screen):
    assert "Nothing to be done" in ok(snakemake(exported_screen.project, "predict", "--config",
                                                f"predict_dir={exported_screen.folder}", configfiles=("export.yaml",)))
    assert not any(r["label"] for r in mf.read_manifest(exported_screen.run / "manifest.tsv"))


def test_predict_reports_damaged_labels_and_forcerun_retags_only_those(exported_screen):
    # A label deleted, one damaged, and the temporary of a killed writer: the next run says so
    # (Snakemake alone decides what runs: labels are side products of their shard's job), and
    # with --forcerun predict_shard every job re-tags only those files, restoring the same bytes.
    project, folder, run = exported_screen.project, exported_screen.folder, exported_screen.run
    tracks, produced = exported_screen.tracks, exported_screen.produced
    deleted, damaged = (mirrored(folder, t) for t in tracks[1:3])
    (run / "labels" / deleted).unlink()
    with open(run / "labels" / damaged, "r+b") as f:
        f.write(b"#")  # same size, other bytes
    leftover = (run / "labels" / deleted).with_name(f".{Path(deleted).name}.host-1.x.part")
    leftover.write_text("half a label")
    output = ok(snakemake(project, "predict", "--config", f"predict_dir={folder}"))
    assert "Nothing to be done" in output
    assert re.search(rf"results/predict/{run.name}: 2 label file\(s\) missing or changed since their job wrote "
                     r"them .*add `--forcerun predict_shard`", output)
    untouched = {p: p.stat().st_mtime_ns for p in (run / "labels").rglob("*.label")}
    # With overwrite_existing: maggotflow's own earlier export is replaced; the user's never.
    edited = names.exported_label_path(tracks[1])
    data = json.loads(edited.read_text())
    data["metadata"]["note"] = "edited by hand"
    edited.write_text(json.dumps(data))
    (project / "overwrite.yaml").write_text(EXPORT_CONFIG + "  overwrite_existing: true\n")
    ok(snakemake(project, "predict", "--forcerun", "predict_shard", "--config", f"predict_dir={folder}",
                 configfiles=("overwrite.yaml",)))
    assert label_bytes(run / "labels") == produced
    assert all(p.stat().st_mtime_ns == t for p, t in untouched.items()
               if p != run / "labels" / damaged)  # current labels kept as they are, not re-tagged
    logs = "".join(p.read_text() for p in (project / "logs/predict" / run.name).glob("s*.log"))
    assert logs.count("already have a current label (kept)") >= 1
    assert not leftover.exists()
    exported = exported_status(run)
    assert exported[str(tracks[0])] == "kept (not written by maggotflow)" and exported[str(tracks[1])] == "written"
    assert exported_screen.occupied.read_bytes() == b"my own notes\n" and edited.read_bytes() == produced[deleted]
    assert ".part" not in (run / "summary.tsv").read_text()
    assert "missing or changed" not in ok(snakemake(project, "predict", "--config", f"predict_dir={folder}"))


def test_predict_skip_bad_files_records_a_file_that_became_unreadable(exported_screen):
    # With predict.skip_bad_files: the summary says so (no stale `ok`), its earlier label of
    # maggotflow's is gone, and every sha1 listed is that of the label on disk.
    from maggotflow.formats import file_sha1

    project, folder, run = exported_screen.project, exported_screen.folder, exported_screen.run
    broken = next(t for t in exported_screen.tracks[1:] if "{" not in str(t))
    broken.write_text("not a spine file\n")
    (project / "skip.yaml").write_text("predict:\n  skip_bad_files: true\n")
    result = snakemake(project, "predict", "--config", f"predict_dir={folder}", configfiles=("skip.yaml",))
    assert result.returncode == 0 and "1 input(s) failed" in result.stdout, result.stdout[-3000:]
    rows = {r["path"]: r for r in runtables.read_shard_table(run / "summary.tsv")}
    assert len(rows) == len(exported_screen.tracks)
    assert rows[str(broken)]["status"] == "failed" and rows[str(broken)]["problem"]
    assert not rows[str(broken)]["sha1"] and not rows[str(broken)]["label"]
    assert not (run / "labels" / mirrored(folder, broken)).exists()
    assert all(file_sha1(r["label"] if os.path.isabs(r["label"]) else project / r["label"]) == r["sha1"]
               for r in rows.values() if r["status"] == "ok")


def test_predict_with_a_missing_model_fails_without_training(trained, tmp_path):
    folder = unlabelled_folder(tmp_path / "screen", 1, seed=6)
    result = snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}", f"model={tmp_path / 'nope'}")
    assert result.returncode != 0
    assert f"{tmp_path / 'nope'}: no model instance there" in result.stdout
    assert not STARTED_JOB.search(result.stdout)  # no job at all

    # A crafted config.json (absurd sizes) is refused by the up-front check, before any job.
    crafted = tmp_path / "crafted"
    shutil.copytree(trained.dir / "results/models/tagger", crafted)
    config = json.loads((crafted / "config.json").read_text())
    config["encoder"]["filters"] = [60000] * len(config["encoder"]["filters"])
    (crafted / "config.json").write_text(json.dumps(config))
    result = snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}", f"model={crafted}")
    assert result.returncode != 0 and f"{crafted}: config.json: encoder filters 60000 is out of range" in result.stdout
    assert not STARTED_JOB.search(result.stdout) and "Traceback" not in result.stdout

    pretrained = trained.dir / "results/models/pretrained/w20"
    result = snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}", f"model={pretrained}")
    assert result.returncode != 0 and f"{pretrained}: is a pretrained encoder, not a tagger" in result.stdout
    assert not STARTED_JOB.search(result.stdout)

    fresh = new_project(tmp_path / "fresh", n_files=2)
    result = snakemake(fresh, "predict", "--config", f"predict_dir={folder}")
    assert result.returncode != 0 and "train it first with `snakemake train`" in result.stdout
    assert not STARTED_JOB.search(result.stdout)
    assert not (fresh / "results/models").exists() and not (fresh / "results/isolated").exists()
    # A run that stops before any job leaves nothing a later run would trust.
    assert not (trained.dir / "results/predict" / names.predict_run_name(folder, tmp_path / "nope")).exists()
    assert not (trained.dir / "results/predict" / names.predict_run_name(folder, pretrained)).exists()
    assert not (fresh / "results").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "video.avi").write_bytes(b"RIFF")
    result = snakemake(trained.dir, "predict", "--config", f"predict_dir={empty}")
    assert result.returncode != 0 and f"{empty}: no track file matching" in result.stdout
    assert "video.avi: unknown extension .avi" in result.stdout
    assert not run_folder(trained.dir, empty).exists()


def test_concurrent_predicts_on_two_folders_do_not_clash(trained, tmp_path):
    project = trained.dir
    first = unlabelled_folder(tmp_path / "first", 3, seed=7)
    second = unlabelled_folder(tmp_path / "second", 4, seed=8)
    # One unreadable file in the second folder: its shard fails, every other file is tagged.
    broken = second / "broken" / "20200101_000000@x@y@t5@p@100.spine"
    broken.parent.mkdir()
    broken.write_text("not a spine file\n")
    # Both runs at the same time, in the same project.
    one = snakemake(project, "predict", "--config", f"predict_dir={first}", background="first.out")
    two = snakemake(project, "predict", "--keep-going", "--config", f"predict_dir={second}",
                    background="second.out")
    # Both hold their lock on the project at the same time at some point (Snakemake writes
    # one <n>.output.lock per running invocation).
    most_locks, deadline = 0, time.monotonic() + 180
    while (one.poll() is None or two.poll() is None) and time.monotonic() < deadline:
        most_locks = max(most_locks, len(list((project / ".snakemake/locks").glob("*.output.lock"))))
        time.sleep(0.05)
    assert one.wait(timeout=180) == 0, (project / "first.out").read_text()[-4000:]
    assert two.wait(timeout=180) != 0
    assert most_locks == 2, "the two runs did not overlap"
    text_one, text_two = (project / "first.out").read_text(), (project / "second.out").read_text()
    assert "LockException" not in text_one + text_two

    run_one, run_two = run_folder(project, first), run_folder(project, second)
    assert run_one != run_two
    assert sorted(label_bytes(run_one / "labels")) == \
        sorted(names.mirrored_label_path(str(t.relative_to(first))) for t in track_files(first))
    assert len((run_one / "summary.tsv").read_text().splitlines()) == 1 + 3
    good = [t for t in track_files(second) if t != broken]
    assert sorted(label_bytes(run_two / "labels")) == \
        sorted(names.mirrored_label_path(str(t.relative_to(second))) for t in good)
    assert not (run_two / "labels" / names.mirrored_label_path(str(broken.relative_to(second)))).exists()
    # Each run's end-of-run summary names its own failures only.
    assert "1 input(s) failed" in text_two and str(broken) in text_two
    assert "input(s) failed" not in text_one and str(broken) not in text_one
    # A failed run leaves no summary a later run would trust (only its rule writes one).
    assert not (run_two / "summary.tsv").exists()
    assert f"results/predict/{run_two.name}: 1 of " in text_two and "prediction job(s) did not finish" in text_two


def test_predict_from_a_bare_folder_uses_the_config_next_to_the_snakefile(trained, tmp_path):
    """README: `snakemake -s /path/to/Snakefile predict ...` from a folder of your own, no
    config/config.yaml there and no --configfile; a results/ that cannot be written is one line."""
    bare = tmp_path / "bare"
    bare.mkdir()
    folder = unlabelled_folder(tmp_path / "screen", 3, seed=9)
    for track in track_files(folder):
        if track.suffix != ".spine":
            track.unlink()  # one .spine file (a FIMTrack table would need read.pixelsize_um)
    assert len(track_files(folder)) == 1
    env = local_env()
    env["PATH"] = os.pathsep.join([env["PATH"].split(os.pathsep)[0], os.environ.get("PATH", "")])  # no venv
    command = [str(SNAKEMAKE), "-s", str(SNAKEFILE), "predict", "--cores", "1", "--config",
               f"predict_dir={folder}", f"model={trained.dir / 'results/models/tagger'}", "device=cpu"]
    (bare / "results").write_text("not a folder\n")  # in the way of every output, also as root
    blocked = subprocess.run(command, cwd=bare, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=180)
    assert blocked.returncode != 0 and not STARTED_JOB.search(blocked.stdout)
    assert re.search(r"^\s*results: cannot write \(a file of that name is in the way of the folder\)$",
                     blocked.stdout, re.M), blocked.stdout
    assert "Traceback (most recent call last)" not in blocked.stdout
    (bare / "results").unlink()
    ok(subprocess.run(command, cwd=bare, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                      timeout=180))
    run = bare / "results/predict" / names.predict_run_name(folder, trained.dir / "results/models/tagger")
    assert [r["status"] for r in runtables.read_shard_table(run / "summary.tsv")] == ["ok"]
    assert not (bare / "config").exists()


# ---------------------------------------------------------------------------- failures


def test_corrupt_track_file_fails_only_its_isolation_job(tmp_path):
    project = new_project(tmp_path, n_files=5)
    # A trx.mat cut short (an interrupted copy), with its labels: a training file.
    source = next((project / "data/train").rglob("trx.mat"))
    broken_dir = project / "data/train/t5/broken@copy/p/20200101_000000"
    broken_dir.mkdir(parents=True)
    broken = broken_dir / "trx.mat"
    broken.write_bytes(source.read_bytes()[:20000])
    shutil.copy(source.with_name("trx.label"), broken_dir / "trx.label")
    # A good file under a folder name with braces is isolated like the others.
    odd_dir = project / "data/train/t5/exp{2}@copy/p/20200101_000001"
    odd_dir.mkdir(parents=True)
    shutil.copy(source, odd_dir / "trx.mat")
    shutil.copy(source.with_name("trx.label"), odd_dir / "trx.label")
    (project / "tiny.yaml").write_text(TINY_CONFIG.replace("heldout_fraction: 0.25", "heldout_fraction: 0"))

    result = snakemake(project, "--keep-going")
    assert result.returncode != 0
    manifest = mf.read_manifest(project / "results/manifest.tsv")
    bad = next(r for r in manifest if r["path"] == str(broken))
    # Every other file was isolated; the broken one left no output (not even a partial one).
    assert sorted(p.name for p in (project / "results/isolated").iterdir()) == \
        sorted(f"{r['id']}.h5" for r in manifest if r is not bad)
    assert result.stdout.count("Error in rule") == 1 and "Error in rule isolate" in result.stdout
    log = (project / "logs/isolate" / f"{bad['id']}.log").read_text()
    assert f"{broken}: is truncated or corrupt" in log and "Traceback" not in log
    # The end-of-run summary names the file, its problem and its log.
    summary = result.stdout.split("1 input(s) failed (file, problem, log):", 1)[1]
    assert str(broken) in summary and "truncated or corrupt" in summary
    assert f"logs/isolate/{bad['id']}.log" in summary


def test_sigkill_then_unlock_and_rerun_incomplete_matches_a_clean_run(trained, tmp_path):
    project = tmp_path / "killed"
    project.mkdir()
    for name in ("tiny.yaml", "export.yaml"):
        shutil.copy(trained.dir / name, project / name)
    shutil.copytree(trained.dir / "data", project / "data")

    main = snakemake(project, background="killed.out")
    out = project / "killed.out"
    deadline = time.monotonic() + 120
    incomplete = project / ".snakemake/incomplete"

    def pretraining_started() -> bool:  # announced, and its output marked incomplete
        return "[pretrain window=" in out.read_text() and incomplete.is_dir() and any(incomplete.iterdir())

    while not pretraining_started() and main.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main.poll() is None, "the run ended before pretraining started"
    main.send_signal(signal.SIGKILL)
    main.wait()
    # The killed process's job (pretraining) lives on, as an orphaned cluster job would:
    # wait for it to end before recovering.
    while time.monotonic() < deadline:
        try:
            os.killpg(main.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    assert list(incomplete.iterdir()), "nothing marked incomplete"

    locked = snakemake(project)
    assert locked.returncode != 0 and "--unlock" in locked.stdout
    ok(snakemake(project, "--unlock"))
    ok(snakemake(project, "--rerun-incomplete"))

    recovered = label_bytes(project / "results/predict/heldout/labels")
    clean = label_bytes(trained.dir / "results/predict/heldout/labels")
    assert recovered and recovered == clean
    assert "Nothing to be done" in ok(snakemake(project, "-n"))


# ---------------------------------------------------------------------------- fault injection
# Each fault is made on a copy of one folder of 4 files (2 per job), tagged as a user would,
# then recovered with the same command; the labels must be byte-identical to the clean run's.

FAULT_SIM = SimulationConfig(duration_s=20, larvae=(3, 4))  # long enough to stop a job mid-shard


@pytest.fixture(scope="module")
def screen(trained, tmp_path_factory):
    """A folder of 4 unlabelled files and the labels of its clean `snakemake predict`."""
    folder = tmp_path_factory.mktemp("screen") / "screen"
    simulate(folder, 4, seed=21, config=FAULT_SIM)
    for label in folder.rglob("*.label"):
        label.unlink()
    # Any legal file name goes through the manifest, the shard tables and the summaries:
    # a leading dash, a tab, a CR and a newline (each file counted once).
    spine = next(folder.rglob("*.spine"))
    spine.rename(spine.with_name("-odd\tname\r\nx.spine"))
    ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))
    run = run_folder(trained.dir, folder)
    clean = label_bytes(run / "labels")
    assert len(clean) == 4 and any("-odd\tname\r\nx.label" in name for name in clean)
    assert [r["status"] for r in runtables.read_shard_table(run / "summary.tsv")] == ["ok"] * 4
    return SimpleNamespace(folder=folder, clean=clean)


def copy_of(screen, tmp_path: Path) -> Path:
    folder = tmp_path / "screen"
    shutil.copytree(screen.folder, folder)
    return folder


def job_processes(session: int, rule: str) -> list[int]:
    """The pids of the running jobs of `rule` started by the snakemake in `session`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if rule in cmdline and os.getsid(int(entry.name)) == session and int(entry.name) != session:
                pids.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def labels_in(run: Path) -> set[Path]:
    return set((run / "labels").rglob("*.label")) if (run / "labels").is_dir() else set()


def start_and_stop_mid_shard(project: Path, folder: Path, out: str, stop) -> tuple[str, Path]:
    """Start `snakemake predict` on `folder` and, as soon as a job has written a new label,
    call `stop(main, job pids)`; the run must then be unfinished (no summary: a fault was
    made mid-run, whatever a job running beside it did meanwhile). Returns the run's output
    and run folder."""
    run = run_folder(project, folder)
    before = labels_in(run)
    main = snakemake(project, "predict", "--config", f"predict_dir={folder}", background=out)
    deadline = time.monotonic() + 180
    while main.poll() is None and time.monotonic() < deadline and not labels_in(run) - before:
        time.sleep(0.005)
    assert main.poll() is None, "the run ended before it could be stopped"
    stop(main, job_processes(main.pid, "predict_shard"))
    main.wait(timeout=120)
    while time.monotonic() < deadline:  # the session's processes (orphaned jobs) are gone
        try:
            os.killpg(main.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    assert not (run / "summary.tsv").exists(), "every job had finished: no fault was made"
    return (project / out).read_text(), run


def test_a_killed_job_is_tagged_again_by_the_same_command(trained, screen, tmp_path):
    folder = copy_of(screen, tmp_path)

    def kill_job(main, jobs):
        assert jobs, "no prediction job running"
        for pid in jobs:
            os.kill(pid, signal.SIGKILL)  # the OOM killer, a lost node: the job alone dies

    output, run = start_and_stop_mid_shard(trained.dir, folder, "killed-job.out", kill_job)
    assert "Error in rule predict_shard" in output
    assert not (run / "summary.tsv").exists()  # nothing a later run would trust
    assert "prediction job(s) did not finish" in output
    again = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))
    assert label_bytes(run / "labels") == screen.clean
    assert "4 file(s) tagged, 0 failed" in again
    assert "Nothing to be done" in ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))

    # A track file replaced by other bytes with its mtime kept (`cp -p`): re-tagged, alone.
    from maggotflow.formats import file_sha1

    tracks = [t for t in track_files(folder) if t.suffix == ".spine"]
    edited, donor = tracks[0], tracks[-1]
    label = run / "labels" / names.mirrored_label_path(str(edited.relative_to(folder)))
    mtime = edited.stat().st_mtime_ns
    shutil.copyfile(donor, edited)
    os.utime(edited, ns=(mtime, mtime))
    # (--quiet host: the job blocks, hidden by the default profile, say why a job runs)
    again = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}", "--quiet", "host"))
    assert job_counts(again)["predict_shard"] == 1 and "Params have changed" in again
    assert json.loads(label.read_text())["dependencies"]["sha1"] == file_sha1(edited)
    changed = {k for k, v in label_bytes(run / "labels").items() if screen.clean[k] != v}
    assert changed == {str(label.relative_to(run / "labels"))}


def test_ctrl_c_then_sigkill_of_everything_then_the_same_command_finishes_the_run(trained, screen, tmp_path):
    folder = copy_of(screen, tmp_path)
    # Ctrl-C (SIGINT to the whole foreground group) mid-shard: Snakemake stops its jobs.
    _, run = start_and_stop_mid_shard(trained.dir, folder, "sigint.out",
                                      lambda main, jobs: os.killpg(main.pid, signal.SIGINT))
    assert not (run / "summary.tsv").exists()
    # The same command, itself stopped mid-shard by a SIGKILL of everything (a node gone).
    shutil.rmtree(run / "labels")  # so that its first label is its own
    _, run = start_and_stop_mid_shard(trained.dir, folder, "sigkill.out",
                                      lambda main, jobs: os.killpg(main.pid, signal.SIGKILL))
    locked = snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}")
    assert locked.returncode != 0 and "--unlock" in locked.stdout
    ok(snakemake(trained.dir, "predict", "--unlock", "--config", f"predict_dir={folder}"))
    again = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))
    assert label_bytes(run / "labels") == screen.clean
    assert "4 file(s) tagged, 0 failed" in again


def test_a_broken_file_and_a_hand_made_label_fail_alone_in_their_shard(trained, screen, tmp_path):
    folder = copy_of(screen, tmp_path)
    run = run_folder(trained.dir, folder)
    tracks = track_files(folder)
    broken, foreign = tracks[0], tracks[-1]
    good_bytes = broken.read_bytes()
    broken.write_bytes(good_bytes[: len(good_bytes) // 3] + b"\x00garbage")
    hand_made = run / "labels" / names.mirrored_label_path(str(foreign.relative_to(folder)))
    hand_made.parent.mkdir(parents=True)
    hand_made.write_text('{"metadata": {"id": "mine"}, "labels": ["run"], "data": []}\n')
    result = snakemake(trained.dir, "predict", "--keep-going", "--config", f"predict_dir={folder}")
    assert result.returncode != 0
    assert "2 input(s) failed" in result.stdout
    assert printable_path(str(broken)) in result.stdout and printable_path(str(foreign)) in result.stdout
    assert "exists and was not written by maggotflow" in result.stdout
    # Every other file is tagged, as in a clean run; the user's file is untouched.
    produced = label_bytes(run / "labels")
    hand_rel = str(hand_made.relative_to(run / "labels"))
    broken_rel = names.mirrored_label_path(str(broken.relative_to(folder)))
    assert hand_made.read_text().startswith('{"metadata": {"id": "mine"}')
    assert {k: v for k, v in produced.items() if k != hand_rel} == \
        {k: v for k, v in screen.clean.items() if k not in (hand_rel, broken_rel)}
    # Mended, the same command tags just those two files (the others' labels are kept as they
    # are) and ends with every file tagged.
    broken.write_bytes(good_bytes)
    hand_made.rename(tmp_path / "mine.label")
    good = {p: p.stat().st_mtime_ns for p in labels_in(run)}
    again = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))
    assert label_bytes(run / "labels") == screen.clean and "4 file(s) tagged, 0 failed" in again
    assert len(good) == 2 and all(p.stat().st_mtime_ns == t for p, t in good.items())


# ---------------------------------------------------------------------------- front door


def error_lines(output: str) -> list[str]:
    """The lines after Snakemake's banner ("Building DAG of jobs..." or the config notes)."""
    tail = output.split("Building DAG of jobs...", 1)[-1]
    return [line for line in tail.splitlines() if line.strip() and not line.startswith(("Using ", "Config file"))]


def refused(result) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    out = result.stdout
    assert "InputFunctionException" not in out and "Traceback" not in out, out[-2000:]
    assert not STARTED_JOB.search(out)
    return out


def test_front_door_names_a_missing_folder_or_model_in_one_line(tmp_path):
    project = new_project(tmp_path / "p", n_files=2)
    out = refused(snakemake(project, "predict", "-n", "--config", "predict_dir=/x/y"))
    assert error_lines(out) == ["predict_dir=/x/y: folder does not exist"]

    out = refused(snakemake(project, "predict", "-n", "--config", f"predict_dir={project / 'data/train'}",
                            f"model={tmp_path / 'nomodel'}"))
    assert error_lines(out) == [f"model={tmp_path / 'nomodel'}: no model instance there (folder does not exist)"]

    (project / "nodir.yaml").write_text("inputs:\n  track_dir: /no/such/folder\n")
    out = refused(snakemake(project, "-n", configfiles=("nodir.yaml",)))
    assert error_lines(out) == ["inputs.track_dir=/no/such/folder: folder does not exist"]

    (project / "noeval.yaml").write_text("evaluation:\n  track_dir: /no/eval\n")
    out = refused(snakemake(project, "-n", configfiles=("noeval.yaml",)))
    assert error_lines(out) == ["evaluation.track_dir=/no/eval: folder does not exist"]
    # `predict` never looks at the training folder
    out = refused(snakemake(project, "predict", "-n", "--config", "predict_dir=/x/y", configfiles=("nodir.yaml",)))
    assert "inputs.track_dir" not in out and "predict_dir=/x/y: folder does not exist" in out


def test_misspelt_config_key_names_the_nearest_valid_one(tmp_path):
    project = new_project(tmp_path / "p", n_files=2)
    result = snakemake(project, "-n", "--config", "predcit_dir=x")
    assert result.returncode != 0
    assert "config: predcit_dir: unknown key; did you mean predict_dir?" in result.stdout
    assert len(error_lines(result.stdout)) < 10 and "properties" not in result.stdout

    (project / "typo.yaml").write_text("train:\n  stage1_step: 10\n")
    result = snakemake(project, "-n", configfiles=("typo.yaml",))
    assert result.returncode != 0
    assert "config: train.stage1_step: unknown key; did you mean train.stage1_steps?" in result.stdout
    assert len(result.stdout.splitlines()) < 10

    (project / "bad.yaml").write_text("train:\n  stage1_steps: many\n")
    result = snakemake(project, "-n", configfiles=("bad.yaml",))
    assert result.returncode != 0
    assert "config: train.stage1_steps='many': must be an integer" in result.stdout
    assert len(result.stdout.splitlines()) < 10


def test_predict_closing_message_names_the_labels_folder_and_counts(trained, tmp_path):
    folder = unlabelled_folder(tmp_path / "screen", 2, seed=11)
    out = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={folder}"))
    run = run_folder(trained.dir, folder).relative_to(trained.dir)
    assert "Produced:" in out
    assert f"labels of {folder}: {run / 'labels'} (2 file(s) tagged, 0 failed)" in out
    assert "unlike the tagger's training data" not in out
    assert (trained.dir / run / "screen" / "groups.tsv").is_file()  # predict made its screen summary

    # The same tracks without the simulator's README.txt: the tagger, trained on simulated
    # larvae only, judges both unlike its training data; the message counts them and warns.
    real = tmp_path / "real"
    shutil.copytree(folder, real, ignore=shutil.ignore_patterns("README.txt"))
    out = ok(snakemake(trained.dir, "predict", "--config", f"predict_dir={real}"))
    labels = run_folder(trained.dir, real).relative_to(trained.dir) / "labels"
    assert f"labels of {real}: {labels} (2 file(s) tagged, 0 failed, 2 unlike the tagger's training data)" in out
    assert "2 of 2 tagged file(s) are unlike the tagger's training data" in out

    # With that run on disk (and no predict_dir now), the default target and the report still
    # plan (the run's files are taken as they are) and the report shows its screen summary;
    # `summary` remakes a deleted one.
    before = {f: (trained.dir / run / f).stat().st_mtime_ns for f in ("summary.tsv", "screen/groups.tsv")}
    ok(snakemake(trained.dir))  # the landing page now lists the run too
    assert {f: (trained.dir / run / f).stat().st_mtime_ns for f in before} == before  # the run is left as it is
    planned = ok(snakemake(trained.dir, "-n"))
    assert "predict_shard" not in planned and "screen_summary" not in planned
    ok(snakemake(trained.dir, "--report", "again.html"))
    assert run.name in (trained.dir / "again.html").read_text(errors="replace")
    shutil.rmtree(trained.dir / run / "screen")
    ok(snakemake(trained.dir, "-n"))
    ok(snakemake(trained.dir, "summary", "--config", f"predict_dir={folder}"))
    assert (trained.dir / run / "screen" / "groups.tsv").is_file()


# ---------------------------------------------------------------------------- the README's commands

README_SECTIONS = ("Quick start", "The workflow", "Your own data", "Tagger presets")
PROGRAMS = ("snakemake", "make", "maggotflow", "tagging-backend", "python", "source")


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README's sections a newcomer follows: every line of their
    ```bash blocks (comments dropped, `\\` continuations joined) and every inline code span
    that starts with a program name and has an argument (spans may wrap lines)."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    found = []
    for title, body in zip(parts[1::2], parts[2::2]):
        if title.strip() not in README_SECTIONS:
            continue
        for block in re.findall(r"```bash\n(.*?)```", body, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line:
                    found.append(" ".join(line.split()))
        prose = re.sub(r"\s*\n\s*", " ", re.sub(r"```.*?```", "", body, flags=re.S))
        for span in re.findall(r"`([^`]+)`", prose):
            if span.split(" ")[0] in PROGRAMS and " " in span:
                found.append(" ".join(span.split()))
    return list(dict.fromkeys(found))


def readme_yaml(text: str, after: str) -> str:
    """The first ```yaml block after the line containing `after`."""
    return re.search(r"```yaml\n(.*?)```", text[text.index(after):], re.S)[1]


def expand_optional(command: str) -> list[str]:
    """`a [b]` -> [`a`, `a b`]: a README's optional arguments, each form run."""
    match = re.search(r" \[([^\]]+)\]", command)
    if not match:
        return [command]
    return [command[: match.start()] + command[match.end():], command[: match.start()] + " " + match[1]
            + command[match.end():]]


def how_to_run(words: list[str], lab: SimpleNamespace) -> tuple[list[str], Path, str]:
    """(argv, working folder, why) for a README command, its paths substituted: snakemake
    commands run in the lab folder with this checkout's Snakefile, as dry runs (-n) unless
    they are quick (--report, --unlock); `make` targets as `make -n` (they install and train:
    minutes); a bare subcommand with --help; a benchmark group must exist (they take up to an
    hour)."""
    program = words[0]
    if program == "source":  # the venv's activation: then its programs are the ones found
        script = f"source {words[1]} && command -v snakemake maggotflow tagging-backend"
        return ["bash", "-c", script], REPO, "activate"
    if program == "make":
        return ["make", "-n", *words[1:]], REPO, "dry run"
    if program == "python" and words[1:3] == ["-m", "benchmarks"]:
        code = f"import benchmarks.__main__ as b, importlib.util as u; g = b.GROUPS[{words[3]!r}]; " \
               "assert u.find_spec(g), g"
        return [sys.executable, "-c", code], REPO, "group exists"
    if program == "tagging-backend" and len(words) == 2:
        return [str(SNAKEMAKE.with_name(program)), words[1], "--help"], lab.dir, "--help"
    if program in ("maggotflow", "tagging-backend"):
        return [str(SNAKEMAKE.with_name(program)), *words[1:]], lab.dir, "run"
    assert program == "snakemake", words
    argv = [str(SNAKEMAKE), *words[1:]]
    if "-s" not in words:
        argv += ["-s", str(SNAKEFILE)]
    if "--report" in words or "--unlock" in words:
        return argv, lab.dir, "run"
    return argv + ["-n"], lab.dir, "dry run"


@pytest.fixture(scope="module")
def lab(trained, tmp_path_factory):
    """A lab's working folder for the README's commands: a copy of the trained project (so
    that no README command changes `trained`), its files also as config's default
    inputs.track_dir (data/tracks), the README's my_lab.yaml, and a screen to tag."""
    root = tmp_path_factory.mktemp("readme")
    folder = root / "lab"
    shutil.copytree(trained.dir, folder, symlinks=True)
    shutil.copytree(folder / "data" / "train", folder / "data" / "tracks")
    screen = unlabelled_folder(root / "screen", 2, seed=31)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (folder / "my_lab.yaml").write_text(readme_yaml(text, "**Point a config at them.**")
                                        .replace("/data/labelled", str(folder / "data" / "train")))
    (folder / "my_experiment.yaml").write_text(TINY_CONFIG)
    substitutions = {
        "/data/screen": str(screen),
        "/models/tagger": str(folder / "results" / "models" / "tagger"),
        "/path/to/maggotflow/Snakefile": str(SNAKEFILE),
        "profiles/slurm": str(REPO / "profiles" / "slurm"),
        "tagger=<name>": "tagger=boosting",
        "LABELS...": str(folder / "results" / "predict" / "heldout" / "labels"),
        "--out DIR": f"--out {root / 'summary'}",
        "predict_dir=DIR": f"predict_dir={screen}",
        ".venv/bin/activate": str(Path(sys.executable).with_name("activate")),
        " ...": "",
    }
    return SimpleNamespace(dir=folder, text=text, substitutions=substitutions)


def test_readme_commands_work_as_written(lab):
    commands = readme_commands(lab.text)
    # the sections' commands are found (a README rewrite that loses them fails here)
    assert {"make demo", "make test", "snakemake --cores 8"} <= set(commands), commands
    assert any(" predict " in c and "--configfile my_lab.yaml" in c for c in commands), commands
    failures, ran = [], []
    for command in commands:
        for form in expand_optional(command):
            for old, new in lab.substitutions.items():
                form = form.replace(old, new)
            argv, cwd, why = how_to_run(form.split(" "), lab)
            result = subprocess.run(argv, cwd=cwd, env=local_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=300)
            ran.append(f"{command} ({why})")
            if result.returncode != 0 or "Traceback" in result.stdout:
                failures.append(f"`{command}` ({why}, {shlex_join(argv)}) exit {result.returncode}:\n"
                                + result.stdout[-1500:])
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 15, ran


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)
