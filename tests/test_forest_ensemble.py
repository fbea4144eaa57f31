"""Preset building blocks: native-frame segments, the random-forest tagger, bagged ensembles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from maggotflow.dataset import build_dataset
from maggotflow.ensemble import Ensemble, assemble, load_model
from maggotflow.instance import InstanceError, ModelInstance
from maggotflow.model import ClassifierConfig, EncoderConfig, ForestClassifier
from maggotflow.prediction import Predictor
from maggotflow.segments import SegmentSpec, build_segments, valid_centres
from maggotflow.tracks import Track
from maggotflow.training import TrainConfig, train_tagger

from helpers import QUICK, SPEC, behaving_larva, tiny_pretrained, write_experiments


# ---------------------------------------------------------------------------- native frames
def test_native_frames_take_consecutive_frames_whatever_the_frame_rate():
    rng = np.random.default_rng(0)
    track = behaving_larva("1", rng, fps=30.0, duration=5.0)
    native = SegmentSpec(window=10, frame_interval=0.1, n_points=5, interpolate=False)
    other_interval = SegmentSpec(window=10, frame_interval=0.5, n_points=5, interpolate=False)
    seg = build_segments(track, native)
    np.testing.assert_array_equal(seg, build_segments(track, other_interval))  # interval is only nominal
    # A window of 10 native frames at 30 fps spans 0.3 s; the same window resampled at 10 Hz spans 1 s.
    interpolated = build_segments(track, SegmentSpec(window=10, frame_interval=0.1, n_points=5))
    assert not np.allclose(seg, interpolated, atol=1e-3)
    # Frame i of the window centred on step c is frame c - 5 + i: shift the track by one frame.
    shifted = Track("1", track.t[1:], track.spine[1:])
    c = 40
    a = build_segments(track, native, centres=track.t[[c]], length=3.0)
    b = build_segments(shifted, native, centres=shifted.t[[c - 1]], length=3.0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    mask = valid_centres(track, native)
    assert not mask[:5].any() and mask[5:-4].all() and not mask[-4:].any()


# ---------------------------------------------------------------------------- forest
def test_forest_module_reproduces_scikit_learn_probabilities():
    sklearn = pytest.importorskip("sklearn.ensemble")
    from maggotflow.forest import forest_to_module

    rng = np.random.default_rng(1)
    z = rng.normal(size=(600, 6)).astype(np.float32)
    y = (z[:, 0] > 0).astype(int) + 2 * (z[:, 1] > 0.5)  # classes 0..3; class 3 made absent below
    y[y == 3] = 2
    forest = sklearn.RandomForestClassifier(n_estimators=7, max_depth=6, random_state=0).fit(z, y)
    module = forest_to_module(forest, n_classes=4, latent_dim=6)
    test = rng.normal(size=(300, 6)).astype(np.float32)
    ours = module(torch.from_numpy(test)).numpy()
    theirs = forest.predict_proba(test)  # columns: classes 0, 1, 2 (3 never seen)
    np.testing.assert_allclose(ours[:, :3], theirs, atol=1e-5)
    assert np.all(ours[:, 3] == 0)


def test_forest_tagger_trains_saves_and_predicts(tmp_path):
    pytest.importorskip("sklearn")
    from maggotflow.forest import ForestConfig, train_forest

    intermediates = write_experiments(tmp_path)
    dataset = tmp_path / "dataset.h5"
    build_dataset(intermediates, dataset, spec=SPEC, max_samples=900, seed=0).close()
    pretrained = tiny_pretrained(tmp_path / "pretrained", dataset)
    instance = train_forest(dataset, tmp_path / "forest", pretrained, ForestConfig(n_trees=10, device="cpu"),
                            log=lambda m: None)
    assert instance.provenance["best"]["val_macro_f1"] > 0.5  # run / back / stop from posture dynamics
    loaded = ModelInstance.load(tmp_path / "forest")
    assert loaded.classifier_config.kind == "random_forest" and loaded.labels == instance.labels
    assert loaded.domain is not None and loaded.domain.to_dict() == instance.domain.to_dict()  # domain check
    assert torch.equal(loaded.encoder.state_dict()["blocks.0.1.weight"],
                       ModelInstance.load(pretrained).encoder.state_dict()["blocks.0.1.weight"])  # frozen
    predictor = Predictor(tmp_path / "forest", device="cpu")
    from maggotflow.isolation import read_isolated

    run = read_isolated(intermediates[0])
    labels = predictor.predict_run(run)
    assert {len(v) for v in labels.values()} == {run.tracks[0].n_steps}
    assert set().union(*map(set, labels.values())) <= set(instance.labels)


# ---------------------------------------------------------------------------- ensemble
@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three bagged members on 10-step windows and one on 6-step windows, tiny budgets."""
    folder = tmp_path_factory.mktemp("ensemble")
    intermediates = write_experiments(folder)
    out = []
    for window, seeds in ((10, (0, 1, 2)), (6, (3,))):
        spec = SegmentSpec(window=window, frame_interval=0.1, n_points=5)
        dataset = folder / f"dataset{window}.h5"
        build_dataset(intermediates, dataset, spec=spec, max_samples=900, seed=0).close()
        torch.manual_seed(window)
        encoder = EncoderConfig(window=window, n_points=5, latent_dim=4, filters=(8, 8, 4, 4, 4, 4))
        pretrained = ModelInstance("pretrained", spec, encoder).save(folder / f"pretrained{window}")
        for seed in seeds:
            # members vote per step (an ensemble uses no temporal decoder): per-step members
            config = TrainConfig(stage1_steps=20, stage2_steps=20, lr_stage1=1e-2, lr_stage2=3e-3, seed=seed,
                                 bootstrap=True, decoding="argmax", **QUICK)
            out.append(train_tagger(dataset, folder / f"member{seed}", pretrained, config, log=lambda m: None).path)
    return {"folder": folder, "paths": out, "intermediates": intermediates}


