"""The records the workflow's jobs exchange (maggotflow.records): shard tables, failure
records, and what a failed run's summary says; plus the manifest loading the workflow uses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from maggotflow import manifest as mf
from maggotflow import records
from maggotflow.simulation import SimulationConfig, simulate
from maggotflow.tracks import TrackDataError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_changed_labels_finds_missing_and_edited_labels_cheaply(tmp_path):
    labels = [touch(tmp_path / f"{k}.label", f"label {k}\n") for k in range(3)]
    rows = [records.shard_row(f"id{k}", f"/t/{k}.spine", label) for k, label in enumerate(labels)]
    rows.append(records.shard_row("id3", "/t/3.spine", problem="is truncated"))
    table = tmp_path / "shard.tsv"
    table.write_text(records.shard_table_text(rows))
    assert records.read_shard_table(table) == rows and rows[3]["status"] == "failed"
    assert records.changed_labels(rows) == []
    os.utime(labels[2], ns=(1, 1))  # touched, same bytes: not changed
    assert records.changed_labels(records.read_shard_table(table)) == []
    labels[0].unlink()
    labels[1].write_text("label X\n")  # same size, other bytes
    assert records.changed_labels(records.read_shard_table(table)) == [str(labels[0]), str(labels[1])]
    assert records.stale_labels(table) == [str(labels[0]), str(labels[1])]
    assert records.stale_labels(tmp_path / "absent.tsv") == []
    table.write_bytes(b"\xff\xfe not text")
    assert records.stale_labels(table) == [str(table)]  # unreadable: the shard is redone


def test_failure_records_round_trip_and_age(tmp_path):
    log = tmp_path / "logs" / "predict" / "run" / "s1.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    records.write_failures(log, [("/d/a.spine", "is truncated\n  at line 3"), ("/d/b.csv", "no larva")])
    assert records.failure_record(log) == log.with_suffix(".failed")
    assert records.read_failures(log) == {"/d/a.spine": "is truncated at line 3", "/d/b.csv": "no larva"}
    found = records.recent_failures([tmp_path / "logs"], since=time.time() - 60)
    assert sorted(f for f, _, _ in found) == ["/d/a.spine", "/d/b.csv"] and {lg for _, _, lg in found} == {log}
    # A record from an earlier run (older than this run's start) is not this run's.
    os.utime(records.failure_record(log), (1, 1))
    assert records.read_failures(log, since=time.time()) == {}
    assert records.recent_failures([tmp_path / "logs"], since=time.time()) == []
    warnings = records.end_of_run_warnings([tmp_path / "logs"], since=0.0)
    assert warnings[0].startswith("2 input(s) failed") and str(log) in warnings[0]


def test_a_failed_runs_summary_never_says_ok_without_a_label(tmp_path):
    run, logs = tmp_path / "results/predict/r", tmp_path / "logs/predict/r"
    label = touch(run / "labels" / "a.label", "x\n")
    records.write_shard_table(run / "shards" / "s1.tsv", [records.shard_row("a", "/d/a.spine", label)])
    touch(logs / "s2.log")
    records.write_failures(logs / "s2.log", [("/d/b.spine", "is truncated")])
    shards = {"s1": ["a"], "s2": ["b", "c"], "s3": ["d"]}
    tracks = {"a": "/d/a.spine", "b": "/d/b.spine", "c": "/d/c.spine", "d": "/d/d.spine"}
    start = time.time()
    warning = records.rewrite_unfinished_summary(run, logs, shards, tracks, since=start)
    assert warning.startswith(f"{run / 'summary.tsv'}: 2 prediction job(s) did not finish")
    rows = {r["id"]: r for r in records.read_shard_table(run / "summary.tsv")}
    assert rows["a"]["status"] == "ok" and rows["a"]["label"] == str(label)
    assert (rows["b"]["status"], rows["b"]["problem"]) == ("failed", "is truncated")
    assert rows["c"]["status"] == rows["d"]["status"] == "not tagged"
    assert str(logs / "s3.log") in rows["d"]["problem"]
    # What a failed job wrote next to its log is taken as it is.
    records.write_shard_table(records.unfinished_table(logs / "s3.log"), [records.shard_row("d", "/d/d.spine", label)])
    records.rewrite_unfinished_summary(run, logs, shards, tracks, since=start)
    assert {r["id"]: r["status"] for r in records.read_shard_table(run / "summary.tsv")}["d"] == "ok"
    # Every shard finished: the summary is the summary job's, left alone.
    assert records.rewrite_unfinished_summary(run, logs, {"s1": ["a"]}, tracks, since=start) is None


def test_load_manifest_records_a_scan_only_when_the_inputs_are_good(tmp_path):
    out = tmp_path / "results" / "manifest.tsv"
    empty = tmp_path / "empty"
    touch(empty / "video.avi", "RIFF")
    with pytest.raises(TrackDataError, match=r"empty: no track file matching .*video.avi: unknown extension"):
        mf.load_manifest(empty, None, out)
    assert not out.parent.exists()
    with pytest.raises(TrackDataError, match="no input: set a track_dir or a manifest"):
        mf.load_manifest(None, None, out)
    simulate(tmp_path / "data", 2, seed=1, config=SimulationConfig(duration_s=4, larvae=(1, 1)))
    found = mf.load_manifest(tmp_path / "data", None, out)
    assert len(found) == len(mf.read_manifest(out)) > 0 and Path(mf.skipped_file(out)).is_file()
    # A job process neither scans nor writes: it reads what the main process recorded.
    touch(tmp_path / "data" / "late" / "x.spine", "")
    again = mf.load_manifest(tmp_path / "data", None, out, scan=False, record=False)
    assert again.ids == found.ids


def test_held_out_files_must_be_labelled_and_never_training_files(tmp_path):
    simulate(tmp_path / "data", 4, seed=2, config=SimulationConfig(duration_s=4, larvae=(1, 1)))
    inputs = mf.build_manifest(tmp_path / "data")
    held = mf.heldout_subset(inputs, 0.5, seed=0)
    assert 0 < len(held) < len(inputs) and all(r["label"] for r in held)
    mf.check_heldout(held)
    with pytest.raises(TrackDataError, match="listed both for training and for evaluation"):
        mf.check_heldout(held, training=inputs)
    with pytest.raises(TrackDataError, match="no labelled file to hold out"):
        mf.check_heldout(inputs.subset([]))
    unlabelled = mf.Manifest([dict(r, label="") for r in held], held.root)
    with pytest.raises(TrackDataError, match="held-out file without a .label file"):
        mf.check_heldout(unlabelled)
