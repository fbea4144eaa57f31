"""The boosting tagger kind and the default tagger's choice between candidates on validation.

Boosted trees are fitted with scikit-learn and copied into tensors (`maggotflow.boosting`):
their logits must be scikit-learn's, they must survive a save and load without pickles,
and prediction must not need the encoder when the trees split on kinematic features alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from maggotflow.boosting import ABSENT_CLASS_LOGIT, trees_to_module
from maggotflow.cli import main as cli_main
from maggotflow.dataset import Dataset, build_dataset
from maggotflow.ensemble import assemble, load_model
from maggotflow.formats.label import read_label_file
from maggotflow.instance import ModelInstance
from maggotflow.prediction import predict_files
from maggotflow.training import TrainConfig, train_tagger

from helpers import QUICK, SPEC, tiny_pretrained, write_experiments

NETWORK = {k: v for k, v in QUICK.items() if k != "candidates"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boosting")
    intermediates = write_experiments(folder, behaviours=("run", "back", "stop"))
    dataset = folder / "dataset.h5"
    build_dataset(intermediates, dataset, spec=SPEC, max_samples=900, seed=0).close()
    pretrained = tiny_pretrained(folder / "pretrained", dataset)
    return {"folder": folder, "intermediates": intermediates, "dataset": dataset, "pretrained": pretrained}


@pytest.fixture(scope="module")
def chosen(data):
    """A default tagger: network, boosting and combined fitted, the best kept."""
    out = data["folder"] / "default"
    lines: list[str] = []
    train_tagger(data["dataset"], out, data["pretrained"],
                 TrainConfig(stage1_steps=10, stage2_steps=10, **NETWORK), log=lines.append)
    return out, lines


@pytest.mark.parametrize("classes", [(0, 1, 2, 3), (0, 2, 3), (1, 3)])
def test_copied_trees_give_scikit_learns_logits(classes):
    """Multi-class, a dataset class missing from training, and two classes (one tree per round)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 36)).astype(np.float32)
    y = np.asarray(classes)[np.digitize(x[:, 0] + 0.5 * x[:, 1], np.linspace(-1, 1, len(classes) - 1))]
    model = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(x, y)
    module = trees_to_module(model, 4, 1, False, 0.1)
    test = rng.normal(size=(500, 36)).astype(np.float32)
    logits = module.logits(torch.from_numpy(test)).numpy()
    reference = model.decision_function(test)
    if len(classes) == 2:  # scikit-learn gives the logit of the second class against the first
        np.testing.assert_allclose(logits[:, classes[1]] - logits[:, classes[0]], reference, atol=1e-5)
    else:
        np.testing.assert_allclose(logits[:, list(classes)], reference, atol=1e-5)
    absent = [c for c in range(4) if c not in classes]
    assert np.all(logits[:, absent] == ABSENT_CLASS_LOGIT)
    np.testing.assert_array_equal(np.asarray(classes)[model.predict_proba(test).argmax(1)], logits.argmax(1))


def test_the_default_tagger_keeps_the_best_candidate_on_validation_and_records_them(chosen):
    out, lines = chosen
    provenance = json.loads((out / "provenance.json").read_text())
    candidates = provenance["candidates"]
    assert list(candidates) == ["network", "boosting", "combined"]
    best = max(candidates, key=lambda name: candidates[name]["val_macro_f1"])
    assert candidates[best]["val_macro_f1"] == max(c["val_macro_f1"] for c in candidates.values())
    assert provenance["chosen"] == next(n for n in candidates if candidates[n]["val_macro_f1"] ==
                                        candidates[best]["val_macro_f1"])  # the first on a tie
    assert all(0 <= c["val_macro_f1"] <= 1 for c in candidates.values())
    # A candidate's time is what it took to obtain it: the network's includes the training loop.
    assert candidates["network"]["seconds"] >= provenance["seconds"]
    assert provenance["epochs"] == pytest.approx(20 * 32 / 600, abs=1e-3)
    assert any(line.startswith("budget: 20 steps of 32 segments = 1.07 epochs") for line in lines)
    assert any(line.startswith("candidates on validation") and f"kept {provenance['chosen']}" in line
               for line in lines)
    config = json.loads((out / "config.json").read_text())
    kind = {"network": "dense", "boosting": "boosting", "combined": "boosting"}[provenance["chosen"]]
    assert config["classifier"]["kind"] == kind
    # on these larvae (run/back/stop by the speed along the body) trees on kinematic
    # features are near perfect, and the choice must see it
    assert candidates[provenance["chosen"]]["val_macro_f1"] > 0.9


def test_a_saved_boosting_tagger_predicts_as_trained_without_pickles(data, chosen, tmp_path):
    out, _ = chosen
    for name in ("classifier.pt", "encoder.pt"):  # plain tensors: loadable with weights_only
        torch.load(out / name, weights_only=True)
    instance = ModelInstance.load(out)
    with Dataset.load(data["dataset"], in_memory=True) as ds:
        x = torch.from_numpy(ds.segments[ds.val_indices()])
    with torch.inference_mode():
        classes, probabilities = instance.predict([x])
    assert torch.allclose(probabilities.sum(1), torch.ones(len(x)), atol=1e-5)
    labels = predict_files(out, data["intermediates"][:1], out_dir=tmp_path, device="cpu")
    tracks = read_label_file(labels[0]).tracks
    assert tracks and all(step[0] in instance.labels for _, steps in tracks.values() for step in steps)


def test_the_boosting_kind_trains_no_network_and_never_runs_an_encoder(data, tmp_path, monkeypatch):
    out = tmp_path / "boosting"
    code = cli_main(["train", str(data["dataset"]), "--out", str(out), "--candidates", "boosting",
                     "--device", "cpu", "--seed", "3"])
    assert code == 0
    instance = ModelInstance.load(out)
    assert instance.classifier_config.kind == "boosting" and not instance.classifier_config.use_latent
    assert instance.provenance["chosen"] == "boosting" and "network" not in instance.provenance["candidates"]

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran")

    monkeypatch.setattr(instance.encoder, "forward", no_encoder)
    with Dataset.load(data["dataset"], in_memory=True) as ds:
        x, truth = torch.from_numpy(ds.segments[ds.val_indices()]), ds.label[ds.val_indices()]
    with torch.inference_mode():
        classes, _ = instance.predict([x])
    assert (classes.numpy() == truth).mean() > 0.9


def test_boosting_taggers_vote_in_an_ensemble(data, tmp_path):
    members = []
    for seed in (0, 1):
        members.append(tmp_path / f"m{seed}")
        train_tagger(data["dataset"], members[-1], None, TrainConfig(candidates=("boosting",), seed=seed,
                                                                     device="cpu"), log=lambda *_: None)
    assemble(members, tmp_path / "ensemble")
    labels = predict_files(load_model(tmp_path / "ensemble"), data["intermediates"][:1], out_dir=tmp_path / "out",
                           device="cpu")
    label = read_label_file(labels[0])
    assert label.tracks
    # Each member was saved with the domain check's reference; the ensemble's labels use it.
    assert all(ModelInstance.load(m).domain is not None for m in members)
    assert label.metadata["maggotflow"]["domain_check"]["verdict"] in ("ok", "unlike_training")
