"""The domain check (`maggotflow.domain`): a reference fitted on simulated regime-A files flags
regime-B files and not held-out A files; it travels in the model folder, prediction records
it in every label and warns, the shard tables, the screen summary and the report count it.

The data are small (7 training files of 30 s, 2 held-out A and 2 B files, windows of 10
steps) and the tagger's weights are random: the check never looks at the network.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maggotflow.dataset import Dataset, build_dataset
from maggotflow.domain import (
    LEVELS,
    N_FEATURES,
    RECORD_KEY,
    DomainReference,
    fit_reference,
    prediction_bound,
    run_signatures,
)
from maggotflow.ensemble import Ensemble
from maggotflow.formats import ReadOptions
from maggotflow.formats.label import read_label_file
from maggotflow.instance import InstanceError, ModelInstance, check_model_folder
from maggotflow.isolation import isolate, read_isolated
from maggotflow.model import ClassifierConfig, EncoderConfig
from maggotflow.prediction import Predictor, predict_files
from maggotflow.runtables import domain_warning, read_shard_table, shard_row, unlike_training, write_shard_table
from maggotflow.report import is_simulated, overview, run_domain_counts, tagger_domain
from maggotflow.screen import summarize
from maggotflow.segments import SegmentSpec
from maggotflow.shards import tag_shard
from maggotflow.simulation import label_file_path, regime_config, simulate

from helpers import SPEC

SHORT = dict(duration_s=30.0, larvae=(6, 9))
FIMTRACK = ReadOptions(framerate=30.0, pixelsize_um=100.0)
QUIET = dict(log=lambda message: None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """7 training + 2 held-out files of regime A, 2 of regime B; the dataset of the training
    files, its reference, and a tagger (random weights) that carries it."""
    from maggotflow.simulation import FIMTRACK_FRAME_RATE_HZ, FIMTRACK_PIXELSIZE_UM

    assert (FIMTRACK.framerate, FIMTRACK.pixelsize_um) == (FIMTRACK_FRAME_RATE_HZ, FIMTRACK_PIXELSIZE_UM)
    root = tmp_path_factory.mktemp("domain")
    a = simulate(root / "A", 9, seed=0, config=regime_config("A", **SHORT))
    b = simulate(root / "B", 2, seed=0, config=regime_config("B", **SHORT))
    iso = []
    for i, track in enumerate(a + b):
        iso.append(root / "iso" / f"{i}.h5")
        isolate(track, iso[-1], label_file_path(track), FIMTRACK)
    dataset = build_dataset(iso[:7], root / "dataset.h5", spec=SPEC, seed=0)
    messages = []
    reference = fit_reference(dataset, dataset.train_indices(), dataset.val_indices(), log=messages.append)
    tagger = ModelInstance("tagger", SPEC, EncoderConfig(window=10, latent_dim=4, filters=(4,) * 6),
                           classifier_config=ClassifierConfig(latent_dim=4, n_classes=len(dataset.labels)),
                           labels=dataset.labels, domain=reference)
    tagger.save(root / "tagger")
    dataset.close()
    return {"root": root, "a": a[7:], "b": b, "a_iso": iso[7:9], "b_iso": iso[9:], "dataset": root / "dataset.h5",
            "reference": reference, "tagger": root / "tagger", "messages": messages}


def outs(folder, inputs):
    """One label per input (two simulated trx.mat would clash in one folder)."""
    return [folder / f"{i}.label" for i in range(len(inputs))]


def checks(reference, paths):
    return [reference.check(run_signatures(reference, read_isolated(p)), file_simulated=True) for p in paths]


# ---------------------------------------------------------------------------- the reference
def test_a_reference_of_regime_a_flags_regime_b_and_not_held_out_a_files(data):
    reference = data["reference"]
    held_a, b = checks(reference, data["a_iso"]), checks(reference, data["b_iso"])
    assert [r["verdict"] for r in held_a] == ["ok", "ok"]
    assert [r["verdict"] for r in b] == ["unlike_training"] * 2
    assert all(r["score"] > 2 * reference.file_threshold for r in b)  # far off, not a borderline call
    assert all(r["score"] < 0.5 * reference.file_threshold for r in held_a)
    # most larvae of B are unlike too, few of A (their threshold falls with their duration)
    assert sum(r["larvae"]["unlike_training"] for r in b) >= 0.7 * sum(r["larvae"]["checked"] for r in b)
    assert sum(r["larvae"]["unlike_training"] for r in held_a) <= 1
    record = b[0]
    assert list(record) == ["verdict", "score", "threshold", "reason", "larvae", "trained_on_simulated",
                            "file_simulated", "method"]
    assert "above the threshold" in record["reason"]
    assert len(record["larvae"]["relative_scores"]) == record["larvae"]["checked"]


def test_thresholds_are_set_on_data_the_statistics_did_not_see(data):
    reference = data["reference"]
    with Dataset.load(data["dataset"]) as dataset:
        n_files = len({s["path"] for s in dataset.sources})
        n_val_files = sum(s["split"] == "validation" for s in dataset.sources)
    assert reference.validation["files"] == n_val_files >= 1
    assert reference.validation["cross_fitted_files"] == n_files - n_val_files  # every training file once
    assert reference.training["files"] == n_files - n_val_files
    assert reference.training["simulated_files"] == reference.training["files"]  # the simulator's README
    assert reference.trained_on_simulated
    assert any("95 % prediction bounds" in m and "trained on simulated data only" in m for m in data["messages"])
    # the bound: one more normal draw exceeds it 5 % of the time
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(20000, 6))
    bounds = np.array([prediction_bound(d[:5]) for d in draws])
    assert abs(np.mean(draws[:, 5] > bounds) - 0.05) < 0.006


def test_a_single_labelled_file_split_by_larva_still_gets_thresholds(data, tmp_path):
    with build_dataset(data["a_iso"][:1], tmp_path / "one.h5", spec=SPEC, seed=0) as dataset:
        assert dataset.split_by == "larva"
        reference = fit_reference(dataset, dataset.train_indices(), dataset.val_indices(), **QUIET)
    # the training larvae, each scored without it, make up for the few validation larvae
    assert reference.validation["files"] == 1 and reference.validation["cross_fitted_files"] == 0
    assert reference.validation["cross_fitted_larvae"] >= 3
    # no second file to bound the file scores: the threshold of a larva of median duration
    assert reference.file_threshold >= reference.larva_threshold > 0


def test_without_validation_samples_there_is_no_reference(data):
    messages = []
    with Dataset.load(data["dataset"]) as dataset:
        assert fit_reference(dataset, dataset.train_indices(), np.zeros(0, np.int64), log=messages.append) is None
    assert "no validation samples" in messages[0] and "not checked" in messages[0]


def test_signatures_depend_on_each_segment_alone(data):
    """The same rows whatever the batch, to float32 rounding (vectorised angle functions
    round their last bit differently); recorded scores are rounded to 4 digits, and labels
    keep their bytes (test_every_label_records_its_domain_check_and_unlike_files_are_named)."""
    reference = data["reference"]
    with Dataset.load(data["dataset"]) as dataset:
        segments = dataset.read_segments(np.arange(3000))
    whole = reference.segment_signatures(segments).numpy()
    parts = np.concatenate([reference.segment_signatures(torch.from_numpy(segments[i:i + 7])).numpy()
                            for i in range(0, 3000, 7)])
    assert whole.shape == (3000, N_FEATURES)
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)
    # the training segments' normal scores: centred, about unit spread
    assert np.all(np.abs(whole.mean(axis=0)) < 0.5) and np.all(whole.std(axis=0) < 1.5)


def test_the_reference_round_trips_exactly_and_damage_is_one_line(data):
    reference = data["reference"]
    d = json.loads(json.dumps(reference.to_dict()))
    again = DomainReference.from_dict(d)
    assert again.to_dict() == reference.to_dict()
    assert len(d["levels"]) == len(LEVELS) and len(d["knots"]) == N_FEATURES
    damaged = {
        "method": dict(d, method="other/9"),
        "36 x 101": dict(d, knots=d["knots"][:-1]),
        "finite": dict(d, centre=[float("nan")] + d["centre"][1:]),
        "positive definite": dict(d, covariance=[[0.0] * N_FEATURES] * N_FEATURES),
        "whole number": dict(d, segment_spec=dict(d["segment_spec"], window=10 ** 9)),
        "file threshold": dict(d, thresholds=dict(d["thresholds"], file=-1)),
        "increasing": dict(d, knots=[row[::-1] for row in d["knots"]]),
        "36 x 36": dict(d, covariance=[[1.0] * 10 ** 5] * N_FEATURES),
    }
    for words, bad in damaged.items():
        with pytest.raises(ValueError, match=words) as err:
            DomainReference.from_dict(bad)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- model folders
def test_model_folder_keeps_the_reference_and_old_folders_still_load(data, tmp_path):
    loaded = ModelInstance.load(data["tagger"])
    assert loaded.domain.to_dict() == data["reference"].to_dict()
    config = json.loads((data["tagger"] / "config.json").read_text())
    assert config[RECORD_KEY]["thresholds"]["file"] == data["reference"].file_threshold

    old = tmp_path / "old"
    shutil.copytree(data["tagger"], old)
    del config[RECORD_KEY]  # a folder made before the domain check
    (old / "config.json").write_text(json.dumps(config))
    assert ModelInstance.load(old).domain is None

    config[RECORD_KEY] = dict(data["reference"].to_dict(), knots=[[0.0] * 3] * N_FEATURES)
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(InstanceError, match=r"config\.json: domain_check knots is not a 36 x 101 table") as err:
        check_model_folder(old)
    assert str(err.value).startswith(str(old)) and "\n" not in str(err.value)

    other = SegmentSpec(window=12)
    with pytest.raises(ValueError, match="other segments"):
        ModelInstance("tagger", other, EncoderConfig(window=12, latent_dim=4, filters=(4,) * 6),
                      classifier_config=ClassifierConfig(latent_dim=4, n_classes=2), labels=["a", "b"],
                      domain=data["reference"])


def test_an_ensemble_uses_its_first_members_reference(data):
    first = ModelInstance.load(data["tagger"])
    second = ModelInstance.load(data["tagger"])
    second.domain = None
    assert Ensemble([first, second]).domain is first.domain
    assert Ensemble([second, first]).domain is None


# ---------------------------------------------------------------------------- prediction
def test_every_label_records_its_domain_check_and_unlike_files_are_named(data, tmp_path, caplog):
    inputs = [*data["a"], *data["b"]]
    with caplog.at_level(logging.WARNING, logger="maggotflow.prediction"):
        written = predict_files(data["tagger"], inputs, out_paths=outs(tmp_path / "a", inputs), device="cpu",
                                read_options=FIMTRACK)
    records = [read_label_file(p).metadata["maggotflow"][RECORD_KEY] for p in written]
    assert [r["verdict"] for r in records] == ["ok", "ok", "unlike_training", "unlike_training"]
    # the same figures as the reference gives the run in memory
    expected = checks(data["reference"], [*data["a_iso"], *data["b_iso"]])
    assert [r["score"] for r in records] == pytest.approx([r["score"] for r in expected], rel=1e-3)
    warned = [r.getMessage() for r in caplog.records]
    for track in data["b"]:
        assert any(m.startswith(f"{track}: unlike the tagger's training data") for m in warned)
    assert not any(str(track) in m for track in data["a"] for m in warned)
    assert any(m.startswith("2 of 4 file(s) tagged are unlike") for m in warned)
    # the mark keeps its keys, the check comes last
    assert list(read_label_file(written[0]).metadata["maggotflow"]) == ["version", "model", "model_sha1", "read",
                                                                        RECORD_KEY]
    # the same bytes whatever the batch size and the segment builder
    predictor = Predictor(data["tagger"], device="cpu", batch_size=7, segments="numpy", prefetch=False)
    again = predict_files(predictor, inputs, out_paths=outs(tmp_path / "b", inputs), read_options=FIMTRACK)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


def test_a_tagger_trained_on_simulated_larvae_flags_files_that_are_not(data, tmp_path):
    real = tmp_path / "lab" / data["a"][0].name  # the same bytes, out of the simulator's folder
    real.parent.mkdir()
    shutil.copy(data["a"][0], real)
    assert is_simulated([data["a"][0]]) and not is_simulated([real])
    (written,) = predict_files(data["tagger"], [real], out_dir=tmp_path / "out", device="cpu")
    record = read_label_file(written).metadata["maggotflow"][RECORD_KEY]
    assert record["verdict"] == "unlike_training" and record["score"] <= record["threshold"]
    assert record["trained_on_simulated"] is True and record["file_simulated"] is False
    assert "trained on simulated larvae only" in record["reason"]


def test_a_model_without_reference_says_not_checked(data, tmp_path):
    instance = ModelInstance.load(data["tagger"])
    instance.domain = None
    (written,) = predict_files(instance, [data["a"][0]], out_dir=tmp_path, device="cpu")
    record = read_label_file(written).metadata["maggotflow"][RECORD_KEY]
    assert record["verdict"] is None and "no domain reference" in record["reason"]


# ---------------------------------------------------------------------------- tables, summary, report
def test_shard_tables_summary_screen_and_report_count_unlike_files(data, tmp_path):
    files = [{"id": f"f{i}", "path": str(p)} for i, p in enumerate([*data["a"], *data["b"]])]
    outs = [tmp_path / "labels" / f"{f['id']}.label" for f in files]
    table = tmp_path / "shard.tsv"
    rows = tag_shard(data["tagger"], files, outs, None, FIMTRACK, device="cpu")
    assert [r["domain"] for r in rows] == ["ok", "ok", "unlike_training", "unlike_training"]
    write_shard_table(table, rows)
    before = [p.stat().st_mtime_ns for p in outs]
    again = tag_shard(data["tagger"], files, outs, table, FIMTRACK, device="cpu")
    assert [p.stat().st_mtime_ns for p in outs] == before  # current labels are kept, verdicts and all
    assert again == rows
    assert unlike_training(rows) == [str(p) for p in data["b"]]
    warning = domain_warning("results/predict/x", rows)
    assert warning.startswith("results/predict/x: 2 of 4 tagged file(s) are unlike")
    assert str(data["b"][0]) in warning and str(data["a"][0]) not in warning

    # a table written before the domain column still reads
    old = tmp_path / "old.tsv"
    old.write_text("id\tpath\tlabel\tstatus\tproblem\nf0\t/t/a.spine\t/l/a.label\tok\t\n")
    assert read_shard_table(old)[0]["domain"] == "" and unlike_training(read_shard_table(old)) == []
    assert shard_row("f1", "/t/b.spine", problem="bad", domain="ok")["domain"] == ""

    summary = summarize(outs, tmp_path / "screen", plots=False)
    assert summary.unlike_training == 2
    per_file = (tmp_path / "screen" / "per_file.tsv").read_text().splitlines()
    assert per_file[0].split("\t")[:7] == ["file", "tracker", "genotype", "effector", "protocol", "date_time",
                                          "larvae"] and per_file[0].split("\t")[7] == "domain_check"
    assert run_domain_counts(tmp_path / "screen") == (4, 2)

    domain = tagger_domain(data["tagger"])
    assert domain == data["reference"].to_dict()
    page = overview(metrics={"macro_f1": 0.5, "accuracy": 0.5, "n_steps": 10, "per_label": {}}, per_file=[],
                    behaviour=[], provenance={}, settings={"track_dir": "d", "evaluation": "e", "pretrain_steps": 1,
                                                           "stage1_steps": 1, "stage2_steps": 1, "labels": None},
                    domain=domain, run_domain={"heldout": (4, 2), "lab-1234": None})
    assert "Domain check" in page and "trained on **simulated** larvae only" in page
    assert "``heldout``\n     - 4\n     - 2" in page
    assert "holds no domain reference" in overview(
        metrics={"macro_f1": 0.5, "accuracy": 0.5, "n_steps": 10, "per_label": {}}, per_file=[], behaviour=[],
        provenance={}, settings={"track_dir": "d", "evaluation": "e", "pretrain_steps": 1, "stage1_steps": 1,
                                 "stage2_steps": 1, "labels": None})
