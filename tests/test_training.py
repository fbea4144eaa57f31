"""Two-stage fine-tuning on synthetic larvae whose behaviours are easy to tell apart.

Larvae alternate bouts of three behaviours: `run` (crawling forward), `back` (crawling
backward) and `stop` (still, with tracking jitter). Segments are normalised so that the
body axis points to +x, so forward and backward motion are opposite drifts along x.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from maggotflow.cli import build_parser
from maggotflow.cli import main as cli_main
from maggotflow.cli.settings import settings_from_args
from maggotflow.dataset import Dataset, build_dataset
from maggotflow.forest import ForestConfig
from maggotflow.instance import InstanceError, ModelInstance
from maggotflow.metrics import confusion_matrix, macro_f1
from maggotflow.model import EncoderConfig
from maggotflow.pretraining import PretrainConfig
from maggotflow.segments import SegmentSpec
from maggotflow.training import TrainConfig, selection_key, train_tagger

from helpers import QUICK, SPEC, TINY_ENCODER, tiny_pretrained, write_experiments

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    intermediates = write_experiments(folder)
    dataset = folder / "dataset.h5"
    build_dataset(intermediates, dataset, spec=SPEC, max_samples=900, seed=0).close()
    pretrained = tiny_pretrained(folder / "pretrained", dataset)
    return {"folder": folder, "intermediates": intermediates, "dataset": dataset, "pretrained": pretrained}


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def validation_predictions(instance: ModelInstance, dataset_path: Path) -> tuple[np.ndarray, np.ndarray]:
    with Dataset.load(dataset_path, in_memory=True) as ds:
        idx = ds.val_indices()
        with torch.inference_mode():
            logits = instance.tagger()(torch.from_numpy(ds.segments[idx]))
        return logits.argmax(1).numpy(), ds.label[idx]


# ---------------------------------------------------------------------------- metrics
def test_macro_f1_by_hand():
    """The mean over the classes with support: class 3 is predicted once but never true, so it
    stays out of the mean (training's former copy averaged it in as an F1 of 0)."""
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 3])
    cm = confusion_matrix(truth, pred, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    # F1: class 0 = 2/(2+1+1) = .5, class 1 = 4/(4+1) = .8, class 2 = 0
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_selection_key_ranks_missing_and_nan_scores_lowest():
    good = {"val_loss": 2.0, "val_macro_f1": 0.5}
    for bad in ({"val_loss": float("nan"), "val_macro_f1": 0.5}, {"val_loss": None, "val_macro_f1": None}):
        assert selection_key(good, "loss") > selection_key(bad, "loss")
    assert selection_key(good, "macro_f1") > selection_key({"val_loss": float("nan"), "val_macro_f1": 0.5},
                                                           "macro_f1")  # equal F1: the finite loss wins
    assert selection_key({"val_loss": 9.0, "val_macro_f1": 0.6}, "macro_f1") > selection_key(good, "macro_f1")


# ---------------------------------------------------------------------------- training
def test_same_seed_gives_identical_weights_and_other_seed_differs(data, tmp_path):
    config = TrainConfig(stage1_steps=5, stage2_steps=5, seed=3, **QUICK)
    a = train_tagger(data["dataset"], tmp_path / "a", data["pretrained"], config, log=lambda m: None)
    b = train_tagger(data["dataset"], tmp_path / "b", data["pretrained"], config, log=lambda m: None)
    assert states_equal(a.encoder, b.encoder) and states_equal(a.classifier, b.classifier)
    config.seed = 4
    c = train_tagger(data["dataset"], tmp_path / "c", data["pretrained"], config, log=lambda m: None)
    assert not states_equal(a.classifier, c.classifier)


def test_stage1_freezes_encoder_and_stage2_fine_tunes_it(data, tmp_path):
    pretrained = ModelInstance.load(data["pretrained"])
    quiet = dict(log=lambda m: None)
    # The random tiny encoder gives small latents: stage 1 needs a few dozen steps at a high
    # learning rate before the validation loss moves below its initial value.
    only1 = train_tagger(data["dataset"], tmp_path / "s1", data["pretrained"],
                         TrainConfig(stage1_steps=60, stage2_steps=0, lr_stage1=1e-2, select_by="loss",
                                     **QUICK), **quiet)
    assert only1.provenance["best"]["step"] > 0  # the classifier did learn something
    # weights and BatchNorm running statistics untouched
    assert states_equal(only1.encoder, pretrained.encoder)
    fresh = ModelInstance("tagger", SPEC, TINY_ENCODER, classifier_config=only1.classifier_config,
                          labels=only1.labels)
    assert not states_equal(only1.classifier, fresh.classifier)

    both = train_tagger(data["dataset"], tmp_path / "s2", data["pretrained"],
                        TrainConfig(stage1_steps=5, stage2_steps=15, eval_every=100, batch_size=32,
                                    device="cpu", select_by="loss", candidates=("network",)), **quiet)
    assert both.provenance["best"]["stage"] == "fine-tune"
    assert not states_equal(both.encoder, pretrained.encoder)
    bn = "blocks.0.3.running_mean"  # BatchNorm statistics move in stage 2 only
    assert not torch.equal(both.encoder.state_dict()[bn], pretrained.encoder.state_dict()[bn])


def test_class_weights_drive_the_loss(data, tmp_path):
    """Weight 0 for every class but `run`: only run samples count in the loss, so the tagger
    learns to call runs `run` (recall 1) and calls far more steps `run` than with equal weights."""
    with Dataset.load(data["dataset"]) as ds:
        labels = ds.labels
    run = labels.index("run")

    def run_predictions(weights, name):
        config = TrainConfig(stage1_steps=100, stage2_steps=0, lr_stage1=2e-2, class_weights=weights,
                             select_by="loss", **QUICK)
        instance = train_tagger(data["dataset"], tmp_path / name, data["pretrained"], config, log=lambda m: None)
        assert instance.provenance["class_weights"] == list(weights)
        return validation_predictions(instance, data["dataset"])

    only_run = tuple(1.0 if name == "run" else 0.0 for name in labels)
    predicted, truth = run_predictions(only_run, "only_run")
    equal, _ = run_predictions((1.0,) * len(labels), "equal")
    assert (truth != run).any()  # the validation set does hold other behaviours
    assert (predicted[truth == run] == run).all()
    assert (predicted == run).mean() > (equal == run).mean() + 0.2


def test_dataset_class_weights_are_used_by_default(data, tmp_path, monkeypatch):
    seen = []
    original = torch.nn.CrossEntropyLoss

    class Recording(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.weight.detach().cpu().numpy().copy())

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Recording)
    dataset = data["folder"] / "weighted.h5"
    build_dataset(data["intermediates"], dataset, spec=SPEC, max_samples=300, class_weights=[0.5, 2.0, 3.0]).close()
    instance = train_tagger(dataset, tmp_path / "t", data["pretrained"],
                            TrainConfig(stage1_steps=2, stage2_steps=0, **QUICK), log=lambda m: None)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [0.5, 2.0, 3.0])
    assert instance.provenance["class_weights"] == [0.5, 2.0, 3.0]


