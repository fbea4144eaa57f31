"""`tagging-backend`: the TaggingBackends folder convention on simulated experiments.

A backend project holds `data/raw/NAME/` (track files, with their `.label` files for
training), `models/NAME/` (the tagger), `pretrained_models/P/` (encoders) and
`data/processed/NAME/` (predictions). Budgets are a few optimisation steps of a tiny
encoder: these tests check where files go and which options reach the tagger.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from maggotflow.backend import main
from maggotflow.formats import ReadOptions
from maggotflow.formats.label import read_label_file
from maggotflow.instance import ModelInstance
from maggotflow.prediction import predict_files
from maggotflow.simulation import SimulationConfig, simulate

from helpers import SPEC, TINY_ENCODER

SIM = SimulationConfig(duration_s=20.0, larvae=(2, 3))
PIXELSIZE = str(SIM.fimtrack_pixelsize_um)
FIMTRACK = ReadOptions(framerate=SIM.fimtrack_frame_rate_hz, pixelsize_um=SIM.fimtrack_pixelsize_um)
FAST = ["--device", "cpu", "--pixelsize", PIXELSIZE, "--batch-size", "16"]
NETWORK = [*FAST, "--candidates", "network"]  # the network alone: these tests are about it (and quicker)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def new_project(root: Path, name: str = "sim", n_files: int = 3, pretrained: str | None = "tiny") -> Path:
    """A backend folder with `n_files` simulated labelled experiments in data/raw/NAME."""
    simulate(root / "data" / "raw" / name, n_files, seed=11, config=SIM)
    if pretrained is not None:
        torch.manual_seed(0)
        ModelInstance("pretrained", SPEC, TINY_ENCODER).save(root / "pretrained_models" / pretrained)
    return root


def backend(root: Path, *argv: str) -> int:
    return main([*argv, "--root", str(root)])


def used_labels(root: Path, name: str = "sim") -> list[str]:
    """Sorted names of the behaviours that occur in the ground-truth .label files."""
    used = set()
    for path in (root / "data" / "raw" / name).rglob("*.label"):
        used |= {step[0] for _, steps in read_label_file(path).tracks.values() for step in steps}
    return sorted(used)


def raw_tracks(root: Path, name: str = "sim") -> list[Path]:
    raw = root / "data" / "raw" / name
    return sorted(p for p in raw.rglob("*") if p.suffix in (".spine", ".mat", ".csv"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = new_project(tmp_path_factory.mktemp("backend"))
    code = backend(root, "train", "--model-instance", "sim", "--pretrained-model-instance", "tiny",
                   "--iterations", "4", *NETWORK)
    assert code == 0
    return root


def one_line_error(capsys, root: Path, *argv: str) -> str:
    assert backend(root, *argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------------------- train
def test_train_reads_data_raw_and_writes_models(trained):
    instance = ModelInstance.load(trained / "models" / "sim")
    assert instance.kind == "tagger"
    assert sorted(instance.labels) == used_labels(trained)  # every label found in the .label files
    assert len(instance.labels) >= 5
    prov = instance.provenance
    assert prov["stage2_steps"] == 4 and prov["stage1_steps"] == 1  # --iterations 4, stage 1 = ceil(4/4)
    assert prov["pretrained"] == str((trained / "pretrained_models" / "tiny").resolve())
    assert instance.encoder_config.filters == TINY_ENCODER.filters
    assert prov["balancing"] == "auto"
    # one intermediate per track file and the dataset under data/interim/NAME
    interim = trained / "data" / "interim" / "sim"
    assert len(list((interim / "isolated").glob("*.h5"))) == 3
    with h5py.File(interim / "larva_dataset.h5", "r") as f:
        sources = json.loads(f.attrs["sources"])
    assert len(sources) == 3
    assert {Path(s["path"]).parent for s in sources} == {interim / "isolated"}


def test_train_options_reach_the_dataset_and_the_tagger(trained, tmp_path):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sub")
    shutil.copytree(trained / "pretrained_models", root / "pretrained_models")
    code = backend(root, "train", "--model-instance", "sub", "--pretrained-model-instance", "tiny",
                   "--labels", "run_large,back_large", "--class-weights", "1,3", "--iterations", "2", *NETWORK)
    assert code == 0
    instance = ModelInstance.load(root / "models" / "sub")
    assert instance.labels == ["run_large", "back_large"] and instance.classifier_config.n_classes == 2
    assert instance.provenance["class_weights"] == [1.0, 3.0]
    assert instance.provenance["stage2_steps"] == 2 and instance.provenance["stage1_steps"] == 1

    code = backend(root, "train", "--model-instance", "sub", "--pretrained-model-instance", "tiny",
                   "--balancing-strategy", "maggotuba", "--iterations", "1", *NETWORK)
    assert code == 0
    instance = ModelInstance.load(root / "models" / "sub")  # replaced
    assert instance.provenance["balancing"] == "maggotuba"
    assert sorted(instance.labels) == used_labels(root, "sub")
    with h5py.File(root / "data" / "interim" / "sub" / "larva_dataset.h5", "r") as f:
        assert f.attrs["balancing"] == "maggotuba"


def test_train_takes_pretrained_models_default_without_the_option(trained, tmp_path):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sim")
    shutil.copytree(trained / "pretrained_models" / "tiny", root / "pretrained_models" / "default")
    assert backend(root, "train", "--model-instance", "sim", "--iterations", "1", *NETWORK) == 0
    prov = ModelInstance.load(root / "models" / "sim").provenance
    assert prov["pretrained"] == str((root / "pretrained_models" / "default").resolve())
    # --pretrained-model-instance also finds an instance in models/
    shutil.copytree(root / "models" / "sim", root / "models" / "base")
    assert backend(root, "train", "--model-instance", "sim", "--pretrained-model-instance", "base",
                   "--iterations", "1", *NETWORK) == 0
    prov = ModelInstance.load(root / "models" / "sim").provenance
    assert prov["pretrained"] == str((root / "models" / "base").resolve())


def test_train_without_any_pretrained_instance_pretrains_on_all_the_files(trained, tmp_path):
    root = tmp_path
    raw = root / "data" / "raw" / "sim"
    shutil.copytree(trained / "data" / "raw" / "sim", raw)
    spine = next(p for p in raw_tracks(root) if p.suffix == ".spine")
    shutil.copy(spine, raw / "unlabelled.spine")  # no .label: pretraining only, as in the workflow
    assert backend(root, "train", "--model-instance", "sim", "--iterations", "1", "--pretraining-iterations", "1",
                   *NETWORK) == 0
    pretrained = ModelInstance.load(root / "data" / "interim" / "sim" / "pretrained")
    assert pretrained.kind == "pretrained"
    prov = pretrained.provenance
    assert len(prov["train_files"]) + len(prov["val_files"]) == 4
    instance = ModelInstance.load(root / "models" / "sim")
    assert instance.provenance["pretrained"] == str((root / "data" / "interim" / "sim" / "pretrained").resolve())
    with h5py.File(root / "data" / "interim" / "sim" / "larva_dataset.h5", "r") as f:
        assert len(json.loads(f.attrs["sources"])) == 3  # the labelled files only


def test_train_layers_counts_dense_layers(trained, tmp_path):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sim")
    shutil.copytree(trained / "pretrained_models", root / "pretrained_models")
    assert backend(root, "train", "--model-instance", "sim", "--pretrained-model-instance", "tiny",
                   "--layers", "3", "--iterations", "1", *NETWORK) == 0
    assert ModelInstance.load(root / "models" / "sim").classifier_config.layers == (64, 64)
    assert ModelInstance.load(trained / "models" / "sim").classifier_config.layers == ()  # default --layers 1


# ---------------------------------------------------------------------------- predict
def test_predict_several_files_mirrors_their_paths(trained, capsys):
    capsys.readouterr()
    assert backend(trained, "predict", "--model-instance", "sim", "--device", "cpu", "--pixelsize", PIXELSIZE) == 0
    raw, processed = trained / "data" / "raw" / "sim", trained / "data" / "processed" / "sim"
    tracks = raw_tracks(trained)
    expected = [processed / p.relative_to(raw).with_suffix(".label") for p in tracks]
    assert sorted(capsys.readouterr().out.split()) == sorted(map(str, expected))
    assert sorted(p for p in processed.rglob("*") if p.is_file()) == sorted(expected)
    # the same labels as the library writes for each track file
    for track, out in zip(tracks, expected):
        reference = predict_files(trained / "models" / "sim", [track], out_paths=[out.with_name("ref.label")],
                                  device="cpu", read_options=FIMTRACK)[0]
        assert out.read_bytes() == reference.read_bytes()
        reference.unlink()
        assert read_label_file(out).dependencies[0]["filename"] == track.name

    # --make-dataset goes through intermediates in a private folder: same bytes, no leftovers
    before = {p: p.read_bytes() for p in expected}
    interim = trained / "data" / "interim" / "sim"
    listing = sorted(p.name for p in interim.iterdir())
    assert backend(trained, "predict", "--model-instance", "sim", "--make-dataset", "--device", "cpu",
                   "--pixelsize", PIXELSIZE) == 0
    assert {p: p.read_bytes() for p in expected} == before
    assert sorted(p.name for p in interim.iterdir()) == listing


def test_predict_one_file_writes_predicted_label(trained, tmp_path):
    root = tmp_path
    track = next(p for p in raw_tracks(trained) if p.suffix == ".spine")
    (root / "data" / "raw" / "one").mkdir(parents=True)
    shutil.copy(track, root / "data" / "raw" / "one" / track.name)
    shutil.copytree(trained / "models" / "sim", root / "models" / "one")
    assert backend(root, "predict", "--model-instance", "one", "--device", "cpu") == 0
    processed = root / "data" / "processed" / "one"
    assert [p.name for p in processed.iterdir()] == ["predicted.label"]
    labels = read_label_file(processed / "predicted.label")
    assert labels.dependencies[0]["filename"] == track.name
    assert labels.names == ModelInstance.load(root / "models" / "one").labels


def test_predict_keep_going_tags_the_good_files(trained, tmp_path, capsys):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sim")
    shutil.copytree(trained / "models" / "sim", root / "models" / "sim")
    bad = root / "data" / "raw" / "sim" / "t5" / "20200101_000000@g@e@t5@p@1.spine"
    bad.write_text("20200101_000000 1 0.0 not numbers\n")
    capsys.readouterr()
    line = one_line_error(capsys, root, "predict", "--model-instance", "sim", "--device", "cpu",
                          "--pixelsize", PIXELSIZE)
    assert str(bad) in line
    assert backend(root, "predict", "--model-instance", "sim", "--device", "cpu", "--pixelsize", PIXELSIZE,
                   "--keep-going") == 1
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 3  # the three good files
    err = captured.err.strip().splitlines()
    assert err[0] == "tagging-backend predict: 1 file(s) could not be tagged:" and str(bad) in err[1]
    processed = root / "data" / "processed" / "sim"
    assert not (processed / "t5" / (bad.stem + ".label")).exists()
    assert len([p for p in processed.rglob("*") if p.is_file()]) == 3


# ---------------------------------------------------------------------------- errors
def test_clear_errors_for_missing_folders_and_bad_names(trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(capsys, empty, "train", "--model-instance", "nope", "--device", "cpu")
    assert "data/raw/nope" in line and "folder not found" in line
    line = one_line_error(capsys, empty, "predict", "--model-instance", "nope", "--device", "cpu")
    assert "models/nope" in line and "not found" in line
    for bad_name in ("../up", ".hidden", "a/b"):
        line = one_line_error(capsys, empty, "predict", "--model-instance", bad_name)
        assert "plain folder name" in line
    assert not (empty / "data").exists() and not (tmp_path / "up").exists()

    # a models/NAME that is not a maggotflow instance: refused by predict, untouched by train
    root = tmp_path / "foreign"
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sim")
    (root / "models" / "sim").mkdir(parents=True)
    (root / "models" / "sim" / "notes.txt").write_text("mine")
    line = one_line_error(capsys, root, "predict", "--model-instance", "sim", "--device", "cpu")
    assert "not a maggotflow model instance" in line
    line = one_line_error(capsys, root, "train", "--model-instance", "sim", "--iterations", "1", *FAST)
    assert "models/sim" in line and "not overwritten" in line
    assert (root / "models" / "sim" / "notes.txt").read_text() == "mine"

    shutil.rmtree(root / "models" / "sim")
    line = one_line_error(capsys, root, "train", "--model-instance", "sim", "--pretrained-model-instance",
                          "missing", *FAST)
    assert "'missing' not found" in line
    line = one_line_error(capsys, root, "train", "--model-instance", "sim", "--iterations", "0", *FAST)
    assert "--iterations" in line

    # no track file, and track files without labels
    (root / "data" / "raw" / "void").mkdir()
    line = one_line_error(capsys, root, "train", "--model-instance", "void", *FAST)
    assert "no track file found" in line
    unlabelled = root / "data" / "raw" / "unlabelled"
    unlabelled.mkdir()
    for track in raw_tracks(trained):
        if track.suffix == ".spine":
            shutil.copy(track, unlabelled / track.name)
    line = one_line_error(capsys, root, "train", "--model-instance", "unlabelled", *FAST)
    assert "no labelled track file" in line
    assert not (root / "models" / "unlabelled").exists()


# ---------------------------------------------------------------------------- finetune, --sandbox
def test_finetune_continues_an_existing_tagger_into_a_new_instance(trained, tmp_path):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "more")
    shutil.copytree(trained / "models" / "sim", root / "models" / "sim")
    original = ModelInstance.load(root / "models" / "sim")
    code = backend(root, "finetune", "--model-instance", "more", "--original-model-instance", "sim",
                   "--iterations", "2", "--skip-make-dataset", *NETWORK)
    assert code == 0
    tuned = ModelInstance.load(root / "models" / "more")
    assert tuned.kind == "tagger" and tuned.labels == original.labels
    assert tuned.provenance["pretrained"] == str((root / "models" / "sim").resolve())
    assert tuned.provenance["stage2_steps"] == 2
    assert tuned.provenance["classifier_continued"] is True  # the original's classifier was the start
    assert ModelInstance.load(root / "models" / "sim").provenance == original.provenance  # untouched

    # without --original-model-instance: models/NAME itself is continued and replaced
    shutil.copytree(trained / "models" / "sim", root / "models" / "more", dirs_exist_ok=True)
    assert backend(root, "finetune", "--model-instance", "more", "--iterations", "1", *NETWORK) == 0
    assert ModelInstance.load(root / "models" / "more").provenance["stage2_steps"] == 1
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".")]  # its copy went


def test_candidates_boosting_trains_trees_without_any_encoder_or_pretraining(trained, tmp_path, capsys):
    root = tmp_path
    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "sim")
    assert backend(root, "train", "--model-instance", "sim", "--candidates", "boosting", *FAST) == 0
    out = capsys.readouterr().out
    instance = ModelInstance.load(root / "models" / "sim")
    assert instance.classifier_config.kind == "boosting" and instance.provenance["chosen"] == "boosting"
    assert "pretrain" not in out and not (root / "data" / "interim" / "sim" / "pretrained").exists()
    assert predict_files(root / "models" / "sim", raw_tracks(root)[:1], out_dir=tmp_path / "labels",
                         device="cpu", read_options=FIMTRACK)


def test_finetune_refuses_a_missing_or_pretrained_original(trained, tmp_path, capsys):
    shutil.copytree(trained / "pretrained_models", tmp_path / "models")
    err = one_line_error(capsys, tmp_path, "finetune", "--model-instance", "x", "--original-model-instance", "nope",
                         *FAST)
    assert "model instance 'nope' not found" in err
    err = one_line_error(capsys, tmp_path, "finetune", "--model-instance", "x", "--original-model-instance", "tiny",
                         *FAST)
    assert "not a tagger" in err or "pretrained" in err


def with_one_track(trained: Path, root: Path, raw: str) -> Path:
    """`root` holding the trained tagger models/sim and one of its track files in data/raw/RAW."""
    shutil.copytree(trained / "models" / "sim", root / "models" / "sim")
    track = raw_tracks(trained)[0]
    (root / "data" / "raw" / raw).mkdir(parents=True)
    shutil.copy(track, root / "data" / "raw" / raw / track.name)
    return root


def test_sandbox_names_the_data_folders(trained, tmp_path):
    root = with_one_track(trained, tmp_path, "tok1")
    assert backend(root, "predict", "--model-instance", "sim", "--sandbox", "tok1", *FAST[:4]) == 0
    assert (root / "data" / "processed" / "tok1" / "predicted.label").is_file()
    assert not (root / "data" / "processed" / "sim").exists()

    shutil.copytree(trained / "data" / "raw" / "sim", root / "data" / "raw" / "tok2")
    shutil.copytree(trained / "pretrained_models", root / "pretrained_models")
    assert backend(root, "train", "--model-instance", "other", "--sandbox", "tok2", "--pretrained-model-instance",
                   "tiny", "--iterations", "1", *NETWORK) == 0
    assert (root / "models" / "other").is_dir() and (root / "data" / "interim" / "tok2" / "larva_dataset.h5").is_file()
    assert not (root / "data" / "interim" / "other").exists()


def test_sandbox_must_be_a_plain_name(trained, capsys):
    err = one_line_error(capsys, trained, "predict", "--model-instance", "sim", "--sandbox", "../x", *FAST[:4])
    assert "--sandbox '../x' must be a plain folder name" in err


def test_train_post_rule_and_seed_reach_the_tagger(tmp_path):
    """--post-rule and --seed, as LarvaTagger.jl's training dialog can pass them."""
    root = new_project(tmp_path, name="pr", n_files=2)
    assert backend(root, "train", "--model-instance", "pr", "--pretrained-model-instance", "tiny",
                   "--iterations", "2", "--post-rule", "ABC->AAC", "--seed", "3", *NETWORK) == 0
    tagger = ModelInstance.load(root / "models" / "pr")
    assert tagger.post_rule == "ABC->AAC"
    assert tagger.provenance["config"]["seed"] == 3 and tagger.provenance["config"]["post_rule"] == "ABC->AAC"


def test_predict_accepts_data_isolation(trained, tmp_path):
    """LarvaTagger.jl's --data-isolation: accepted (every call is isolated already), same labels."""
    root = with_one_track(trained, tmp_path, "sim")
    assert backend(root, "predict", "--model-instance", "sim", "--data-isolation", *FAST[:4]) == 0
    predicted = read_label_file(root / "data" / "processed" / "sim" / "predicted.label")
    assert predicted.tracks and all(steps for _, steps in predicted.tracks.values())
