"""Model config.json bounds: a crafted or mistyped size fails in one line, before anything is allocated.

Every size of config.json (segment, encoder, classifier, decoder, ensemble members) is
checked by `check_model_folder` (the workflow's up-front model check, prediction, and
`ModelInstance.load`) against the bounds of `maggotflow.model`, and so is the number of
weights that sizes legal one by one multiply into.
"""

import json
import shutil

import pytest
import torch

from maggotflow.ensemble import Ensemble, load_model
from maggotflow.instance import InstanceError, ModelInstance, check_model_folder
from maggotflow.model import (MAX_WEIGHTS, ClassifierConfig, Decoder, Encoder, EncoderConfig, build_classifier,
                              count_weights)
from maggotflow.segments import SegmentSpec


def tiny_instance(kind="tagger"):
    encoder = EncoderConfig(window=6, n_points=3, latent_dim=4, filters=(4, 4), body_kernel=2)
    classifier = ClassifierConfig(4, 2, layers=(3,)) if kind == "tagger" else None
    return ModelInstance(kind, SegmentSpec(window=6, n_points=3), encoder, classifier_config=classifier,
                         labels=["run", "cast"] if kind == "tagger" else None)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    return {"tagger": tiny_instance().save(root / "tagger"),
            "pretrained": tiny_instance("pretrained").save(root / "pretrained"),
            "ensemble": Ensemble([tiny_instance(), tiny_instance()]).save(root / "ensemble")}


def crafted(folders, tmp_path, change, kind="tagger", config="config.json"):
    """A copy of a good model folder whose config.json (or a member's) `change` edited in place."""
    folder = shutil.copytree(folders[kind], tmp_path / f"crafted-{kind}")
    data = json.loads((folder / config).read_text())
    change(data)
    (folder / config).write_text(json.dumps(data))
    return folder


def set_value(section, key, value):
    def change(config):
        config[section][key] = value
    return change


CASES = [
    # (kind, section, key, value, problem after "config.json: ")
    ("tagger", "segment_spec", "window", 100_000_000, "segment window 100000000 is out of range (2..1000)"),
    ("tagger", "segment_spec", "n_points", 0, "segment n_points 0 is out of range (2..100)"),
    ("tagger", "segment_spec", "frame_interval", "fast", "segment frame_interval 'fast' is not a number > 0"),
    ("tagger", "segment_spec", "frame_interval", -0.1, "segment frame_interval -0.1 is not a number > 0"),
    ("tagger", "encoder", "filters", [4, 60000], "encoder filters 60000 is out of range (1..1024)"),
    ("tagger", "encoder", "filters", [4] * 40, "encoder blocks 40 is out of range (1..32)"),
    ("tagger", "encoder", "filters", "4,4", "encoder filters '4,4' is not a list of whole numbers"),
    ("tagger", "encoder", "window", 6.5, "encoder window 6.5 is not a whole number"),
    ("tagger", "encoder", "window", 1e8, "encoder window 100000000.0 is not a whole number"),
    ("tagger", "encoder", "window", 100_000_000, "encoder window 100000000 is out of range (1..1000)"),
    ("tagger", "encoder", "latent_dim", -5, "encoder latent_dim -5 is out of range (1..1024)"),
    ("tagger", "encoder", "latent_dim", "25", "encoder latent_dim '25' is not a whole number"),
    ("tagger", "encoder", "time_kernel", True, "encoder time_kernel True is not a whole number"),
    ("tagger", "encoder", "body_kernel", 10**6, "encoder body_kernel 1000000 is out of range (1..100)"),
    ("tagger", "classifier", "n_classes", "7", "classifier n_classes '7' is not a whole number"),
    ("tagger", "classifier", "layers", [100_000], "classifier layers 100000 is out of range (1..1024)"),
    ("tagger", "classifier", "layers", [-3], "classifier layers -3 is out of range (1..1024)"),
    ("tagger", "classifier", "features", 10**9, "classifier features 1000000000 is out of range (0..1024)"),
    ("pretrained", "decoder", "context", 1000, "decoder context 1000 is out of range (0..10)"),
    ("pretrained", "decoder", "context", -1, "decoder context -1 is out of range (0..10)"),
]


@pytest.mark.parametrize("kind, section, key, value, problem", CASES, ids=[f"{c[2]}={c[3]!r}"[:40] for c in CASES])
def test_an_out_of_bounds_size_is_one_line_before_anything_is_allocated(folders, tmp_path, kind, section, key,
                                                                        value, problem):
    folder = crafted(folders, tmp_path, set_value(section, key, value), kind)
    for check in (check_model_folder, ModelInstance.load):
        with pytest.raises(InstanceError) as err:
            check(folder, kinds=(kind,)) if check is check_model_folder else check(folder)
        assert str(err.value) == f"{folder}: config.json: {problem}"