def test_best_validated_state_is_kept(data, tmp_path):
    """A wild stage-2 learning rate ruins the tagger; the saved one is the best validated."""
    config = TrainConfig(stage1_steps=30, stage2_steps=20, lr_stage1=1e-2, lr_stage2=5.0, **QUICK)
    instance = train_tagger(data["dataset"], tmp_path / "best", data["pretrained"], config, log=lambda m: None)
    curve = instance.curves["training"]
    best = instance.provenance["best"]
    f1s = [row["val_macro_f1"] for row in curve]
    assert best["val_macro_f1"] == max(f1s)
    assert curve[-1]["val_macro_f1"] < best["val_macro_f1"]  # the end was worse: the test means something
    predicted, truth = validation_predictions(ModelInstance.load(tmp_path / "best"), data["dataset"])
    assert macro_f1(confusion_matrix(truth, predicted, len(instance.labels))) == pytest.approx(best["val_macro_f1"])
    # training curve with a stage column next to the instance
    text = (tmp_path / "best" / "curves" / "training.csv").read_text().splitlines()
    assert text[0].split(",")[:3] == ["step", "stage", "train_loss"]
    assert {line.split(",")[1] for line in text[1:]} == {"classifier", "fine-tune"}
    assert (tmp_path / "best" / "curves" / "training.png").stat().st_size > 0


