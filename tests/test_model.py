"""Encoder / decoder / classifier shapes and init, device choice, model instance folders."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn

from maggotflow.curves import read_curve, save_curve
from maggotflow.instance import InstanceError, ModelInstance
from maggotflow.model import (
    Classifier,
    ClassifierConfig,
    Decoder,
    Encoder,
    EncoderConfig,
    Tagger,
    count_macs,
    same_padding,
    select_device,
)
from maggotflow.segments import SegmentSpec

TINY = (8, 8, 4, 4, 4, 4)


@pytest.mark.parametrize("window", [15, 20, 30])  # 1.5 s, 2 s, 3 s at 10 Hz
@pytest.mark.parametrize("latent", [10, 25, 100])
def test_shapes_for_published_windows_and_latents(window, latent):
    config = EncoderConfig(window=window, latent_dim=latent, filters=TINY)
    encoder, decoder = Encoder(config), Decoder(config, context=1)
    x = torch.randn(3, 2, 5, window)
    z = encoder(x)
    assert z.shape == (3, latent)
    assert decoder(z).shape == (3, 2, 5, 3 * window)  # past + present + future
    assert Decoder(config, context=0)(z).shape == (3, 2, 5, window)
    for layers, n_linear in [((), 1), ((32, 16), 3)]:
        classifier = Classifier(ClassifierConfig(latent, 7, layers=layers, dropout=0.1))
        assert sum(isinstance(m, nn.Linear) for m in classifier.modules()) == n_linear
        assert Tagger(encoder, classifier)(x).shape == (3, 7)


def test_default_encoder_architecture_is_maggotuba():
    encoder = Encoder(EncoderConfig())
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 64, 32, 32, 32, 16]
    assert [c.kernel_size for c in convs] == [(5, 1), (1, 20)] * 3
    assert all(c.bias is None for c in convs)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in encoder.modules())
    block = list(encoder.blocks[0])
    assert [type(m) for m in block] == [nn.ZeroPad2d, nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert isinstance(encoder.norm, nn.BatchNorm1d)


@pytest.mark.parametrize("kernel", [(5, 20), (2, 4), (1, 15), (4, 1)])
def test_same_padding_keeps_size_for_even_and_odd_kernels(kernel):
    pad = nn.ZeroPad2d(same_padding(kernel))
    conv = nn.Conv2d(1, 1, kernel)
    assert conv(pad(torch.zeros(1, 1, 5, 15))).shape == (1, 1, 5, 15)


def test_even_kernels_in_encoder_and_decoder():
    config = EncoderConfig(window=15, body_kernel=2, time_kernel=4, filters=TINY, latent_dim=6)
    z = Encoder(config)(torch.randn(2, 2, 5, 15))
    assert Decoder(config)(z).shape == (2, 2, 5, 45)


def test_encoder_rejects_wrong_segment_shape():
    with pytest.raises(ValueError, match=r"\(B, 2, 5, 20\)"):
        Encoder(EncoderConfig(filters=TINY))(torch.randn(2, 2, 5, 15))


def _hook_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds measured on the real forward pass, per sample."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        per_out = m.in_features if isinstance(m, nn.Linear) else m.in_channels * math.prod(m.kernel_size)
        total += out.numel() // out.shape[0] * per_out

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_count_macs_matches_the_forward_pass_and_domain_figure():
    default = EncoderConfig()
    assert count_macs(default) == _hook_macs(Encoder(default), torch.randn(2, 2, 5, 20))
    assert 20e6 < count_macs(default) < 22e6  # domain.md section 7: ~21 M per segment
    other = EncoderConfig(window=15, latent_dim=100, filters=(16, 8, 8), time_kernel=4)
    assert count_macs(other) == _hook_macs(Encoder(other), torch.randn(2, 2, 5, 15))


def test_kaiming_initialisation():
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig())
    conv = encoder.blocks[1][1]  # (1, 20) kernel on 128 channels: fan-in 2560
    expected = math.sqrt(2.0 / (128 * 20))  # PyTorch's default init would give ~0.0114
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    lin = encoder.to_latent
    assert lin.weight.std().item() == pytest.approx(math.sqrt(2.0 / lin.in_features), rel=0.05)
    assert torch.count_nonzero(lin.bias) == 0
    decoder = Decoder(EncoderConfig())
    assert decoder.from_latent.weight.std().item() == pytest.approx(math.sqrt(2.0 / 25), rel=0.05)
    clf = Classifier(ClassifierConfig(100, 6, layers=(400,)))
    first = clf.layers[0]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2.0 / 100), rel=0.05)


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        select_device("cuda:1")


# ----------------------------------------------------------------------------- instances
def _spec_config(window=15):
    return SegmentSpec(window=window, frame_interval=0.1, n_points=5), EncoderConfig(
        window=window, latent_dim=6, filters=TINY)


def _touch_batchnorm(*modules, shape=(16, 2, 5, 15)):
    """Move BatchNorm running statistics away from their defaults (they are saved too)."""
    torch.manual_seed(1)
    x = torch.randn(*shape) * 3 + 1
    enc = modules[0]
    enc.train()
    z = enc(x)
    for m in modules[1:]:
        m.train()(z)


def _tagger_instance():
    spec, ec = _spec_config()
    instance = ModelInstance(
        "tagger", spec, ec,
        classifier_config=ClassifierConfig(6, 3, layers=(8,), dropout=0.2),
        labels=["run", "cast", "back"], colors=["#17becf", "#d62728", "#2ca02c"],
        post_rule="ABC->AAC", provenance={"seed": 3, "files": [{"path": "a.h5", "sha1": "ab" * 20}]},
        curves={"training": [{"epoch": 1, "train_loss": 1.5, "val_loss": 1.25, "val_f1": 0.5},
                             {"epoch": 2, "train_loss": 0.75, "val_loss": None, "val_f1": 0.625}]},
    )
    _touch_batchnorm(instance.encoder, instance.classifier)
    return instance


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tagger_instance_round_trip_is_bit_exact(tmp_path):
    instance = _tagger_instance()
    path = instance.save(tmp_path / "tagger")
    assert instance.path == path
    assert {p.name for p in path.iterdir()} == {"config.json", "provenance.json", "encoder.pt",
                                                "classifier.pt", "curves"}
    assert (path / "curves" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = ModelInstance.load(path)
    assert loaded.kind == "tagger" and loaded.path == path
    assert loaded.labels == ["run", "cast", "back"]
    assert loaded.colors == ["#17becf", "#d62728", "#2ca02c"]
    assert loaded.post_rule == "ABC->AAC"
    assert loaded.segment_spec == instance.segment_spec
    assert loaded.encoder_config == instance.encoder_config
    assert loaded.classifier_config == instance.classifier_config
    assert loaded.provenance == instance.provenance
    assert loaded.config == instance.config
    assert loaded.curves["training"][1] == {"epoch": 2, "train_loss": 0.75, "val_f1": 0.625}
    assert loaded.decoder is None and loaded.device == torch.device("cpu")
    assert _same_state(loaded.encoder, instance.encoder)
    assert _same_state(loaded.classifier, instance.classifier)
    x = torch.randn(32, 2, 5, 15)
    with torch.no_grad():
        expected = instance.tagger()(x)
        got = loaded.tagger()(x)
    assert not loaded.tagger().training
    assert torch.equal(expected, got)  # eval mode: dropout off, running BN statistics


def test_model_folders_written_with_hidden_still_load(tmp_path):
    """Before the `layers` name, config.json stored the hidden widths as `hidden`."""
    path = _tagger_instance().save(tmp_path / "tagger")
    config = json.loads((path / "config.json").read_text())
    assert config["classifier"]["layers"] == [8] and "hidden" not in config["classifier"]
    config["classifier"]["hidden"] = config["classifier"].pop("layers")
    (path / "config.json").write_text(json.dumps(config))
    assert ModelInstance.load(path).classifier_config.layers == (8,)
    assert ClassifierConfig.from_dict({"latent_dim": 6, "n_classes": 3, "hidden": [4, 2]}).layers == (4, 2)


def test_pretrained_instance_round_trip_and_no_tagger(tmp_path):
    spec, ec = _spec_config(window=20)
    instance = ModelInstance("pretrained", spec, ec, decoder_context=1)
    _touch_batchnorm(instance.encoder, instance.decoder, shape=(16, 2, 5, 20))
    instance.save(tmp_path / "pre")
    loaded = ModelInstance.load(tmp_path / "pre", device="cpu")
    assert loaded.kind == "pretrained" and loaded.classifier is None and loaded.decoder_context == 1
    x = torch.randn(8, 2, 5, 20)
    with torch.no_grad():
        instance.encoder.eval(), instance.decoder.eval()
        assert torch.equal(loaded.decoder(loaded.encoder(x)), instance.decoder(instance.encoder(x)))
    with pytest.raises(InstanceError, match="without classifier"):
        loaded.tagger()


def test_instance_rejects_inconsistent_configs():
    spec, ec = _spec_config(window=15)
    with pytest.raises(ValueError, match="does not match"):
        ModelInstance("pretrained", SegmentSpec(window=20), ec)
    with pytest.raises(ValueError, match="labels"):
        ModelInstance("tagger", spec, ec, classifier_config=ClassifierConfig(6, 3), labels=["run"])
    with pytest.raises(ValueError, match="post_rule"):
        ModelInstance("pretrained", spec, ec, post_rule="ABA")


def test_save_replaces_an_instance_but_never_a_foreign_folder(tmp_path):
    target = tmp_path / "model"
    first = _tagger_instance()
    first.save(target)
    second = _tagger_instance()
    second.labels = ["run", "cast", "hunch"]
    second.save(target)
    assert ModelInstance.load(target).labels == ["run", "cast", "hunch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers

    foreign = tmp_path / "my_data"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a maggotflow model instance"):
        first.save(foreign)
    assert (foreign / "notes.txt").read_text() == "precious"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        first.save(a_file)


def test_failed_save_leaves_previous_instance_untouched(tmp_path, monkeypatch):
    target = tmp_path / "model"
    _tagger_instance().save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    calls = []

    def failing_save(obj, f, *a, **k):
        calls.append(f)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _tagger_instance().save(target)
    assert calls
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(OSError):
        _tagger_instance().save(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def _assert_one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    text = str(err.value)
    assert text.startswith(f"{path}: ")
    assert "\n" not in text
    assert isinstance(err.value, ValueError)


def test_load_failures_name_the_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InstanceError, match="not found") as err:
        ModelInstance.load(missing)
    _assert_one_line_naming(err, missing)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    with pytest.raises(InstanceError, match="not a maggotflow model instance") as err:
        ModelInstance.load(foreign)
    _assert_one_line_naming(err, foreign)

    original = tmp_path / "maggotuba"
    original.mkdir()
    (original / "autoencoder_config.json").write_text("{}")
    with pytest.raises(InstanceError, match="MaggotUBA-adapter") as err:
        ModelInstance.load(original)

    other_json = tmp_path / "other_json"
    other_json.mkdir()
    (other_json / "config.json").write_text('{"format_version": 1, "kind": "tagger"}')
    with pytest.raises(InstanceError, match="not written by maggotflow") as err:
        ModelInstance.load(other_json)
    _assert_one_line_naming(err, other_json)


def _copy_of(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_failures_on_damaged_instances(tmp_path):
    good = _tagger_instance().save(tmp_path / "good")

    future = _copy_of(good, tmp_path / "future")
    config = json.loads((future / "config.json").read_text())
    config["format_version"] = 99
    (future / "config.json").write_text(json.dumps(config))
    with pytest.raises(InstanceError, match="format_version 99") as err:
        ModelInstance.load(future)
    _assert_one_line_naming(err, future)

    bad_json = _copy_of(good, tmp_path / "bad_json")
    (bad_json / "config.json").write_text('{"format_version": 1,')
    with pytest.raises(InstanceError, match="not readable JSON") as err:
        ModelInstance.load(bad_json)
    _assert_one_line_naming(err, bad_json)

    truncated = _copy_of(good, tmp_path / "truncated")
    data = (truncated / "encoder.pt").read_bytes()
    (truncated / "encoder.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InstanceError, match="encoder.pt is damaged") as err:
        ModelInstance.load(truncated)
    _assert_one_line_naming(err, truncated)

    no_clf = _copy_of(good, tmp_path / "no_clf")
    os.remove(no_clf / "classifier.pt")
    with pytest.raises(InstanceError, match="classifier.pt is missing") as err:
        ModelInstance.load(no_clf)
    _assert_one_line_naming(err, no_clf)

    mismatch = _copy_of(good, tmp_path / "mismatch")
    config = json.loads((mismatch / "config.json").read_text())
    config["encoder"]["latent_dim"] = 7
    config["classifier"]["latent_dim"] = 7
    (mismatch / "config.json").write_text(json.dumps(config))
    with pytest.raises(InstanceError, match="encoder.pt does not match") as err:
        ModelInstance.load(mismatch)
    _assert_one_line_naming(err, mismatch)

    incomplete = _copy_of(good, tmp_path / "incomplete")
    config = json.loads((incomplete / "config.json").read_text())
    del config["segment_spec"]
    (incomplete / "config.json").write_text(json.dumps(config))
    with pytest.raises(InstanceError, match="incomplete or invalid") as err:
        ModelInstance.load(incomplete)
    _assert_one_line_naming(err, incomplete)

    pickled = _copy_of(good, tmp_path / "pickled")
    # A pickle that would run code on load must be refused (weights_only loading).
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (pickled / "encoder.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InstanceError, match="encoder.pt is damaged"):
        ModelInstance.load(pickled)


def test_save_curve_writes_csv_and_png(tmp_path):
    rows = [{"step": 0, "train_loss": None, "val_loss": 1.0},
            {"step": 10, "train_loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.75},
            {"step": 20, "train_loss": float("nan"), "val_loss": 0.0125}]
    csv_path, png_path = save_curve(rows, tmp_path / "curves", "pretraining", title="demo")
    assert csv_path.read_text().splitlines() == [
        "step,train_loss,val_loss,val_accuracy", "0,,1.0,", "10,0.5,0.25,0.75", "20,,0.0125,"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_curve(csv_path) == [{"step": 0, "val_loss": 1.0},
                                    {"step": 10, "train_loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.75},
                                    {"step": 20, "val_loss": 0.0125}]
    assert sorted(p.name for p in (tmp_path / "curves").iterdir()) == ["pretraining.csv", "pretraining.png"]
