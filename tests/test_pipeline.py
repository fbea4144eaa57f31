"""maggotflow.pipeline.train_classifier: the workflow's `train` settings -> the tagger they name."""

from __future__ import annotations

import pytest

from maggotflow.dataset import build_dataset
from maggotflow.instance import ModelInstance
from maggotflow.pipeline import train_classifier

from helpers import QUICK, SPEC, tiny_pretrained, write_experiments


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    dataset = folder / "dataset.h5"
    build_dataset(write_experiments(folder, n_files=2), dataset, spec=SPEC, max_samples=600, seed=0).close()
    return {"dataset": dataset, "pretrained": tiny_pretrained(folder / "pretrained", dataset)}


def test_dense_settings_fine_tune_with_the_given_keys(data, tmp_path, one_torch_thread):
    settings = {k: v for k, v in QUICK.items() if k not in ("device", "latent_dim", "filters")}
    settings.update(stage1_steps=10, stage2_steps=10, seed=3)
    train_classifier(data["dataset"], tmp_path / "tagger", data["pretrained"], settings, device="cpu",
                     log_line=lambda line: None)
    tagger = ModelInstance.load(tmp_path / "tagger")
    assert tagger.classifier_config.kind == "dense"
    assert tagger.provenance["seed"] == 3


def test_random_forest_settings_train_a_forest_on_the_frozen_encoder(data, tmp_path, one_torch_thread):
    pytest.importorskip("sklearn")
    settings = {"classifier": "random_forest", "forest": {"n_trees": 5}, "seed": 1}
    train_classifier(data["dataset"], tmp_path / "forest", data["pretrained"], settings, device="cpu",
                     log_line=lambda line: None)
    forest = ModelInstance.load(tmp_path / "forest")
    assert forest.classifier_config.kind == "random_forest"