def test_checkpoint_choice_uses_the_macro_f1_that_evaluation_reports(data, tmp_path):
    """A behaviour the tagger predicts but the validation files never hold (stop): training's
    former macro-F1 averaged it in as 0, evaluation's leaves it out. Both are now
    `maggotflow.metrics.macro_f1`, so the kept checkpoint's recorded score is the reported one."""
    dataset = tmp_path / "no_stop_in_validation.h5"
    shutil.copy(data["dataset"], dataset)
    with h5py.File(dataset, "r+") as f:
        labels = json.loads(f.attrs["labels"])
        label, validation = f["label"][()], f["split"][()] == 1
        label[validation & (label == labels.index("stop"))] = labels.index("run")
        f["label"][...] = label
    config = TrainConfig(stage1_steps=60, stage2_steps=0, lr_stage1=1e-2, **QUICK)
    instance = train_tagger(dataset, tmp_path / "t", data["pretrained"], config, log=lambda m: None)
    predicted, truth = validation_predictions(instance, dataset)
    cm = confusion_matrix(truth, predicted, len(labels))
    stop = labels.index("stop")
    assert cm[stop].sum() == 0 and cm[:, stop].sum() > 0  # predicted, never true: the definitions differ
    tp, fp, fn = np.diag(cm), cm.sum(axis=0) - np.diag(cm), cm.sum(axis=1) - np.diag(cm)
    former = np.mean([2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]) for k in range(len(labels)) if tp[k] + fp[k] + fn[k]])
    assert former != pytest.approx(macro_f1(cm))
    best = instance.provenance["best"]
    assert best["val_macro_f1"] == pytest.approx(macro_f1(cm), abs=1e-12)
    assert best["val_macro_f1"] == max(row["val_macro_f1"] for row in instance.curves["training"])


def test_separable_behaviours_are_learnt_and_saved_instance_predicts_the_same(data, tmp_path):
    config = TrainConfig(stage1_steps=60, stage2_steps=120, lr_stage1=1e-2, lr_stage2=3e-3, post_rule="ABC-AAC",
                         **QUICK)
    instance = train_tagger(data["dataset"], tmp_path / "good", data["pretrained"], config, log=lambda m: None)
    assert instance.provenance["best"]["val_accuracy"] >= 0.9
    loaded = ModelInstance.load(tmp_path / "good")
    assert loaded.kind == "tagger" and loaded.post_rule == "ABC->AAC"
    assert loaded.labels == instance.labels and len(loaded.colors) == len(loaded.labels)
    with Dataset.load(data["dataset"], in_memory=True) as ds:
        x = torch.from_numpy(ds.segments[:200])
    with torch.inference_mode():
        assert torch.equal(instance.tagger()(x), loaded.tagger()(x))
    prov = json.loads((tmp_path / "good" / "provenance.json").read_text())
    assert prov["pretrained"] == str(data["pretrained"].resolve())
    assert prov["dataset"] == str(data["dataset"].resolve())
    assert [s["sha1"] for s in prov["dataset_sources"]] == [f"{i:040x}" for i in range(3)]
    assert prov["stage1_steps"] == 60 and prov["stage2_steps"] == 120 and prov["seed"] == 0


def test_label_subset_is_carried_into_the_instance(data, tmp_path):
    dataset = data["folder"] / "subset.h5"
    build_dataset(data["intermediates"], dataset, spec=SPEC, labels=["stop", "run"], max_samples=300).close()
    instance = train_tagger(dataset, tmp_path / "sub", data["pretrained"],
                            TrainConfig(stage1_steps=3, stage2_steps=3, **QUICK), log=lambda m: None)
    loaded = ModelInstance.load(tmp_path / "sub")
    assert loaded.labels == ["stop", "run"] and instance.labels == ["stop", "run"]
    assert loaded.classifier_config.n_classes == 2
    assert loaded.colors == ["#984ea3", "#000000"]


