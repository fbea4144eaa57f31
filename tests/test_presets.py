"""Every tagger preset (config/taggers/*.yaml) trained and used end to end by the workflow.

All presets run one after another in ONE project folder at a tiny budget (the overlay
below wins over the presets, as a user's --configfile does): the track files are isolated
once, and every later stage reruns because its parameters change with the preset. Each
run ends with the held-out files tagged and evaluated; the test checks the .label files
carry the preset's label set, one label per time step, and that the model folder is of the
preset's kind.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from maggotflow import manifest as mf
from maggotflow.names import mirrored_label_path
from maggotflow.formats.label import read_label_file
from maggotflow.simulation import SimulationConfig, simulate

from helpers import SNAKEMAKE, local_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "config" / "taggers").glob("*.yaml"))

# Budgets and sizes only: the presets' designs (labels, windows, latent size, layers,
# classifier kind, post-rule, balancing, filter) stay as they are.
TINY = """\
inputs: {track_dir: data/train}
read: {pixelsize_um: 100}
device: cpu
pretrain: {steps: 10, eval_every: 10, batch_size: 32, filters: [8, 8, 8, 8, 8, 8], max_segments: 3000}
train: {stage1_steps: 5, stage2_steps: 5, eval_every: 10, batch_size: 32, forest: {n_trees: 5}}
dataset: {max_samples: 3000}
predict: {files_per_job: 4}
evaluation: {heldout_fraction: 0.25}
threads: {dataset: 1, pretrain: 1, train: 1, predict: 1}
report: {ethograms: 0}
"""
SMALL_ENSEMBLE = "ensemble: {members: [{window: 15, count: 2}, {window: 30, count: 1}]}\n"


def run(project: Path, *args: str, configfiles: tuple[str, ...] = ()) -> str:
    # One --configfile option with every file: a second option would replace the first.
    cmd = [str(SNAKEMAKE), *args, "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", *configfiles,
           "--cores", "2"]
    env = local_env()
    result = subprocess.run(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    (root / "tiny.yaml").write_text(TINY)
    simulate(root / "data" / "train", 8, seed=5, config=SimulationConfig(duration_s=12, larvae=(2, 3)))
    return root


def test_every_preset_is_documented_and_valid_yaml():
    assert {"default", "20220418", "20221005", "20221005-1", "20221228", "20230111", "20230129"} <= set(PRESETS)
    for name in PRESETS:
        text = (REPO / "config" / "taggers" / f"{name}.yaml").read_text()
        assert "Reproduces:" in text and "Differs" in text, name  # what it is and what differs
        assert isinstance(yaml.safe_load(text), dict)
    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in PRESETS)  # the README's preset table


def test_unknown_preset_is_one_clear_error(project):
    cmd = [str(SNAKEMAKE), "-n", "--config", "tagger=1999", "-s", str(REPO / "Snakefile"),
           "--configfile", "tiny.yaml"]
    result = subprocess.run(cmd, cwd=project, env=local_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert result.returncode != 0
    assert "tagger=1999: no such preset" in result.stdout and "20230129" in result.stdout


def layered(base: dict, over: dict) -> dict:
    """`over` laid over `base`, section by section (as Snakemake layers config files)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = layered(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def design(preset: dict) -> dict:
    """What a preset makes of the tagger's design: the preset over config/config.yaml, and
    the dataclasses' defaults for what neither gives (they are the one source of defaults)."""
    from maggotflow.pretraining import PretrainConfig
    from maggotflow.segments import SegmentSpec
    from maggotflow.training import TrainConfig

    config = layered(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), preset)
    train = config.get("train") or {}
    return {
        "labels": config.get("labels"),
        "interpolate": (config.get("segment") or {}).get("interpolate", SegmentSpec().interpolate),
        "latent_dim": (config.get("pretrain") or {}).get("latent_dim", PretrainConfig().latent_dim),
        "classifier": train.get("classifier", "dense"),
        "layers": list(train.get("layers", TrainConfig().layers)),
        "post_rule": train.get("post_rule", TrainConfig().post_rule),
        "candidates": list(train.get("candidates", TrainConfig().candidates)),
    }


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_and_tags(project, name):
    preset = yaml.safe_load((REPO / "config" / "taggers" / f"{name}.yaml").read_text()) or {}
    want = design(preset)
    configfiles = ()
    if preset.get("ensemble"):
        (project / "ensemble.yaml").write_text(SMALL_ENSEMBLE)
        configfiles = ("ensemble.yaml",)
    output = run(project, "--config", f"tagger={name}", configfiles=configfiles)

    model = project / "results" / "models" / "tagger"
    config = json.loads((model / "config.json").read_text())
    labels = want["labels"]
    if labels is not None:
        assert config["labels"] == labels
    if preset.get("ensemble"):
        assert config["kind"] == "ensemble" and len(config["members"]) == 3
        windows = sorted(json.loads((model / m / "config.json").read_text())["segment_spec"]["window"]
                         for m in config["members"])
        assert windows == [15, 15, 30]
        assert len(re.findall(r"^\[train_model .*\] started", output, re.M)) == 3  # one job per member
    else:
        assert config["kind"] == "tagger"
        assert config["segment_spec"]["interpolate"] == want["interpolate"]
        chosen = json.loads((model / "provenance.json").read_text()).get("chosen", "network")
        assert chosen in want["candidates"]
        kind = want["classifier"] if chosen == "network" else "boosting"  # the candidate validation chose
        assert config["classifier"]["kind"] == kind
        if want["candidates"] != ["boosting"]:  # trees alone keep a placeholder encoder
            assert config["encoder"]["latent_dim"] == want["latent_dim"]
        else:
            # nothing to pretrain for trees on kinematic features
            assert "[pretrain " not in output and "train_model" in output
        if kind == "dense":
            assert config["classifier"]["layers"] == want["layers"]
        assert config["post_rule"] == want["post_rule"]
    if preset.get("inputs", {}).get("filter"):
        wanted = preset["inputs"]["filter"]
        used = json.loads((model / "provenance.json").read_text())["dataset_sources"]
        manifest = {r["path"]: r for r in mf.read_manifest(project / "results/manifest.tsv")}
        assert used and all(manifest[s["source_path"]]["tracker"] == wanted["tracker"] for s in used)

    # The held-out files, tagged with the preset: valid .label files, the preset's labels.
    heldout = mf.read_manifest(project / "results/predict/heldout/manifest.tsv")
    labels = config["labels"]
    for row in heldout:
        label = project / "results/predict/heldout/labels" / mirrored_label_path(row["relpath"])
        lf = read_label_file(label)
        assert lf.names == labels
        from maggotflow.formats import ReadOptions, read_run

        tracks = {t.id: t for t in read_run(row["path"], ReadOptions(pixelsize_um=100)).tracks}
        assert set(lf.tracks) == set(tracks)
        for larva, (t, steps) in lf.tracks.items():
            assert len(steps) == len(t) == tracks[larva].n_steps
            assert all(len(s) == 1 and s[0] in labels for s in steps)
    metrics = json.loads((project / "results/evaluation/metrics.json").read_text())
    assert 0.0 <= metrics["macro_f1"] <= 1.0
