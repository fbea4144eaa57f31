"""The records the workflow's jobs exchange and what a run says at its end: shard tables and
summary.tsv (maggotflow.runtables, with odd file names), failure records and end-of-run
lines (maggotflow.runend), the track stat; plus the manifest loading the workflow uses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from maggotflow import heldout
from maggotflow import manifest as mf
from maggotflow import runend, runtables
from maggotflow.simulation import SimulationConfig, simulate
from maggotflow.tracks import TrackDataError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_changed_labels_finds_missing_and_edited_labels_cheaply(tmp_path):
    labels = [touch(tmp_path / f"{k}.label", f"label {k}\n") for k in range(3)]
    rows = [runtables.shard_row(f"id{k}", f"/t/{k}.spine", label) for k, label in enumerate(labels)]
    rows.append(runtables.shard_row("id3", "/t/3.spine", problem="is truncated"))
    table = tmp_path / "shard.tsv"
    table.write_text(runtables.shard_table_text(rows))
    assert runtables.read_shard_table(table) == rows and rows[3]["status"] == "failed"
    assert runtables.changed_labels(rows) == []
    os.utime(labels[2], ns=(1, 1))  # touched, same bytes: not changed
    assert runtables.changed_labels(runtables.read_shard_table(table)) == []
    labels[0].unlink()
    labels[1].write_text("label X\n")  # same size, other bytes
    assert runtables.changed_labels(runtables.read_shard_table(table)) == [str(labels[0]), str(labels[1])]


@pytest.mark.parametrize("name", ["tab\there.spine", "new\nline.spine", "cr\rname.spine", 'quo"te.spine',
                                  "-dash.spine", "comma,semi;.spine"])
def test_shard_tables_and_failure_records_round_trip_any_file_name(tmp_path, name):
    label = touch(tmp_path / "labels" / (name[:-6] + ".label"), "x\n")
    track = touch(tmp_path / "d" / name, "1 2 3\n")
    rows = [runtables.shard_row("a", str(track), label, track_sha1="f" * 40, stat=runtables.track_stat(track)),
            runtables.shard_row("b", str(tmp_path / "d" / ("b" + name)), problem="is\ttruncated\n at line 3")]
    table = tmp_path / "shard.tsv"
    runtables.write_shard_table(table, rows)
    back = runtables.read_shard_table(table)
    assert back == rows and len(back) == 2  # one row per file, whatever the name holds
    assert back[0]["track_size"] == "6" and back[1]["problem"] == "is truncated at line 3"
    log = tmp_path / "s.log"
    runend.write_failures(log, [(str(track), "is truncated")])
    assert runend.read_failures(log) == {str(track): "is truncated"}


def test_track_stat_digest_follows_size_mtime_and_ctime(tmp_path):
    track = touch(tmp_path / "a.spine", "1 2 3\n")
    before = runtables.tracks_stat_digest([track])
    assert runtables.tracks_stat_digest([track]) == before  # nothing read, nothing changed
    stat = os.stat(track)
    time.sleep(0.01)
    track.write_text("1 2 4\n")  # same size, and the mtime put back (cp -p, rsync -a, touch -r)
    os.utime(track, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(track).st_mtime_ns == stat.st_mtime_ns
    assert runtables.tracks_stat_digest([track]) != before  # the ctime moved
    assert runtables.track_stat(tmp_path / "absent.spine") == dict.fromkeys(runtables.TRACK_STAT_COLUMNS, "")


def test_failure_records_round_trip_and_age(tmp_path):
    log = tmp_path / "logs" / "predict" / "run" / "s1.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    runend.write_failures(log, [("/d/a.spine", "is truncated\n  at line 3"), ("/d/b.csv", "no larva")])
    assert runend.failure_record(log) == log.with_suffix(".failed")
    assert runend.read_failures(log) == {"/d/a.spine": "is truncated at line 3", "/d/b.csv": "no larva"}
    found = runend.recent_failures([tmp_path / "logs"], since=time.time() - 60)
    assert sorted(f for f, _, _ in found) == ["/d/a.spine", "/d/b.csv"] and {lg for _, _, lg in found} == {log}
    # A record from an earlier run (older than this run's start) is not this run's.
    os.utime(runend.failure_record(log), (1, 1))
    assert runend.read_failures(log, since=time.time()) == {}
    assert runend.recent_failures([tmp_path / "logs"], since=time.time()) == []
    warnings = runend.end_of_run_warnings([tmp_path / "logs"], since=0.0)
    assert warnings[0].startswith("2 input(s) failed") and str(log) in warnings[0]


def test_load_manifest_records_a_scan_only_when_the_inputs_are_good(tmp_path):
    out = tmp_path / "results" / "manifest.tsv"
    empty = tmp_path / "empty"
    touch(empty / "video.avi", "RIFF")
    with pytest.raises(TrackDataError, match=r"empty: no track file matching .* \(1 other entry skipped, "
                                             r"e.g. video.avi: unknown extension"):
        mf.load_manifest(empty, None, out)
    touch(empty / "notes.txt", "")
    with pytest.raises(TrackDataError, match=r"\(2 other entries skipped, e.g. "):
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
    held = heldout.heldout_subset(inputs, 0.5, seed=0)
    assert 0 < len(held) < len(inputs) and all(r["label"] for r in held)
    heldout.check_heldout(held)
    with pytest.raises(TrackDataError, match="listed both for training and for evaluation"):
        heldout.check_heldout(held, training=inputs)
    with pytest.raises(TrackDataError, match="no labelled file to hold out"):
        heldout.check_heldout(inputs.subset([]))
    unlabelled = mf.Manifest([dict(r, label="") for r in held], held.root)
    with pytest.raises(TrackDataError, match="held-out file without a .label file"):
        heldout.check_heldout(unlabelled)


# ------------------------------------------------------------------ head/tail decisions


def orientation_label(path: Path, **decision) -> Path:
    """A real `.label` file whose metadata records a head/tail decision (as a reader writes it)."""
    from maggotflow.formats.label import LabelFile, write_label_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_file(path, LabelFile(metadata={"id": path.stem, **decision}, names=["run"],
                                     tracks={"1": ([0.0, 0.1], [("run",), ("run",)])}))
    return path


MOTION = dict(spine_order="head_first", spine_order_decided_by="motion", spine_order_evidence="supports",
              spine_order_forward_fraction=0.93, spine_order_moving_steps=345, spine_order_moving_s=17.3,
              spine_order_head_sweep_ratio=1.71)


def test_shard_rows_carry_the_head_tail_decision_of_their_label(tmp_path):
    label = orientation_label(tmp_path / "a.label", **MOTION)
    row = runtables.shard_row("a", "/t/a.spine", label)
    assert {k: row[k] for k in runtables.ORIENTATION_COLUMNS} == {
        "spine_order": "head_first", "spine_order_decided_by": "motion", "spine_order_evidence": "supports",
        "spine_order_forward_fraction": "0.93", "spine_order_moving_s": "17.3", "spine_order_moving_steps": "345",
        "spine_order_head_sweep_ratio": "1.71"}
    # A label that records none (LarvaTagger's own, a user's text), or a failed file: empty cells.
    plain = orientation_label(tmp_path / "lt.label")
    failed = runtables.shard_row("c", "/t/c.spine", problem="is truncated")
    for empty in (runtables.shard_row("b", "/t/b.spine", plain), failed):
        assert all(empty[k] == "" for k in runtables.ORIENTATION_COLUMNS)
    # A null figure (no moving window: forward fraction undefined) is an empty cell.
    assert runtables.orientation_cells({**MOTION, "spine_order_forward_fraction": None})[
        "spine_order_forward_fraction"] == ""
    table = tmp_path / "shard.tsv"
    runtables.write_shard_table(table, [row, failed])
    assert runtables.read_shard_table(table) == [row, failed]
    # A table written before the columns existed still reads: they are empty.
    old = tmp_path / "old.tsv"
    old.write_text("id\tpath\tlabel\tstatus\tproblem\tdomain\tsha1\tsize\tmtime_ns\n"
                   f"a\t/t/a.spine\t{label}\tok\t\tok\t{row['sha1']}\t{row['size']}\t{row['mtime_ns']}\n")
    back = runtables.read_shard_table(old)
    assert back[0]["status"] == "ok" and all(back[0][k] == "" for k in runtables.ORIENTATION_COLUMNS)
    assert runend.orientation_line("run", back) == \
        "run: head/tail of 1 tagged file: 1 not recorded; 0 contradicted by the motion (columns spine_order* of " \
        "summary.tsv)"
    assert runend.orientation_warning("run", back) is None


def test_orientation_lines_count_decisions_and_name_the_files_to_check(tmp_path):
    def row(name, **decision):
        return runtables.shard_row(name, f"/t/{name}.spine", orientation_label(tmp_path / f"{name}.label",
                                                                               **{**MOTION, **decision}))

    moving = [row(f"m{k}") for k in range(3)]
    # All decided by motion: one short line, no warning.
    assert runend.orientation_line("results/predict/r", moving) == \
        "results/predict/r: head/tail of all 3 tagged files decided by the larvae's motion"
    assert runend.orientation_line("results/predict/r", moving[:1]) == \
        "results/predict/r: head/tail of the 1 tagged file decided by the larvae's motion"
    assert runend.orientation_warning("results/predict/r", moving) is None
    assert runend.orientation_line("r", [runtables.shard_row("x", "/t/x.spine", problem="bad")]) is None

    still = row("still", spine_order_decided_by="convention", spine_order_evidence="weak",
                spine_order_forward_fraction=None, spine_order_moving_steps=0, spine_order_moving_s=0.0)
    backing = row("backing", spine_order_decided_by="convention", spine_order_evidence="disagree",
                  spine_order_forward_fraction=0.2)
    forced = row("forced", spine_order="tail_first", spine_order_decided_by="configured",
                 spine_order_evidence="contradicts", spine_order_forward_fraction=0.07)
    named = row("named", spine_order_decided_by="file")
    swapped = row("swapped", spine_order_decided_by="file", spine_order_evidence="contradicts",
                  spine_order_forward_fraction=0.1)
    failed = runtables.shard_row("f", "/t/f.spine", problem="is truncated")
    rows = [*moving, still, backing, forced, named, swapped, failed]
    assert runend.orientation_line("results/predict/r", rows) == (
        "results/predict/r: head/tail of 8 tagged files: 3 decided by the larvae's motion, 1 set by "
        "read.spine_order, 2 named by the track file, 2 read head first by convention; 2 contradicted by the "
        "motion (columns spine_order* of summary.tsv)")
    assert [p for p, _ in runend.head_tail_doubts(rows)] == ["/t/still.spine", "/t/backing.spine",
                                                              "/t/forced.spine", "/t/swapped.spine"]
    warning = runend.orientation_warning("results/predict/r", rows, shown=3)
    lines = warning.splitlines()
    assert lines[0].startswith("results/predict/r: head and tail may be swapped in 4 of 8 tagged files")
    assert lines[1:] == [
        "  /t/still.spine: head first by convention, too little motion to tell (0.0 s moving, head/tail sweep "
        "ratio 1.71)",
        "  /t/backing.spine: head first by convention, crawling direction and head sweeps disagree (forward "
        "motion 20%, 17.3 s moving, head/tail sweep ratio 1.71)",
        "  /t/forced.spine: read.spine_order tail_first, the motion contradicts it (forward motion 7%, 17.3 s "
        "moving, head/tail sweep ratio 1.71)",
        "  ... and 1 more"]


def test_skipped_entries_are_counted_in_singular_and_plural(tmp_path):
    for n, words in ((1, "1 entry skipped"), (2, "2 entries skipped")):
        listing = tmp_path / f"skipped{n}.tsv"
        mf.write_skipped([(f"notes{k}.txt", "unknown extension") for k in range(n)], listing)
        [warning] = runend.end_of_run_warnings([], 0.0, [("/data", listing)])
        assert warning.startswith(f"/data: {words}, not track files (e.g. notes0.txt: unknown extension)")
    assert runtables.counted(1, "file") == "1 file" and runtables.counted(0, "file") == "0 files"


def test_run_end_helpers_count_tables_on_disk_and_name_what_a_run_produced(tmp_path):
    run = tmp_path / "results/predict/screen-1"
    labels = [touch(run / "labels" / f"{k}.label", f"label {k}\n") for k in range(3)]
    rows = [runtables.shard_row(f"id{k}", f"/t/{k}.spine", label) for k, label in enumerate(labels[:2])]
    rows.append(runtables.shard_row("id2", "/t/2.spine", problem="is truncated"))
    rows[1]["domain"] = runtables.UNLIKE_TRAINING
    tables = [run / "shards/s1.tsv", run / "shards/s2.tsv", run / "shards/missing.tsv"]
    runtables.write_shard_table(tables[0], rows[:2])
    runtables.write_shard_table(tables[1], rows[2:])
    broken = run / "shards/broken.tsv"
    broken.write_bytes(b"id\tpath\n\xff\xfe\n")  # not UTF-8: its labels cannot be checked

    assert runtables.tagged_in_tables(tables) == 2
    assert runtables.changed_labels_in_tables(tables) == []
    labels[0].unlink()
    assert runtables.changed_labels_in_tables(tables) == [str(labels[0])]
    assert runtables.changed_labels_in_tables([*tables, broken]) == [str(labels[0]), str(broken)]

    assert runend.run_lines(run, "/data/screen", exported=True) == []  # no summary.tsv yet
    runtables.write_shard_table(run / "summary.tsv", rows)
    touch(run / "exported.tsv")
    assert runend.run_lines(run, "/data/screen", exported=True) == [
        f"labels of /data/screen: {run / 'labels'} (2 file(s) tagged, 1 failed, 1 unlike the tagger's training data)",
        f"  also next to the track files (list: {run / 'exported.tsv'})"]
    (run / "screen").mkdir()
    assert runend.run_lines(run, "the held-out files", exported=False)[1:] == [f"  screen summary: {run / 'screen'}"]


def test_evaluation_line_reads_the_scores_or_names_the_file(tmp_path):
    metrics = touch(tmp_path / "metrics.json", '{"macro_f1": 0.91234, "accuracy": 0.95}')
    assert runend.evaluation_line(metrics) == f"held-out evaluation: macro-F1 0.912, accuracy 0.950 ({metrics})"
    metrics.write_text("{")
    assert runend.evaluation_line(metrics) == f"held-out evaluation: {metrics}"


def test_merge_shard_tables_sorts_by_path_and_says_what_failed_or_was_skipped(tmp_path, caplog):
    b, a = (runtables.shard_row(f"id{k}", f"/t/{k}.spine", touch(tmp_path / f"{k}.label")) for k in "ba")
    bad = runtables.shard_row("idc", "/t/c.spine", problem="is truncated")
    shards = [tmp_path / "s1.tsv", tmp_path / "s2.tsv"]
    runtables.write_shard_table(shards[0], [b, bad])
    runtables.write_shard_table(shards[1], [a])
    skipped = tmp_path / "skipped.tsv"
    mf.write_skipped([("notes.txt", "not a track file")], skipped)
    caplog.set_level("INFO", logger="maggotflow.runtables")

    rows = runtables.merge_shard_tables(shards, tmp_path / "summary.tsv", skipped)

    assert [r["path"] for r in rows] == ["/t/a.spine", "/t/b.spine", "/t/c.spine"]
    assert runtables.read_shard_table(tmp_path / "summary.tsv") == rows
    assert "2 file(s) tagged, 1 failed, 0 unlike the tagger's training data" in caplog.text
    assert "not tagged: /t/c.spine: is truncated" in caplog.text
    assert f"1 entry of the folder skipped, not track files; listed in {skipped}" in caplog.text
