"""Self-supervised pretraining on synthetic crawling larvae written as intermediates."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from maggotflow.cli import main
from maggotflow.curves import read_curve
from maggotflow.instance import ModelInstance
from maggotflow.isolation import read_isolated, write_isolated
from maggotflow.model import Decoder, Encoder
from maggotflow.pretraining import PretrainConfig, pretrain, sample_segments
from maggotflow.segments import build_segments, valid_centres
from maggotflow.tracks import Run, Track, TrackDataError

TINY = dict(window=10, latent_dim=4, filters=(8, 8, 4, 4, 4, 4), batch_size=32, eval_every=20,
            val_batches=40, device="cpu")


def crawling_larva(larva_id: str, rng: np.random.Generator, duration: float = 20.0, fps: float = 15.0,
                   k: int = 11) -> Track:
    """A larva crawling forward with peristaltic strides and slow side-to-side bending.

    Spine of `k` points, tail -> head, in mm; times start at a random offset, with jitter.
    """
    n = int(duration * fps)
    t = rng.uniform(0, 5) + np.arange(n) / fps + rng.normal(0, 0.002, n)
    t = np.sort(np.round(t, 4))
    stride = 2 * np.pi * rng.uniform(1.0, 1.6) * t + rng.uniform(0, 2 * np.pi)
    bend = 0.8 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    heading = rng.uniform(0, 2 * np.pi) + 0.2 * np.cumsum(bend) / fps
    speed = 0.8 * (1 + np.sin(stride))  # mm/s, zero at the end of each stride
    dt = np.gradient(t)
    head = np.cumsum(speed[:, None] * dt[:, None] * np.stack([np.cos(heading), np.sin(heading)], 1), 0)
    length = 3.5 * (1 + 0.08 * np.cos(stride))  # mm, the body contracts during a stride
    s = np.linspace(1.0, 0.0, k)  # tail (1) -> head (0), as a fraction of the length back from the head
    angle = heading[:, None] + bend[:, None] * s[None, :]  # the body curves more towards the tail
    spine = head[:, None, :] - (length[:, None] * s[None, :])[..., None] * np.stack(
        [np.cos(angle), np.sin(angle)], -1)
    spine += rng.normal(0, 0.01, spine.shape)
    return Track(id=larva_id, t=t, spine=spine)


def write_experiment(path: Path, seed: int, n_larvae: int = 3, **kwargs) -> Path:
    rng = np.random.default_rng(seed)
    tracks = [crawling_larva(str(i + 1), rng, **kwargs) for i in range(n_larvae)]
    run = Run(metadata={"id": f"2024010{seed}_120000"}, tracks=tracks,
              source=Path(f"/data/2024010{seed}_120000@x@y@t15@p.spine"), format="spine", sha1=f"{seed:040x}")
    write_isolated(run, path)
    return path


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("intermediates")
    return [write_experiment(root / f"exp{i}.h5", seed=i) for i in range(4)]


@pytest.fixture(scope="module")
def pretrained(experiments, tmp_path_factory):
    """One pretraining run shared by several tests: 3 training files, 1 validation file."""
    out = tmp_path_factory.mktemp("models") / "pretrained"
    lines: list[str] = []
    config = PretrainConfig(steps=100, seed=0, **TINY)
    instance = pretrain(experiments[:3], [experiments[3]], out, config, log=lines.append)
    return instance, out, lines, config


def _val_segments(path: Path, config: PretrainConfig) -> torch.Tensor:
    """Every full-span segment of a file, as pretraining sees them (window, context 1)."""
    run = read_isolated(path)
    spec = config.segment_spec
    parts = [build_segments(tr, spec, centres=tr.t[valid_centres(tr, spec, 1)], context=1) for tr in run.tracks]
    return torch.from_numpy(np.concatenate(parts))


def _mse(instance: ModelInstance, segments: torch.Tensor, window: int) -> float:
    with torch.no_grad():
        recon = instance.decoder(instance.encoder(segments[..., window:2 * window]))
    return float(((recon - segments) ** 2).mean())


def test_pretraining_writes_a_complete_instance(pretrained):
    instance, out, lines, config = pretrained
    assert instance.kind == "pretrained" and instance.path == out
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "provenance.json", "encoder.pt", "decoder.pt", "curves"}
    assert (out / "curves" / "pretraining.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = ModelInstance.load(out)
    assert loaded.segment_spec == config.segment_spec and loaded.encoder_config == config.encoder_config
    for a, b in [(loaded.encoder, instance.encoder), (loaded.decoder, instance.decoder)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k].cpu()) for k in sa)
    prov = loaded.provenance
    assert [Path(f["path"]).name for f in prov["train_files"]] == ["exp0.h5", "exp1.h5", "exp2.h5"]
    assert [f["sha1"] for f in prov["train_files"]] == [f"{i:040x}" for i in range(3)]
    assert [Path(f["path"]).name for f in prov["val_files"]] == ["exp3.h5"]
    assert prov["steps"] == 100 and prov["seed"] == 0 and prov["validation"] == "given validation files"
    # progress lines carry the step, both losses and an ETA
    assert any(line.startswith("step 60/100 train ") and " val " in line and "ETA" in line for line in lines)
    assert lines[-1].startswith(f"saved pretrained instance {out}")


def test_loss_decreases(pretrained, experiments):
    instance, out, lines, config = pretrained
    curve = read_curve(out / "curves" / "pretraining.csv")
    assert [row["step"] for row in curve] == [0, 20, 40, 60, 80, 100]
    assert "train_loss" not in curve[0] and all("train_loss" in row for row in curve[1:])
    assert curve[-1]["val_loss"] < 0.5 * curve[0]["val_loss"]
    assert curve[-1]["train_loss"] < curve[1]["train_loss"]
    # better than the trivial "everything at the centre" prediction on held-out segments
    segments = _val_segments(experiments[3], config)
    assert _mse(instance, segments, config.window) < 0.5 * float((segments ** 2).mean())


def test_best_validated_checkpoint_is_kept(pretrained, experiments):
    instance, out, lines, config = pretrained
    curve = read_curve(out / "curves" / "pretraining.csv")
    best = min(curve, key=lambda row: row["val_loss"])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["best_val_loss"] == best["val_loss"] and prov["best_step"] == best["step"]
    # The saved weights give exactly that validation loss (the validation set is the whole
    # held-out file here: it has fewer segments than val_batches * batch_size).
    segments = _val_segments(experiments[3], config)
    assert segments.shape[0] == prov["val_segments"] <= config.val_batches * config.batch_size
    assert _mse(ModelInstance.load(out), segments, config.window) == pytest.approx(best["val_loss"], rel=1e-5)


def test_a_diverging_run_keeps_the_initial_weights(experiments, tmp_path):
    # lr = 50 wrecks the weights at the first step: the best validated state is step 0,
    # i.e. the seeded initialisation, and that is what must be saved.
    config = PretrainConfig(steps=20, seed=4, **{**TINY, "lr": 50.0})
    instance = pretrain(experiments[:1], experiments[1:2], tmp_path / "m", config, log=lambda s: None)
    curve = read_curve(tmp_path / "m" / "curves" / "pretraining.csv")
    assert min(row["val_loss"] for row in curve[1:]) > curve[0]["val_loss"]
    assert instance.provenance["best_step"] == 0
    torch.manual_seed(4)
    encoder, decoder = Encoder(config.encoder_config), Decoder(config.encoder_config, 1)
    for fresh, saved in [(encoder, instance.encoder), (decoder, instance.decoder)]:
        fs, ss = fresh.state_dict(), saved.state_dict()
        assert all(torch.equal(fs[k], ss[k]) for k in fs)


def test_same_seed_same_weights_other_seed_other_weights(pretrained, experiments, tmp_path):
    instance, out, lines, config = pretrained
    again = pretrain(experiments[:3], [experiments[3]], tmp_path / "again", config, log=lambda s: None)
    other = pretrain(experiments[:3], [experiments[3]], tmp_path / "other",
                     PretrainConfig(**{**config.to_dict(), "seed": 1}), log=lambda s: None)
    for name in ("encoder", "decoder"):
        a, b, c = (getattr(x, name).state_dict() for x in (instance, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)
    assert read_curve(out / "curves" / "pretraining.csv") == read_curve(tmp_path / "again/curves/pretraining.csv")


def test_without_validation_files_whole_files_are_held_out(experiments, tmp_path):
    config = PretrainConfig(steps=2, **TINY)
    instance = pretrain(experiments[:3], None, tmp_path / "m", config, log=lambda s: None)
    prov = instance.provenance
    train = {f["path"] for f in prov["train_files"]}
    val = {f["path"] for f in prov["val_files"]}
    assert len(val) == 1 and len(train) == 2 and not train & val
    assert prov["validation"].startswith("held-out files")


def test_single_file_is_split_by_larva(experiments, tmp_path):
    one = write_experiment(tmp_path / "one.h5", seed=7, n_larvae=5)
    config = PretrainConfig(steps=2, **TINY)
    prov = pretrain([one], [], tmp_path / "m", config, log=lambda s: None).provenance
    train_ids, val_ids = set(prov["train_files"][0]["larva_ids"]), set(prov["val_files"][0]["larva_ids"])
    assert train_ids | val_ids == {"1", "2", "3", "4", "5"} and not train_ids & val_ids and val_ids
    assert prov["validation"].startswith("held-out larvae")

    single = write_experiment(tmp_path / "single.h5", seed=8, n_larvae=1)
    with pytest.raises(TrackDataError, match="single larva.*--val") as err:
        pretrain([single], [], tmp_path / "m2", config, log=lambda s: None)
    assert str(err.value).startswith(str(single))


def test_bad_inputs_fail_before_training(experiments, tmp_path):
    config = PretrainConfig(steps=2, **TINY)
    with pytest.raises(TrackDataError, match="both for training and for validation"):
        pretrain(experiments[:2], [experiments[1]], tmp_path / "m", config, log=lambda s: None)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    with pytest.raises(FileExistsError, match="not a maggotflow model instance"):
        pretrain(experiments[:2], [experiments[2]], precious, config, log=lambda s: None)
    short = write_experiment(tmp_path / "short.h5", seed=9, duration=2.0)  # 2 s < 3 s span
    with pytest.raises(TrackDataError, match="long enough") as err:
        pretrain([short], experiments[2:3], tmp_path / "m", config, log=lambda s: None)
    assert str(err.value).startswith(str(short))
    assert not (tmp_path / "m").exists()


def test_sampling_cap_and_zero_length_larva(experiments, tmp_path, caplog):
    config = PretrainConfig(**TINY)
    spec = config.segment_spec
    run = read_isolated(experiments[0])
    everything = sample_segments(run, experiments[0], spec, 1, 10**9, np.random.default_rng(0))
    expected = sum(int(valid_centres(tr, spec, 1).sum()) for tr in run.tracks)
    assert everything.shape == (expected, 2, 5, 30) and everything.dtype == np.float32
    capped = sample_segments(run, experiments[0], spec, 1, 50, np.random.default_rng(0))
    assert capped.shape[0] == 50
    # every capped segment is one of the full set (a subset, not new segments)
    flat = everything.reshape(everything.shape[0], -1)
    for seg in capped[:5]:
        assert (np.abs(flat - seg.reshape(-1)).max(axis=1) == 0).any()
    # a larva whose spine points all coincide cannot be normalised: skipped with a warning
    dot = Track(id="9", t=np.arange(100) / 10, spine=np.ones((100, 11, 2)))
    bad = Run(metadata={"id": "x"}, tracks=[run.tracks[0], dot])
    with caplog.at_level(logging.WARNING):
        seg = sample_segments(bad, Path("exp.h5"), spec, 1, 10**9, np.random.default_rng(0))
    assert seg.shape[0] == int(valid_centres(run.tracks[0], spec, 1).sum())
    assert "exp.h5" in caplog.text and "larva skipped" in caplog.text


def test_loaded_set_is_the_seeded_subset_of_all_files_samples_and_torch_builds_the_same(experiments):
    """_load_set fills one buffer file by file and compacts the capped subset in place: the
    rows are exactly those of concatenating every file's sample and drawing the subset."""
    from maggotflow.pretraining import _load_set

    spec = PretrainConfig(**TINY).segment_spec
    per_file, cap, seed = 200, 333, 4
    samples = [sample_segments(read_isolated(p), p, spec, 1, per_file, np.random.default_rng([seed, 0, i]))
               for i, p in enumerate(experiments)]
    everything = np.concatenate(samples)
    assert everything.shape[0] > cap  # the cap bites
    keep = np.sort(np.random.default_rng([seed, 0, len(experiments)]).choice(everything.shape[0], cap, replace=False))
    data, records = _load_set(list(experiments), spec, 1, per_file, cap, seed, 0)
    np.testing.assert_array_equal(data, everything[keep])
    assert [r["segments"] for r in records] == [s.shape[0] for s in samples]
    uncapped, _ = _load_set(list(experiments), spec, 1, per_file, 10**6, seed, 0)
    np.testing.assert_array_equal(uncapped, everything)
    # the torch builder (the CUDA path) samples the same rows, to float32 rounding
    run = read_isolated(experiments[0])
    via_torch = sample_segments(run, experiments[0], spec, 1, per_file, np.random.default_rng([seed, 0, 0]),
                                builder="torch")
    np.testing.assert_allclose(via_torch, samples[0], rtol=0, atol=2e-6)


def test_pretrain_command(experiments, tmp_path, capsys):
    out = tmp_path / "cli_model"
    code = main(["pretrain", "--train", str(experiments[0]), str(experiments[1]), "--val", str(experiments[2]),
                 "--out", str(out), "--steps", "6", "--eval-every", "3", "--batch-size", "16",
                 "--window", "10", "--latent-dim", "4", "--filters", "8,8,4,4,4,4", "--device", "cpu",
                 "--samples-per-file", "100", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step 6/6 train" in printed and "ETA" in printed
    loaded = ModelInstance.load(out)
    assert loaded.encoder_config.filters == (8, 8, 4, 4, 4, 4) and loaded.encoder_config.latent_dim == 4
    assert loaded.provenance["seed"] == 3
    assert all(f["segments"] <= 100 for f in loaded.provenance["train_files"])
    assert [row["step"] for row in read_curve(out / "curves" / "pretraining.csv")] == [0, 3, 6]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_pretrain_command_without_cuda(experiments, tmp_path, capsys):
    code = main(["pretrain", "--train", str(experiments[0]), "--out", str(tmp_path / "m"), "--device", "cuda"])
    assert code == 2  # a bad setting (maggotflow.cli: exit 2)
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