def test_a_random_forest_of_absurd_size(folders, tmp_path):
    forest = {"latent_dim": 4, "n_classes": 2, "kind": "random_forest", "n_trees": 100, "n_nodes": 10**9,
              "depth": 20}
    folder = crafted(folders, tmp_path, lambda c: c.update(classifier={**c["classifier"], **forest, "layers": []}))
    with pytest.raises(InstanceError) as err:
        check_model_folder(folder)
    assert str(err.value) == f"{folder}: config.json: classifier n_nodes 1000000000 is out of range (1..10000000)"


def test_sizes_legal_one_by_one_cannot_multiply_into_terabytes(folders, tmp_path):
    def huge(config):
        config["segment_spec"]["window"] = config["encoder"]["window"] = 1000
        config["encoder"]["filters"] = [1024] * 6
    folder = crafted(folders, tmp_path, huge)
    encoder = EncoderConfig(window=1000, n_points=3, latent_dim=4, filters=(1024,) * 6, body_kernel=2)
    weights = count_weights(encoder, ClassifierConfig(4, 2, layers=(3,)))
    assert weights > MAX_WEIGHTS
    for check in (check_model_folder, ModelInstance.load, load_model):
        with pytest.raises(InstanceError) as err:
            check(folder)
        assert str(err.value) == f"{folder}: config.json: the model it describes has {weights:,} weights, " \
                                 f"more than maggotflow loads ({MAX_WEIGHTS:,})"


def test_an_ensembles_members_are_checked_with_it(folders, tmp_path):
    folder = crafted(folders, tmp_path, set_value("segment_spec", "window", 10**8), "ensemble",
                     config="members/001/config.json")
    for check in (check_model_folder, load_model):
        with pytest.raises(InstanceError) as err:
            check(folder)
        assert str(err.value) == \
            f"{folder / 'members' / '001'}: config.json: segment window 100000000 is out of range (2..1000)"

    def escape(config):
        config["members"] = ["members/000", "../tagger"]
    outside = crafted(folders, tmp_path / "b", escape, "ensemble")
    with pytest.raises(InstanceError) as err:
        check_model_folder(outside)
    assert str(err.value) == f"{outside}: config.json: ensemble member '../tagger' is not a folder inside the ensemble"

    def thousands(config):
        config["members"] = ["members/000"] * 5000
    many = crafted(folders, tmp_path / "c", thousands, "ensemble")
    with pytest.raises(InstanceError) as err:
        check_model_folder(many)
    assert str(err.value) == f"{many}: config.json: ensemble members 5000 is out of range (1..1000)"


def test_good_folders_still_load(folders):
    for kind in ("tagger", "pretrained"):
        assert check_model_folder(folders[kind], kinds=(kind,))["kind"] == kind
        assert ModelInstance.load(folders[kind]).kind == kind
    assert len(load_model(folders["ensemble"]).members) == 2


@pytest.mark.parametrize("encoder", [
    EncoderConfig(),
    EncoderConfig(window=15, latent_dim=100, filters=(16, 8, 8), time_kernel=4),
    EncoderConfig(window=7, n_points=3, filters=(4,), body_kernel=2),
])
def test_count_weights_is_the_size_of_the_state_dicts(encoder):
    def numbers(*modules):
        return sum(t.numel() for m in modules for t in m.state_dict().values())

    assert count_weights(encoder) == numbers(Encoder(encoder))
    for context in (0, 1, 2):
        assert count_weights(encoder, decoder_context=context) == numbers(Encoder(encoder), Decoder(encoder, context))
    for classifier in (ClassifierConfig(encoder.latent_dim, 6),
                       ClassifierConfig(encoder.latent_dim, 7, layers=(128, 5), features=36, dropout=0.1),
                       ClassifierConfig(encoder.latent_dim, 4, kind="random_forest", n_trees=3, n_nodes=9, depth=3)):
        assert count_weights(encoder, classifier) == numbers(Encoder(encoder), build_classifier(classifier))


def test_the_default_tagger_is_far_below_the_bound():
    default = count_weights(EncoderConfig(), ClassifierConfig(25, 7, layers=(128,), features=36))
    assert default < MAX_WEIGHTS / 1000
    assert torch.finfo(torch.float32).bits * MAX_WEIGHTS / 8 < 2 * 1024**3  # < 2 GB as float32