def test_bootstrap_members_differ(members):
    a, b = (ModelInstance.load(p) for p in members["paths"][:2])
    assert not torch.equal(a.classifier.state_dict()["layers.0.weight"], b.classifier.state_dict()["layers.0.weight"])


def test_ensemble_round_trip_and_majority_vote(members, tmp_path):
    from maggotflow.isolation import read_isolated

    paths = members["paths"]
    ensemble = assemble(paths, tmp_path / "ens", post_rule="ABC->AAC")
    config = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert config["kind"] == "ensemble" and len(config["members"]) == 4 and config["post_rule"] == "ABC->AAC"
    loaded = load_model(tmp_path / "ens")
    assert isinstance(loaded, Ensemble) and loaded.labels == ensemble.labels
    with pytest.raises(InstanceError, match="ensemble"):
        ModelInstance.load(tmp_path / "ens")

    run = read_isolated(members["intermediates"][0])
    predictor = Predictor(tmp_path / "ens", device="cpu")
    assert len(predictor.specs) == 2  # two windows, each built once
    voted = predictor.predict_run(run)
    # The vote by hand, member by member, then the post-rule.
    from maggotflow.postrule import apply_post_rule

    singles = [Predictor(p, device="cpu").predict_run(run) for p in paths]
    labels = ensemble.labels
    for larva, steps in voted.items():
        counts = np.zeros((len(steps), len(labels)))
        for single in singles:
            counts[np.arange(len(steps)), [labels.index(x) for x in single[larva]]] += 1
        top = counts.max(axis=1)
        chosen = np.array([labels.index(x) for x in steps])
        unanimous_or_clear = (counts == top[:, None]).sum(axis=1) == 1
        expected = apply_post_rule(counts.argmax(axis=1))
        # where the majority is clear and the post-rule changes nothing, the vote is the majority
        keep = unanimous_or_clear & (expected == counts.argmax(axis=1))
        assert keep.mean() > 0.5  # the check covers most steps
        np.testing.assert_array_equal(chosen[keep], expected[keep])


def test_ensemble_of_one_equals_its_member(members, tmp_path):
    from maggotflow.isolation import read_isolated

    run = read_isolated(members["intermediates"][1])
    assemble(members["paths"][:1], tmp_path / "one")
    assert Predictor(tmp_path / "one", device="cpu").predict_run(run) == \
        Predictor(members["paths"][0], device="cpu").predict_run(run)