def test_random_encoder_without_pretrained_instance(data, tmp_path):
    lines = []
    instance = train_tagger(data["dataset"], tmp_path / "scratch", None,
                            TrainConfig(stage1_steps=2, stage2_steps=2, **QUICK), log=lines.append)
    assert instance.encoder_config.latent_dim == 4 and instance.encoder_config.filters == (8, 8, 4, 4, 4, 4)
    assert any("random" in line for line in lines)
    assert instance.provenance["pretrained"] is None


def test_segment_spec_mismatch_is_a_clear_error(data, tmp_path):
    other = tmp_path / "other"
    ModelInstance("pretrained", SegmentSpec(window=12, frame_interval=0.1, n_points=5),
                  EncoderConfig(window=12, n_points=5, latent_dim=4, filters=(4, 4))).save(other)
    with pytest.raises(InstanceError, match="12 steps at 0.1 s.*10 steps at 0.1 s"):
        train_tagger(data["dataset"], tmp_path / "x", other, TrainConfig(**QUICK), log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_cli_train(data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["train", str(data["dataset"]), "--pretrained", str(data["pretrained"]), "--out", str(out),
                     "--stage1-steps", "3", "--stage2-steps", "3", "--layers", "8",
                     "--batch-size", "16", "--device", "cpu", "--seed", "1", "--post-rule", "ABC-AAC",
                     "--candidates", "network"])
    assert code == 0
    instance = ModelInstance.load(out)
    assert instance.post_rule == "ABC->AAC" and instance.classifier_config.layers == (8,)
    assert instance.provenance["seed"] == 1 and instance.provenance["chosen"] == "network"
    # a bad dataset path: one line, exit 1
    code = cli_main(["train", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "y"), "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.h5" in err[0]


# ---------------------------------------------------------------------------- settings: one name, one default
def parsed_settings(settings, argv: list[str]):
    return settings_from_args(settings, build_parser(argv[0]).parse_args(argv))


def test_cli_options_are_the_settings_fields_with_their_defaults():
    assert parsed_settings(TrainConfig, ["train", "d.h5", "--out", "o"]) == TrainConfig()
    assert parsed_settings(PretrainConfig, ["pretrain", "--train", "a.h5", "--out", "o"]) == PretrainConfig()
    assert parsed_settings(ForestConfig, ["train-forest", "d.h5", "p", "o"]) == ForestConfig()
    assert parsed_settings(TrainConfig, ["train", "d.h5", "--out", "o", "--layers", "64,32", "--class-weights", "1,2.5",
                                         "--no-mixed-precision", "--bootstrap", "--post-rule", "abc-aac"]) == \
        TrainConfig(layers=(64, 32), class_weights=(1.0, 2.5), mixed_precision=False, bootstrap=True,
                    post_rule="ABC->AAC")
    for empty in ("none", ""):
        assert parsed_settings(TrainConfig, ["train", "d.h5", "--out", "o", "--layers", empty]).layers == ()
    assert parsed_settings(PretrainConfig, ["pretrain", "--train", "a.h5", "--out", "o", "--no-interpolate",
                                            "--time-kernel", "3", "--filters", "8,4"]) == \
        PretrainConfig(interpolate=False, time_kernel=3, filters=(8, 4))
    assert parsed_settings(ForestConfig, ["train-forest", "d.h5", "p", "o", "--max-depth", "none",
                                          "--n-trees", "5"]) == ForestConfig(max_depth=None, n_trees=5)


def test_bad_option_values_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser("train").parse_args(["train", "d.h5", "--out", "o", "--layers", "64,x"])
    assert exit_.value.code == 2 and "comma-separated int" in capsys.readouterr().err
    # a value the dataclass refuses: one line, exit 2, nothing written
    code = cli_main(["train", str(tmp_path / "d.h5"), "--out", str(tmp_path / "o"), "--batch-size", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "batch_size must be >= 2" in err[0]
    assert not (tmp_path / "o").exists()


def test_stated_defaults_are_the_dataclass_defaults():
    """The settings dataclasses are the one source of the pretrain/train/forest defaults: the
    schema gives none, and what config/README.md and config/config.yaml state equals them."""
    schema = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())["properties"]
    readme = (REPO / "config/README.md").read_text()
    rows = {m[1]: yaml.safe_load(m[2]) for m in re.finditer(r"^\| `((?:pretrain|train)\.[a-z_.0-9]+)` \| `([^`]*)` \|",
                                                            readme, re.M)}
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    train = schema["train"]["properties"]
    sections = {"pretrain": (PretrainConfig(), schema["pretrain"]["properties"], config.get("pretrain", {})),
                "train": (TrainConfig(), {k: v for k, v in train.items() if k not in ("classifier", "forest")},
                          config.get("train", {})),
                "train.forest": (ForestConfig(), train["forest"]["properties"],
                                 config.get("train", {}).get("forest", {}))}

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    for section, (defaults, keys, given) in sections.items():
        for name, sub in keys.items():
            key, default = f"{section}.{name}", plain(getattr(defaults, name))
            assert "default" not in sub, f"the schema restates the default of {key}"
            assert rows[key] == default, \
                f"config/README.md gives {key} the default {rows[key]!r}, the dataclass {default!r}"
            if name in given:
                assert given[name] == default, f"config/config.yaml sets {key} to {given[name]!r}, not its default"


# ---------------------------------------------------------------------------- kinematic features
def test_kinematic_features_beside_the_latent_are_saved_standardised_and_used(data, tmp_path):
    from maggotflow.kinematics import FEATURE_NAMES, window_features

    out = tmp_path / "tagger"
    config = TrainConfig(stage1_steps=20, stage2_steps=10, batch_size=32, eval_every=10, device="cpu",
                         kinematic_features=True, augment="full", candidates=("network",))
    train_tagger(data["dataset"], out, data["pretrained"], config, log=lambda *_: None)
    back = ModelInstance.load(out)
    clf = back.classifier
    assert back.classifier_config.features == len(FEATURE_NAMES)
    assert clf.layers[0].in_features == back.encoder_config.latent_dim + len(FEATURE_NAMES)
    with Dataset.load(data["dataset"], in_memory=True) as ds:
        x = ds.segments[ds.train_indices()]
    feats = window_features(x, SPEC.frame_interval)
    # standardised on training segments: the stored mean and SD are theirs
    np.testing.assert_allclose(clf.feature_mean.numpy(), feats.mean(axis=0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(clf.feature_scale.numpy(), np.maximum(feats.std(axis=0, ddof=1), 1e-3),
                               rtol=1e-2, atol=1e-4)
    # the features change the logits: the same latent with other segments' features differs
    xt = torch.from_numpy(x[:64])
    with torch.inference_mode():
        z = back.encoder(xt)
        assert not torch.allclose(clf(z, xt), clf(z, xt.flip(0)))
        with pytest.raises(ValueError, match="pass the segments"):
            clf(z)


def test_validation_during_training_scores_a_fixed_subsample_and_the_final_choice_all(data, tmp_path):
    lines: list[str] = []
    instance = train_tagger(data["dataset"], tmp_path / "t", data["pretrained"],
                            TrainConfig(stage1_steps=5, stage2_steps=5, val_samples=100, **QUICK), log=lines.append)
    with Dataset.load(data["dataset"]) as ds:
        n_val = ds.val_indices().size
    assert n_val > 100
    assert any(f"on a fixed sample of 100 of the {n_val} validation segments" in line for line in lines)
    assert 0 <= instance.provenance["validation_seconds"] <= instance.provenance["seconds"]  # part of the loop
    assert any(line.startswith("validation during training: ") for line in lines)
    # the decision rule is fitted on every validation segment, not the subsample
    fitted = instance.provenance["candidates"]["network"]
    full = validation_predictions(instance, data["dataset"])
    cm = confusion_matrix(full[1], full[0], len(instance.labels))
    assert fitted["val_macro_f1_argmax"] == pytest.approx(macro_f1(cm), abs=1e-6)
