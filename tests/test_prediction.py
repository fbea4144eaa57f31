"""Prediction on simulated experiments in all three track formats, with a tiny trained tagger.

The tagger (2-s windows of 10 steps, a 4-d latent, a few training steps) is not meant to be
accurate: these tests check what `maggotflow.prediction` promises about its output files
(one label per time step of every larva, the track's own times, the model's own
predictions, LarvaTagger layout, identical bytes whatever the input kind, batch size or
threading) and how it treats bad input and output names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from maggotflow.cli import main as cli_main
from maggotflow.dataset import build_dataset
from maggotflow.formats import ReadOptions, file_sha1, read_run
from maggotflow.formats.label import default_colors, is_maggotflow_label, read_label_file
from maggotflow.instance import InstanceError, ModelInstance, check_model_folder, fingerprint
from maggotflow.isolation import isolate
from maggotflow.prediction import (
    FOREIGN_LABEL,
    OWN_LABEL,
    OutputClashError,
    OutputExistsError,
    Predictor,
    predict_files,
    prediction_mark,
)
from maggotflow.postrule import apply_post_rule
from maggotflow.segments import build_segments, larva_length
from maggotflow.simulation import SimulationConfig, label_file_path, simulate
from maggotflow.tracks import TrackDataError
from maggotflow.training import TrainConfig, train_tagger

from helpers import SPEC, read_or_die

SIM = SimulationConfig(duration_s=20.0, larvae=(2, 3))
FIMTRACK = ReadOptions(framerate=SIM.fimtrack_frame_rate_hz, pixelsize_um=SIM.fimtrack_pixelsize_um)
FORMATS = ("spine", "trx", "fimtrack")  # simulate() writes file i in FORMATS[i % 3]
QUIET = dict(log=lambda message: None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """3 simulated experiments (.spine, trx.mat, FIMTrack .csv), their intermediates and a tagger."""
    root = tmp_path_factory.mktemp("prediction")
    tracks = simulate(root / "sim", 3, seed=5, config=SIM)
    intermediates = []
    for fmt, track in zip(FORMATS, tracks):
        out = root / "iso" / f"{fmt}.h5"
        isolate(track, out, label_file_path(track), FIMTRACK)
        intermediates.append(out)
    build_dataset(intermediates, root / "dataset.h5", spec=SPEC, max_samples=600, seed=0).close()
    # per-step decisions (calibrated argmax): the post-rule test needs a tagger that flickers
    config = TrainConfig(stage1_steps=4, stage2_steps=4, batch_size=32, eval_every=10, device="cpu",
                         latent_dim=4, filters=(8, 8, 4, 4, 4, 4), decoding="argmax")
    tagger = root / "tagger"
    train_tagger(root / "dataset.h5", tagger, None, config, **QUIET)
    # The same weights with the post-rule switched on in the instance.
    ruled = ModelInstance.load(tagger)
    ruled.post_rule = "ABC->AAC"
    ruled.save(root / "tagger_rule")
    return {"root": root, "tracks": dict(zip(FORMATS, tracks)), "iso": dict(zip(FORMATS, intermediates)),
            "tagger": tagger, "tagger_rule": root / "tagger_rule"}


def model_classes(instance: ModelInstance, track) -> np.ndarray:
    """What the tagger says for every step of `track`, computed here without the predictor:
    its logits, then its decision rule (calibration offsets, HMM) over the whole larva."""
    segments = build_segments(track, instance.segment_spec, length=larva_length(track))
    with torch.inference_mode():
        logits = instance.tagger()(torch.from_numpy(segments)).numpy()
    return instance.decision.decode(logits, track.t)


def label_bytes(paths) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


# ---------------------------------------------------------------------------- output
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_step_of_every_larva_gets_the_model_label_at_the_track_times(sim, tmp_path, fmt):
    track_path = sim["tracks"][fmt]
    written = predict_files(sim["tagger"], [track_path], out_dir=tmp_path, device="cpu", read_options=FIMTRACK)
    stem = "trx" if fmt == "trx" else track_path.stem
    assert written == [tmp_path / f"{stem}.label"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.label"]  # no temporary left behind

    instance = ModelInstance.load(sim["tagger"])
    run = read_run(track_path, FIMTRACK)
    predicted = read_label_file(written[0])
    truth = read_label_file(label_file_path(track_path))  # the simulator's ground truth
    assert list(predicted.tracks) == [tr.id for tr in run.tracks] == list(truth.tracks)
    for track in run.tracks:
        t, steps = predicted.tracks[track.id]
        np.testing.assert_array_equal(t, np.round(track.t, 3))  # the track's own times, 1 ms
        np.testing.assert_array_equal(t, truth.tracks[track.id][0])
        assert len(steps) == track.n_steps and all(len(step) == 1 for step in steps)
        # exactly what the model decides from the segments centred on each step
        expected = model_classes(instance, track)
        assert [step[0] for step in steps] == [instance.labels[c] for c in expected]

    # LarvaTagger layout: key order, labels with colours, the track file's name and sha1
    text = written[0].read_text(encoding="utf-8")
    assert text.startswith('{\n"metadata": {"id": ')
    doc = json.loads(text)
    assert list(doc) == ["metadata", "units", "labels", "dependencies", "data"]
    assert doc["metadata"]["id"] == run.metadata["id"]
    assert doc["units"] == {"t": "s"}
    assert doc["labels"] == {"names": instance.labels, "colors": default_colors(instance.labels)}
    assert sorted(instance.labels) == sorted(SIM.label_names)
    assert doc["dependencies"] == {"filename": track_path.name, "sha1": file_sha1(track_path)}
    assert [list(item) for item in doc["data"]] == [["id", "t", "labels"]] * len(run.tracks)


def test_prediction_does_not_read_the_outline(sim, tmp_path):
    """Tagging needs spines only: a .spine beside a broken (here: binary) .outline is tagged,
    with the same labels as beside its real outline, which read_run itself refuses."""
    import shutil

    original = sim["tracks"]["spine"]
    assert original.with_suffix(".outline").exists()
    reference = predict_files(sim["tagger"], [original], out_dir=tmp_path / "a", device="cpu")
    copy = tmp_path / "in" / original.name
    copy.parent.mkdir()
    shutil.copy(original, copy)
    # still a simulated file (the simulator's README.txt above it): the domain check, which
    # judges files of a tagger trained on simulated data by that mark, gives the same verdict
    readme = next(f / "README.txt" for f in original.parents if (f / "README.txt").is_file())
    shutil.copy(readme, copy.parent / "README.txt")
    copy.with_suffix(".outline").write_bytes(b"\x00\x01 not an outline\n")
    with pytest.raises(TrackDataError, match="outline"):
        read_run(copy)
    written = predict_files(sim["tagger"], [copy], out_dir=tmp_path / "b", device="cpu")
    assert label_bytes(written) == label_bytes(reference)


def test_intermediate_gives_the_same_bytes_as_its_track_file(sim, tmp_path):
    tracks = [sim["tracks"][f] for f in FORMATS]
    isos = [sim["iso"][f] for f in FORMATS]
    from_tracks = predict_files(sim["tagger"], tracks, out_dir=tmp_path / "a", device="cpu", read_options=FIMTRACK)
    from_isos = predict_files(sim["tagger"], isos, out_dir=tmp_path / "b", device="cpu")
    # an intermediate is named after the track file it was made from, not after itself
    assert [p.name for p in from_isos] == [p.name for p in from_tracks]
    assert [p.name for p in from_isos] != [p.stem + ".label" for p in isos]
    assert label_bytes(from_isos) == label_bytes(from_tracks)


def test_results_do_not_depend_on_batch_size_prefetch_thread_or_segment_builder(sim, tmp_path):
    inputs = [sim["iso"][f] for f in FORMATS]
    n_steps = sum(tr.n_steps for p in inputs for tr in read_run_any(p).tracks)
    outputs = []
    # 7: many small batches; 128: the CPU default; larger than all inputs together: one
    # batch spanning all three files. Segments built with torch batched over each chunk's
    # larvae (auto), with numpy per larva, or by the consumer "on the device" (the CUDA
    # path, here on the CPU).
    cases = [(128, True, "auto"), (7, True, "numpy"), (7, False, "torch"), (n_steps + 50, True, "numpy"),
             (n_steps + 50, False, "auto"), (128, True, "device"), (7, False, "device"), (n_steps + 50, True, "device")]
    for i, (batch_size, prefetch, builder) in enumerate(cases):
        predictor = Predictor(sim["tagger"], device="cpu", batch_size=batch_size, prefetch=prefetch,
                              segments="torch" if builder == "device" else builder)
        assert predictor.builder == ("numpy" if builder == "numpy" else "torch")
        assert not predictor.build_on_device
        predictor.build_on_device = builder == "device"
        outputs.append(label_bytes(predict_files(predictor, inputs, out_dir=tmp_path / str(i))))
    assert all(out == outputs[0] for out in outputs[1:])


def read_run_any(path):
    from maggotflow.readers import read_input

    return read_input(path, FIMTRACK)


def test_predict_run_matches_the_files(sim, tmp_path):
    predictor = Predictor(sim["tagger"], device="cpu")
    run = read_run_any(sim["tracks"]["trx"])
    per_larva = predictor.predict_run(run)
    written = predict_files(predictor, [sim["tracks"]["trx"]], out_dir=tmp_path)
    labels = read_label_file(written[0])
    assert {k: [s[0] for s in steps] for k, (_, steps) in labels.tracks.items()} == per_larva


def test_the_reading_step_is_a_picklable_function_of_path_and_options(sim):
    """`prepare_file` (read one input, measure its larvae) is what a worker process would
    run: the function, its arguments and its result all pickle."""
    import pickle

    from maggotflow.readers import PreparedFile, prepare_file

    read, options = pickle.loads(pickle.dumps((prepare_file, FIMTRACK)))
    prepared = pickle.loads(pickle.dumps(read(sim["tracks"]["fimtrack"], options)))
    assert isinstance(prepared, PreparedFile)
    assert prepared.tagged == list(range(len(prepared.run.tracks))) and all(n > 0 for n in prepared.lengths)
    assert [tr.id for tr in prepared.run.tracks] == [tr.id for tr in read_run_any(sim["tracks"]["fimtrack"]).tracks]


# ---------------------------------------------------------------------------- post-rule
def reference_post_rule(labels):
    """ABC -> AAC exactly as specified: left to right over the corrected sequence."""
    out = list(labels)
    for k in range(1, len(out) - 1):
        if out[k] != out[k - 1] and labels[k] != labels[k + 1]:
            out[k] = out[k - 1]
    return out


@pytest.mark.parametrize("before, after", [
    ("ABC", "AAC"),
    ("ABA", "AAA"),
    ("ABCDEE", "AAAAEE"),        # a chain of single steps takes the label before it
    ("AABCC", "AAACC"),
    ("BAAAC", "BAAAC"),          # first and last steps are never changed
    ("BA", "BA"),
    ("A", "A"),
    ("", ""),
    ("AABBCC", "AABBCC"),        # runs of two or more steps are untouched
    ("AABBAAB", "AABBAAB"),
    ("AABAACCDC", "AAAAACCCC"),
])
def test_abc_to_aac(before, after):
    got = apply_post_rule(np.array(list(before), dtype="<U1"))
    assert "".join(got.tolist()) == after
    assert "".join(reference_post_rule(list(before))) == after


def test_abc_to_aac_on_class_indices_matches_the_specification():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 30))
        labels = rng.integers(0, int(rng.integers(1, 4)), n)
        got = apply_post_rule(labels)
        assert got.dtype == labels.dtype
        assert got.tolist() == reference_post_rule(labels.tolist())
        if n:
            assert got[0] == labels[0] and got[-1] == labels[-1]
    labels = np.array([0, 1, 2])
    apply_post_rule(labels)
    assert labels.tolist() == [0, 1, 2]  # the input is not modified


def test_the_instance_post_rule_is_applied(sim, tmp_path):
    inputs = [sim["iso"][f] for f in FORMATS]
    plain = predict_files(sim["tagger"], inputs, out_dir=tmp_path / "plain", device="cpu")
    ruled = predict_files(sim["tagger_rule"], inputs, out_dir=tmp_path / "rule", device="cpu")
    changed = 0
    for a, b in zip(plain, ruled):
        pa, pb = read_label_file(a), read_label_file(b)
        assert list(pa.tracks) == list(pb.tracks)
        for larva, (t, steps) in pa.tracks.items():
            names = [s[0] for s in steps]
            expected = apply_post_rule(np.array(names)).tolist()
            assert [s[0] for s in pb.tracks[larva][1]] == expected
            np.testing.assert_array_equal(pb.tracks[larva][0], t)
            changed += sum(x != y for x, y in zip(names, expected))
    assert changed > 0  # the untrained tagger does flicker: the rule had work to do


# ---------------------------------------------------------------------------- model folders
def test_check_model_folder_names_each_problem_in_one_line(sim, tmp_path):
    def problem(path, **kinds) -> str:
        with pytest.raises(InstanceError) as err:
            check_model_folder(path, **kinds)
        text = str(err.value)
        assert text.startswith(f"{path}: ") and "\n" not in text
        return text

    assert check_model_folder(sim["tagger"])["kind"] == "tagger"
    assert "no model instance there" in problem(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "no model instance there" in problem(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert "no model instance there" in problem(tmp_path / "empty")
    damaged = shutil.copytree(sim["tagger"], tmp_path / "damaged")
    (damaged / "config.json").write_text('{"kind": "tagger",')
    assert "config.json is damaged" in problem(damaged)
    future = shutil.copytree(sim["tagger"], tmp_path / "future")
    config = json.loads((future / "config.json").read_text())
    (future / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    assert "format_version 2 is not supported" in problem(future)
    pretrained = ModelInstance("pretrained", SPEC, ModelInstance.load(sim["tagger"]).encoder_config).save(
        tmp_path / "pretrained")
    assert "is a pretrained encoder, not a tagger" in problem(pretrained)
    assert check_model_folder(pretrained, kinds=("pretrained",))["kind"] == "pretrained"
    assert "is a tagger, not an ensemble" in problem(sim["tagger"], kinds=("ensemble",))


def test_a_loaded_pretrained_encoder_is_refused_before_any_work(sim, tmp_path):
    pretrained = ModelInstance("pretrained", SPEC, ModelInstance.load(sim["tagger"]).encoder_config)
    with pytest.raises(InstanceError, match="is a pretrained encoder, not a tagger"):
        Predictor(pretrained, device="cpu")


def test_fingerprint_is_config_and_weights(sim, tmp_path):
    folder = shutil.copytree(sim["tagger"], tmp_path / "model")
    # What the workflow computed before `fingerprint` existed (common.smk), byte for byte.
    expected = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (path.name == "config.json" or path.suffix == ".pt"):
            expected.update(path.relative_to(folder).as_posix().encode())
            expected.update(path.read_bytes())
    before = fingerprint(folder)
    assert before == expected.hexdigest() == fingerprint(sim["tagger"])
    (folder / "provenance.json").write_text("{}")
    shutil.rmtree(folder / "curves", ignore_errors=True)
    assert fingerprint(folder) == before  # neither provenance nor curves are the model
    weights = bytearray((folder / "classifier.pt").read_bytes())
    weights[-1] ^= 1
    (folder / "classifier.pt").write_bytes(bytes(weights))
    assert fingerprint(folder) != before


# ---------------------------------------------------------------------------- names and bad input
def test_output_name_clash_is_refused_before_any_work(sim, tmp_path):
    other = tmp_path / "elsewhere" / "trx.mat"
    other.parent.mkdir()
    shutil.copy(sim["tracks"]["trx"], other)
    missing_model = tmp_path / "no-such-model"  # never loaded: the clash is found first
    with pytest.raises(OutputClashError, match="trx.mat.*trx.mat.*trx.label.*--out-paths"):
        predict_files(missing_model, [sim["tracks"]["trx"], other], out_dir=tmp_path / "out")
    # the intermediate of a trx.mat is tagged into trx.label as well
    with pytest.raises(OutputClashError):
        predict_files(missing_model, [sim["iso"]["trx"], other], out_dir=tmp_path / "out")
    with pytest.raises(OutputClashError, match="will not be overwritten"):
        predict_files(missing_model, [sim["tracks"]["spine"]], out_paths=[sim["tracks"]["spine"]])
    assert not (tmp_path / "out").exists()
    # one output path per input resolves the clash
    outs = [tmp_path / "out" / "a" / "trx.label", tmp_path / "out" / "b" / "trx.label"]
    assert predict_files(sim["tagger"], [sim["tracks"]["trx"], other], out_paths=outs, device="cpu") == outs
    a, b = (json.loads(p.read_text()) for p in outs)
    assert a["data"] == b["data"]  # same track data, same labels (metadata differ: it comes from the path)
    assert a["dependencies"] == b["dependencies"]


def bad_inputs(sim, folder: Path) -> dict[str, Path]:
    folder.mkdir()
    truncated = folder / "trx.mat"
    truncated.write_bytes(sim["tracks"]["trx"].read_bytes()[:3000])
    garbage = folder / "20200101_000000@g@e@t15@p@1.spine"
    garbage.write_bytes(bytes(range(256)) * 8)
    broken_h5 = folder / "broken.h5"
    broken_h5.write_bytes(sim["iso"]["spine"].read_bytes()[:1000])
    return {"truncated": truncated, "garbage": garbage, "broken_h5": broken_h5}


def test_a_bad_file_is_named_and_skipped_with_on_error(sim, tmp_path):
    bad = bad_inputs(sim, tmp_path / "bad")
    good = [sim["tracks"]["spine"], sim["tracks"]["fimtrack"]]
    inputs = [good[0], bad["truncated"], bad["garbage"], bad["broken_h5"], good[1]]
    failed = []
    out = tmp_path / "out"
    written = predict_files(sim["tagger"], inputs, out_dir=out, device="cpu", read_options=FIMTRACK,
                            on_error=lambda path, err: failed.append((path, str(err))))
    assert written == [out / (good[0].stem + ".label"), out / (good[1].stem + ".label")]
    assert [p for p, _ in failed] == [bad["truncated"], bad["garbage"], bad["broken_h5"]]
    for path, message in failed:
        assert message.startswith(str(path)) and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # nothing partial
    expected = predict_files(sim["tagger"], good, out_dir=tmp_path / "ref", device="cpu", read_options=FIMTRACK)
    assert label_bytes(written) == label_bytes(expected)  # the bad ones did not disturb the others

    # without on_error the first bad file stops the call, naming it, and gets no output
    with pytest.raises(TrackDataError, match="trx.mat"):
        predict_files(sim["tagger"], [bad["truncated"], good[0]], out_dir=tmp_path / "stop", device="cpu")
    assert not (tmp_path / "stop" / "trx.label").exists()


def test_labels_logs_and_errors_are_the_same_with_0_1_or_2_reader_processes(sim, tmp_path, caplog):
    """Reading in reader processes changes nothing a user sees: the same label bytes, the
    same failed files with the same one-line messages, in the same order, and the same log
    records (a reader's warnings are handed to this process's loggers), with bad files
    (a truncated trx.mat, binary garbage, a broken intermediate) in the middle of the list."""
    bad = bad_inputs(sim, tmp_path / "bad")
    glitch = tmp_path / "glitch" / sim["tracks"]["spine"].name  # one impossible value: bridged, with a warning
    glitch.parent.mkdir()
    lines = sim["tracks"]["spine"].read_text().splitlines(keepends=True)
    values = lines[20].split(" ")
    lines[20] = " ".join([*values[:5], "1e9", *values[6:]])
    glitch.write_text("".join(lines))
    inputs = [sim["tracks"]["spine"], bad["truncated"], sim["iso"]["trx"], bad["garbage"], glitch, bad["broken_h5"],
              sim["tracks"]["fimtrack"], sim["iso"]["spine"]]
    results = []
    for readers in (0, 1, 2):
        failed: list[tuple[Path, str]] = []
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="maggotflow"):
            outs = [tmp_path / str(readers) / f"{i}.label" for i in range(len(inputs))]
            written = predict_files(sim["tagger"], inputs, out_paths=outs, device="cpu",
                                    read_options=FIMTRACK, readers=readers,
                                    on_error=lambda path, err: failed.append((path, str(err))))
        logs = [(r.name, r.levelname, r.getMessage().replace(str(tmp_path / str(readers)), "OUT"))
                for r in caplog.records if not r.getMessage().startswith("tagged ")]  # the last: a speed
        results.append(([p.name for p in written], label_bytes(written), failed, logs))
    assert [path for path, _ in results[0][2]] == [bad["truncated"], bad["garbage"], bad["broken_h5"]]
    assert len(results[0][0]) == 5
    assert any(level == "WARNING" and "1e+09" in message for _, level, message in results[0][3])
    assert results[1] == results[0] and results[2] == results[0]


def test_torch_gets_the_cores_the_readers_leave_while_tagging(sim, tmp_path, monkeypatch):
    """predict_files shares the job's cores: with 1 reader of 2 cores torch runs on 1 thread
    while it tags, with 0 readers on 2; afterwards torch has what it had before."""
    seen = []
    stream = Predictor.stream

    def spying(self, inputs, read_options=None, readers=0):
        seen.append((readers, torch.get_num_threads()))
        return stream(self, inputs, read_options, readers)

    monkeypatch.setattr(Predictor, "stream", spying)
    monkeypatch.setattr("maggotflow.prediction.allocated_cores", lambda limit=None: limit or 2)
    for readers in (1, 0):
        predict_files(sim["tagger"], [sim["iso"]["spine"]], out_dir=tmp_path / str(readers), device="cpu",
                      readers=readers, cores=2)
    assert seen == [(1, 1), (0, 2)]
    assert torch.get_num_threads() == 1  # tests/conftest.py's one_torch_thread, put back


def test_a_reader_process_that_dies_costs_only_its_file(sim, tmp_path):
    """A reader killed while it reads (out of memory, a crash in a file library) does not end
    the job: the files it held are read again; a file whose reader dies every time fails
    alone, with a one-line message naming it (`helpers.read_or_die` kills its reader with
    SIGKILL for a file named kill-me*)."""
    from maggotflow import readers as rd

    inputs = [(i, p) for i, p in enumerate([sim["tracks"]["spine"], sim["iso"]["trx"], sim["tracks"]["fimtrack"]])]
    reference = list(rd.prepared_files(inputs, FIMTRACK, processes=0))
    killer = tmp_path / "kill-me.spine"
    killer.write_bytes(sim["tracks"]["spine"].read_bytes())
    got = list(rd.prepared_files([inputs[0], (9, killer), *inputs[1:]], FIMTRACK, processes=2,
                                 read_one=read_or_die))
    assert [key for key, _ in got] == [0, 9, 1, 2]
    (_, error), kept = got[1], [got[0], *got[2:]]
    assert isinstance(error, TrackDataError) and str(error).startswith(str(killer)) and "\n" not in str(error)
    assert "reader process died" in str(error)
    for (_, a), (_, b) in zip(kept, reference):
        assert [tr.id for tr in a.run.tracks] == [tr.id for tr in b.run.tracks] and a.lengths == b.lengths


def test_no_overwrite_refuses_existing_outputs(sim, tmp_path):
    existing = tmp_path / "trx.label"
    existing.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="trx.label"):
            predict_files(sim["tagger"], [sim["tracks"]["trx"]], out_dir=tmp_path, overwrite=overwrite, device="cpu")
    assert existing.read_text() == "mine"


def test_hand_made_labels_next_to_the_track_file_are_never_replaced(sim, tmp_path, capsys):
    """`predict MODEL exp1/trx.mat --out exp1` used to replace the lab's own exp1/trx.label."""
    exp = tmp_path / "exp1"
    exp.mkdir()
    track = exp / "trx.mat"
    shutil.copy(sim["tracks"]["trx"], track)
    hand_made = exp / "trx.label"
    shutil.copy(label_file_path(sim["tracks"]["trx"]), hand_made)  # a real .label, not written by predict
    before = hand_made.read_bytes()
    assert not is_maggotflow_label(hand_made)
    for extra in ([], ["--overwrite"]):
        assert cli_main(["predict", str(sim["tagger"]), str(track), "--out", str(exp), "--device", "cpu",
                         *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"maggotflow predict: error: {hand_made}: {FOREIGN_LABEL}"]
        assert hand_made.read_bytes() == before
    # --keep-going: the others are tagged, the refused one is listed as failed
    spine = exp / sim["tracks"]["spine"].name
    shutil.copy(sim["tracks"]["spine"], spine)
    assert cli_main(["predict", str(sim["tagger"]), str(track), str(spine), "--out", str(exp), "--device", "cpu",
                     "--keep-going"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == "wrote 1 .label file(s)"
    assert f"  {hand_made}: {FOREIGN_LABEL}" in captured.err.splitlines()
    assert hand_made.read_bytes() == before and is_maggotflow_label(exp / (spine.stem + ".label"))
    assert sorted(p.name for p in exp.iterdir()) == sorted([track.name, hand_made.name, spine.name,
                                                            spine.stem + ".label"])  # no temporary


def test_own_predictions_are_marked_and_replaced_only_on_request(sim, tmp_path, capsys):
    track = sim["tracks"]["spine"]
    out = tmp_path / (track.stem + ".label")
    predict_files(sim["tagger"], [track], out_dir=tmp_path, device="cpu")
    doc = json.loads(out.read_text(encoding="utf-8"))
    from maggotflow import __version__
    mark = doc["metadata"]["maggotflow"]
    domain_check = mark.pop("domain_check")  # the file's domain check comes last (tests/test_domain.py)
    assert mark == {
        "version": __version__, "model": sim["tagger"].name, "model_sha1": fingerprint(sim["tagger"]),
        "read": {"framerate": 30.0, "pixelsize_um": None, "spine_order": "auto", "min_steps": 2, "outlines": False}}
    assert domain_check["verdict"] in (None, "ok", "unlike_training")
    assert is_maggotflow_label(out)
    first = out.read_bytes()
    out.write_bytes(first.replace(b'"labels": [', b'"labels":  [', 1))  # mark an edit we can detect
    edited = out.read_bytes()
    with pytest.raises(OutputExistsError, match="give --overwrite"):
        predict_files(sim["tagger"], [track], out_dir=tmp_path, device="cpu")
    assert out.read_bytes() == edited
    assert cli_main(["predict", str(sim["tagger"]), str(track), "--out", str(tmp_path), "--device", "cpu",
                     "--overwrite"]) == 0
    assert out.read_bytes() == first
    capsys.readouterr()
    # Readable by the lab: the umask's modes for the labels, the model folder and its files.
    from maggotflow.atomic import current_umask
    umask = current_umask()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert oct(sim["tagger"].stat().st_mode & 0o777) == oct(0o777 & ~umask)
    assert {oct(p.stat().st_mode & 0o777) for p in sim["tagger"].rglob("*") if p.is_file()} == {oct(0o666 & ~umask)}


# ---------------------------------------------------------------------------- CLI
def test_cli_predict(sim, tmp_path, capsys):
    tracks = [str(sim["tracks"][f]) for f in FORMATS]
    out = tmp_path / "out"
    common = ["--device", "cpu", "--pixelsize-um", str(SIM.fimtrack_pixelsize_um)]
    assert cli_main(["predict", str(sim["tagger"]), *tracks, "--out", str(out), *common]) == 0
    assert capsys.readouterr().out.strip() == "wrote 3 .label file(s)"
    reference = predict_files(sim["tagger"], tracks, out_dir=tmp_path / "ref", device="cpu", read_options=FIMTRACK)
    assert label_bytes(sorted(out.iterdir())) == label_bytes(sorted(reference))

    # --input-list (comments and blank lines ignored) and --out-paths
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# inputs\n{tracks[1]}\n\n")
    one = tmp_path / "one" / "x.label"
    assert cli_main(["predict", str(sim["tagger"]), "--input-list", str(listing), "--out-paths", str(one),
                     *common]) == 0
    assert one.read_bytes() == (tmp_path / "ref" / "trx.label").read_bytes()
    capsys.readouterr()

    def one_line_error(argv, code=1):
        assert cli_main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    bad = bad_inputs(sim, tmp_path / "bad")
    line = one_line_error(["predict", str(sim["tagger"]), tracks[0], str(bad["garbage"]), "--out",
                           str(tmp_path / "o2"), *common])
    assert str(bad["garbage"]) in line
    line = one_line_error(["predict", str(tmp_path / "no-model"), tracks[0], "--out", str(tmp_path / "o3")])
    assert "no-model" in line
    pretrained_only = tmp_path / "pretrained"
    ModelInstance("pretrained", SPEC, ModelInstance.load(sim["tagger"]).encoder_config).save(pretrained_only)
    line = one_line_error(["predict", str(pretrained_only), tracks[0], "--out", str(tmp_path / "o4")])
    assert "not a tagger" in line
    line = one_line_error(["predict", str(sim["tagger"]), tracks[1], str(sim["iso"]["trx"]), "--out",
                           str(tmp_path / "o5")])
    assert "trx.label" in line
    line = one_line_error(["predict", str(sim["tagger"]), tracks[1], "--out", str(out), "--no-overwrite"])
    assert line == f"maggotflow predict: error: {out / 'trx.label'}: {OWN_LABEL}"
    assert one_line_error(["predict", str(sim["tagger"]), "--out", str(out)], code=2).endswith("no input file given")
    assert not any((tmp_path / d).exists() for d in ("o3", "o4", "o5"))

    # --keep-going: the good files are tagged, the bad ones listed, exit 1
    o6 = tmp_path / "o6"
    assert cli_main(["predict", str(sim["tagger"]), tracks[0], str(bad["truncated"]), tracks[2],
                     str(bad["garbage"]), "--out", str(o6), "--keep-going", *common]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == "wrote 2 .label file(s)"
    err = captured.err.strip().splitlines()
    assert err[0] == "maggotflow predict: 2 of 4 input(s) failed:"
    assert [line.split(":")[0].strip() for line in err[1:]] == [str(bad["truncated"]), str(bad["garbage"])]
    assert sorted(p.name for p in o6.iterdir()) == sorted([Path(tracks[0]).stem + ".label",
                                                           Path(tracks[2]).stem + ".label"])


def test_unwritable_output_is_one_line_and_keeps_the_failed_files(sim, tmp_path, capsys):
    """A full disk or read-only folder used to end in a traceback, losing the list of failures."""
    garbage = tmp_path / "garbage.spine"
    garbage.write_text("not a spine file\n")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    assert cli_main(["predict", str(sim["tagger"]), str(garbage), str(sim["tracks"]["spine"]), "--out",
                     str(blocked / "labels"), "--device", "cpu", "--keep-going"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:2] == ["maggotflow predict: 1 of 2 input(s) failed:", f"  {garbage}: is not a Choreography .spine "
                       "file (first line does not start with 'YYYYMMDD_HHMMSS <larva> <t>')"]
    assert err[2:] == [f"maggotflow predict: error: {blocked}: cannot write (a file of that name is in the way "
                       "of the folder)"]
    assert blocked.read_text() == "a file where the output folder should be"


def test_console_entry_point_bad_input_is_one_line(sim, tmp_path):
    garbage = tmp_path / "garbage.spine"
    garbage.write_text("not a spine file\n")
    done = subprocess.run([sys.executable, "-m", "maggotflow.cli", "predict", str(sim["tagger"]), str(garbage),
                           "--out", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"maggotflow predict: error: {garbage}: "), lines
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "garbage.label").exists()


def test_cli_threads_option_sets_torch_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cli_main(["--threads", "1", "simulate", str(tmp_path / "sim"), "--files", "1", "--seed", "3"]) == 0
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit):
            cli_main(["--threads", "0", "simulate", str(tmp_path / "sim2")])
        assert not (tmp_path / "sim2").exists()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- shards (workflow jobs)
def shard_of(sim, tmp_path):
    """The 3 simulated tracks copied (so they can be edited), and where a shard job puts their labels."""
    files, outs = [], []
    for fmt, track in sim["tracks"].items():
        copy = tmp_path / "tracks" / fmt / track.name
        copy.parent.mkdir(parents=True)
        shutil.copy2(track, copy)
        files.append({"id": fmt, "path": str(copy)})
        outs.append(tmp_path / "labels" / fmt / (copy.stem + ".label"))
    return files, outs


def test_a_shard_tagged_again_keeps_current_labels_and_hashes_only_changed_files(sim, tmp_path, monkeypatch):
    from maggotflow import runend, runtables, shards

    files, outs = shard_of(sim, tmp_path)
    table = tmp_path / "shard.tsv"
    rows = shards.tag_shard(sim["tagger"], files, outs, table, FIMTRACK, device="cpu")
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert [r["track_sha1"] for r in rows] == [file_sha1(f["path"]) for f in files]
    # Each row carries its file's head/tail decision as its label records it (kept rows below too).
    for row, out in zip(rows, outs):
        assert {k: row[k] for k in runtables.ORIENTATION_COLUMNS} == \
            runtables.orientation_cells(read_label_file(out).metadata)
    assert [r["spine_order_decided_by"] for r in rows] == ["motion", "file", "file"]  # .spine, trx.mat, FIMTrack
    assert all(r["spine_order"] == "head_first" and r["spine_order_evidence"] == "supports" for r in rows)
    assert all(float(r["spine_order_forward_fraction"]) > 0.8 and float(r["spine_order_moving_s"]) >= 5
               for r in rows)
    assert runend.orientation_line("run", rows) == "run: head/tail of 3 tagged files: 1 decided by the " \
        "larvae's motion, 2 named by the track file; 0 contradicted by the motion (columns spine_order* of summary.tsv)"
    runtables.write_shard_table(table, rows)
    first = label_bytes(outs)
    mtimes = [o.stat().st_mtime_ns for o in outs]

    hashed = []
    real_sha1 = shards.file_sha1
    monkeypatch.setattr(shards, "file_sha1", lambda p: hashed.append(str(p)) or real_sha1(p))
    # Nothing changed: nothing hashed, nothing tagged (the model is not even loaded).
    monkeypatch.setattr("maggotflow.prediction.predict_files", lambda *a, **k: pytest.fail("tagged again"))
    assert shards.tag_shard(sim["tagger"], files, outs, table, FIMTRACK, device="cpu") == rows
    assert hashed == [] and [o.stat().st_mtime_ns for o in outs] == mtimes
    monkeypatch.undo()
    monkeypatch.setattr(shards, "file_sha1", lambda p: hashed.append(str(p)) or real_sha1(p))

    # The .spine copied over itself with its mtime kept (cp -p): only it is hashed, its label
    # is kept (same bytes); the trx.mat edited with its mtime put back: hashed and re-tagged;
    # the FIMTrack label deleted: re-tagged.
    spine, trx, fim = (Path(f["path"]) for f in files)
    shutil.copy2(sim["tracks"]["spine"], spine)
    stat = trx.stat()
    with h5py.File(trx, "r+") as f:
        f.attrs["note"] = "edited"
    os.utime(trx, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    outs[2].unlink()
    again = shards.tag_shard(sim["tagger"], files, outs, table, FIMTRACK, device="cpu")
    assert sorted(hashed) == sorted([str(spine), str(trx)])
    assert [r["status"] for r in again] == ["ok"] * 3
    assert outs[0].stat().st_mtime_ns == mtimes[0] and label_bytes(outs)[0] == first[0]  # kept
    assert again[1]["track_sha1"] == file_sha1(trx) != rows[1]["track_sha1"]  # re-tagged from the new bytes
    assert label_bytes(outs)[2] == first[2]  # re-made, the same bytes

    # Another model (its fingerprint) or other read options: nothing is current.
    runtables.write_shard_table(table, again)
    other = ReadOptions(framerate=FIMTRACK.framerate, pixelsize_um=FIMTRACK.pixelsize_um, min_steps=3)
    assert all(shards.current_row(f["id"], f["path"], o, prediction_mark(sim["tagger"], other), r,
                                  runtables.track_stat(f["path"])) is None for f, o, r in zip(files, outs, again))
    assert all(shards.current_row(f["id"], f["path"], o, prediction_mark(sim["tagger_rule"], FIMTRACK), r,
                                  runtables.track_stat(f["path"])) is None for f, o, r in zip(files, outs, again))


def test_a_shard_never_removes_a_users_label_and_a_bad_file_fails_alone(sim, tmp_path):
    from maggotflow import shards

    files, outs = shard_of(sim, tmp_path)
    outs[0].parent.mkdir(parents=True)
    outs[0].write_text('{"metadata": {"id": "mine"}, "labels": ["run"], "data": []}\n')
    Path(files[1]["path"]).write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    errors = []
    rows = shards.tag_shard(sim["tagger"], files, outs, None, FIMTRACK, device="cpu",
                            on_error=lambda path, err: errors.append(str(err)))
    assert [r["status"] for r in rows] == ["failed", "failed", "ok"]
    assert "exists and was not written by maggotflow" in rows[0]["problem"]
    assert outs[0].read_text().startswith('{"metadata": {"id": "mine"}')  # never replaced, never removed
    assert not outs[1].exists() and outs[2].is_file() and len(errors) == 2


def test_a_shard_row_of_a_file_read_the_wrong_way_round_is_named(sim, tmp_path):
    """The .spine file forced tail first (config read.spine_order): its row says so, and the
    end-of-run warning names it with the figure that contradicts it."""
    from maggotflow import runend, runtables, shards

    files, outs = shard_of(sim, tmp_path)
    forced = ReadOptions(framerate=FIMTRACK.framerate, pixelsize_um=FIMTRACK.pixelsize_um, spine_order="tail_first")
    [row] = shards.tag_shard(sim["tagger"], files[:1], outs[:1], None, forced, device="cpu")
    assert (row["spine_order"], row["spine_order_decided_by"], row["spine_order_evidence"]) == \
        ("tail_first", "configured", "contradicts")
    assert float(row["spine_order_forward_fraction"]) < 0.2
    warning = runend.orientation_warning("results/predict/r", [row])
    assert warning.startswith("results/predict/r: head and tail may be swapped in 1 of 1 tagged file ")
    assert f"{files[0]['path']}: read.spine_order tail_first, the motion contradicts it (forward motion " in warning


def test_a_run_shard_mirrors_the_tree_under_labels_and_clears_a_killed_attempts_temporaries(sim, tmp_path):
    from maggotflow import shards
    from maggotflow.atomic import temporary_name

    files, _ = shard_of(sim, tmp_path / "data")
    for f in files:
        f["relpath"] = str(Path(f["path"]).relative_to(tmp_path / "data"))
    table = tmp_path / "run" / "shards" / "s1.tsv"
    outs = shards.shard_label_paths(table, files)
    assert outs == [tmp_path / "run" / "labels" / Path(f["relpath"]).with_suffix(".label") for f in files]
    outs[0].parent.mkdir(parents=True)
    stale = outs[0].parent / temporary_name(outs[0], "killed")
    stale.write_text("half a label")

    rows = shards.tag_run_shard(sim["tagger"], files, table, FIMTRACK, device="cpu")

    assert [r["status"] for r in rows] == ["ok"] * 3 and [r["label"] for r in rows] == [str(o) for o in outs]
    assert all(o.is_file() for o in outs) and not stale.exists()