def test_ensemble_members_must_share_labels(members, tmp_path):
    other = ModelInstance.load(members["paths"][0])
    other.labels = ["a", "b", "c"]
    other.save(tmp_path / "other")
    with pytest.raises(InstanceError, match="share their labels"):
        assemble([members["paths"][1], tmp_path / "other"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_ensemble_predict_is_the_members_vote(members, tmp_path):
    """The vote is the ensemble's own (`Ensemble.predict`), with a tagger's interface."""
    ensemble = Ensemble([ModelInstance.load(p) for p in members["paths"]])
    assert [s.window for s in ensemble.segment_specs] == [10, 6]
    torch.manual_seed(0)
    segments = [torch.randn(64, 2, 5, spec.window) for spec in ensemble.segment_specs]
    with torch.inference_mode():
        classes, probabilities = ensemble.predict(segments)
        singles = [m.predict([segments[ensemble.segment_specs.index(m.segment_spec)]]) for m in ensemble.members]
    k = len(ensemble.labels)
    votes = sum(torch.nn.functional.one_hot(c, k) for c, _ in singles).float()
    summed = sum(p for _, p in singles)
    top = votes.max(dim=1, keepdim=True).values
    # the most votes, and among tied labels the highest summed probability
    expected = torch.where(votes == top, summed, torch.full_like(summed, -1.0)).argmax(dim=1)
    assert torch.equal(classes, expected)
    torch.testing.assert_close(probabilities, summed / len(singles))
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(64))
    one = Ensemble(ensemble.members[:1])
    with torch.inference_mode():
        assert torch.equal(one.predict(segments[:1])[0], singles[0][0])


def test_ensemble_folder_checks_match_a_taggers(members, tmp_path):
    """An ensemble's post-rule and provenance are checked like a tagger's (they used not to be)."""
    assemble(members["paths"][:2], tmp_path / "ens")
    bad_rule = tmp_path / "bad_rule"
    shutil.copytree(tmp_path / "ens", bad_rule)
    config = json.loads((bad_rule / "config.json").read_text())
    (bad_rule / "config.json").write_text(json.dumps({**config, "post_rule": "sometimes"}))
    with pytest.raises(InstanceError, match="post_rule must be one of"):
        load_model(bad_rule)
    with pytest.raises(ValueError, match="post_rule"):
        Ensemble([ModelInstance.load(members["paths"][0])], post_rule="abc->aac")  # not normalised
    bad_provenance = tmp_path / "bad_provenance"
    shutil.copytree(tmp_path / "ens", bad_provenance)
    (bad_provenance / "provenance.json").write_text("{")
    with pytest.raises(InstanceError, match="provenance.json is not readable JSON") as err:
        load_model(bad_provenance)
    assert str(err.value).startswith(f"{bad_provenance}: ")


def test_cli_ensemble(members, tmp_path, capsys):
    from maggotflow.cli import main

    out = tmp_path / "ens"
    assert main(["ensemble", str(out), *map(str, members["paths"][:2]), "--post-rule", "ABC-AAC"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote ensemble of 2 taggers to {out}"
    assert load_model(out).post_rule == "ABC->AAC"
    assert main(["ensemble", str(tmp_path / "bad"), str(members["paths"][0]), "--post-rule", "ABA"]) == 2
    assert capsys.readouterr().err.strip() == \
        "maggotflow ensemble: error: unknown post rule 'ABA': use ABC->AAC or none"
    assert main(["ensemble", str(tmp_path / "bad"), str(tmp_path / "nowhere")]) == 1
    assert "no model instance there" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_forest_config_checks():
    with pytest.raises(ValueError):
        ClassifierConfig(latent_dim=4, n_classes=3, kind="random_forest")  # no trees
    with pytest.raises(ValueError):
        ClassifierConfig(latent_dim=4, n_classes=3, kind="boosting")
    module = ForestClassifier(ClassifierConfig(latent_dim=4, n_classes=3, kind="random_forest", n_trees=2,
                                               n_nodes=1, depth=0))
    np.testing.assert_allclose(module(torch.zeros(5, 4)).numpy(), 1 / 3)  # untrained: uniform
