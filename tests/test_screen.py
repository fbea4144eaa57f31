"""Screen summary (`maggotflow.screen`, `maggotflow summarize`): known fractions, bouts and transitions."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from maggotflow.cli import main
from maggotflow.formats.label import LabelFile, read_label_file, write_label_file
from maggotflow.screen import format_number, label_metadata, summarize
from maggotflow.tracks import TrackDataError

NAMES = ["run", "cast", "stop_large"]


def rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def steps_of(pattern):
    """'rrrcc.' -> [("run",), ("run",), ("run",), ("cast",), ("cast",), ()]."""
    code = {"r": ("run",), "c": ("cast",), "s": ("stop_large",), ".": (), "h": ("run", "hunch")}
    return [code[ch] for ch in pattern]


def write(path, tracks, names=NAMES, **metadata):
    lf = LabelFile(metadata={"id": "x", **metadata}, names=list(names),
                   tracks={larva: (np.asarray(t, float), steps) for larva, (t, steps) in tracks.items()})
    write_label_file(path, lf)
    return path


def test_hand_built_fractions_bouts_and_transitions(tmp_path):
    # larva 1: 10 steps at 0.1 s: run x4, cast x2, run x2, stop x2 -> run 0.6, cast 0.2, stop 0.2
    t = np.arange(10) * 0.1
    # larva 2: a time gap (0.1 s steps, then a jump of 5 s) and unlabelled steps
    t2 = np.r_[np.arange(6) * 0.1, 5.5 + np.arange(4) * 0.1]
    path = write(tmp_path / "20200101_120000@GEN_A@UAS_X@t15@p1@100.label",
                 {"1": (t, steps_of("rrrrccrrss")), "2": (t2, steps_of("rrr.ccrrrr"))})
    s = summarize([path], tmp_path / "out", plots=False)
    assert (s.files, s.larvae, s.failed) == (1, 2, [])
    per_larva = {(r["larva"], r["behaviour"]): r for r in rows(s.tables["per_larva"])}
    r = per_larva[("1", "run")]
    assert r["genotype"] == "GEN_A" and r["effector"] == "UAS_X" and r["tracker"] == "t15" and r["protocol"] == "p1"
    assert float(r["fraction"]) == pytest.approx(0.6) and float(r["time_s"]) == pytest.approx(0.6)
    assert r["bouts"] == "2" and float(r["mean_bout_s"]) == pytest.approx(0.3)
    assert float(r["median_bout_s"]) == pytest.approx(0.3)
    assert float(per_larva[("1", "cast")]["fraction"]) == pytest.approx(0.2)
    assert per_larva[("1", "stop_large")]["bouts"] == "1"
    assert float(r["duration_s"]) == pytest.approx(1.0) and float(r["labelled_s"]) == pytest.approx(1.0)
    # larva 2 (details in the next test): its gap and unlabelled step stop its transitions
    assert float(per_larva[("2", "run")]["labelled_s"]) == pytest.approx(1.0)
    # transitions: larva 1 run->cast, cast->run, run->stop; larva 2: none across "." and none across the gap
    trans = {(r["group"], r["from"], r["to"]): r for r in rows(s.tables["transitions"])}
    assert trans[("all", "run", "cast")]["count"] == "1"
    assert float(trans[("all", "run", "cast")]["probability"]) == pytest.approx(0.5)
    assert float(trans[("all", "run", "stop_large")]["probability"]) == pytest.approx(0.5)
    assert trans[("all", "cast", "run")]["count"] == "1"
    assert sum(int(r["count"]) for k, r in trans.items() if k[0] == "all") == 3


def test_gap_and_unlabelled_steps_exactly(tmp_path):
    t = np.r_[np.arange(6) * 0.1, 5.5 + np.arange(4) * 0.1]
    path = write(tmp_path / "a.label", {"7": (t, steps_of("rrr.ccrrrr"))})
    s = summarize([path], tmp_path / "out", plots=False)
    by = {r["behaviour"]: r for r in rows(s.tables["per_larva"])}
    # step durations: 0.1 x5, the step before the gap capped at 0.2, then 0.1 x3 and the last one 0.1
    assert float(by["run"]["time_s"]) == pytest.approx(0.3 + 0.4)
    assert float(by["cast"]["time_s"]) == pytest.approx(0.1 + 0.2)
    assert float(by["run"]["labelled_s"]) == pytest.approx(1.0)
    assert by["run"]["bouts"] == "2" and by["cast"]["bouts"] == "1"
    assert float(by["run"]["fraction"]) == pytest.approx(0.7)
    assert rows(s.tables["transitions"]) == []  # "." and the gap break every transition


def test_groups_by_genotype_from_file_names(tmp_path):
    t = np.arange(100) * 0.1
    folder = tmp_path / "labels"
    expected = {}
    for i, (genotype, run_steps) in enumerate([("GEN_A", 80), ("GEN_A", 60), ("GEN_B", 20)]):
        tracks = {str(k + 1): (t, [("run",)] * (run_steps + 10 * k) + [("cast",)] * (100 - run_steps - 10 * k))
                  for k in range(2)}
        write(folder / f"2020010{i}_120000@{genotype}@UAS_X@t5@p1@100.label", tracks)
        expected.setdefault(genotype, []).extend((run_steps + 10 * k) / 100 for k in range(2))
    s = summarize(sorted(folder.iterdir()), tmp_path / "out", group_by=["genotype"], plots=True)
    groups = {(r["group"], r["behaviour"]): r for r in rows(s.tables["groups"])}
    for genotype, fractions in expected.items():
        r = groups[(genotype, "run")]
        assert r["genotype"] == genotype and int(r["larvae"]) == len(fractions)
        assert float(r["fraction_mean"]) == pytest.approx(np.mean(fractions), rel=1e-3)
        # histogram median (resolution 0.005): between the two middle values for an even count
        middle = sorted(fractions)[(len(fractions) - 1) // 2: len(fractions) // 2 + 1]
        assert middle[0] - 0.005 <= float(r["fraction_median"]) <= middle[-1] + 0.005
        assert float(r["fraction_sd"]) == pytest.approx(np.std(fractions, ddof=1), rel=1e-3)
        assert float(r["bouts_per_min"]) == pytest.approx(6.0)  # one run bout per 10-s larva
        assert middle[0] * 10 / 1.05 <= float(r["median_bout_s"]) <= middle[-1] * 10 * 1.05
    assert int(groups[("GEN_A", "run")]["files"]) == 2 and groups[("all", "run")]["larvae"] == "6"
    per_file = {(r["file"].rsplit("/", 1)[-1][:8], r["behaviour"]): r for r in rows(s.tables["per_file"])}
    assert float(per_file[("20200100", "run")]["fraction"]) == pytest.approx(0.85)  # (80 + 90) / 200
    assert per_file[("20200100", "run")]["larvae"] == "2"
    assert all(p.stat().st_size > 10_000 for p in s.plots.values())
    assert set(s.plots) == {"fraction_by_group", "bout_durations", "transitions"}


def test_simulated_reference_labels(tmp_path):
    from maggotflow.simulation import simulate_file

    tracks = [simulate_file(tmp_path / "sim", i, seed=3) for i in range(2)]
    labels = [p.with_suffix(".label") for p in tracks]
    s = summarize(labels, tmp_path / "out", plots=False)
    per_larva = rows(s.tables["per_larva"])
    for label in labels:
        lf = read_label_file(label)
        larva, (t, steps) = next(iter(lf.tracks.items()))
        dt = np.diff(t)
        med = np.median(dt[dt > 0])
        d = np.minimum(np.append(dt, med), 2 * med)
        primary = np.array([st[0] if st else "" for st in steps])
        labelled = d[primary != ""].sum()
        got = {r["behaviour"]: r for r in per_larva if r["file"] == str(label) and r["larva"] == larva}
        for name in lf.names:
            want = d[primary == name].sum() / labelled
            assert float(got[name]["fraction"]) == pytest.approx(want, rel=1e-3, abs=1e-4)
            runs = [k for k in range(len(primary)) if primary[k] == name and (k == 0 or primary[k - 1] != name
                                                                               or dt[k - 1] > 2 * med)]
            assert int(got[name]["bouts"]) == len(runs)
        meta = label_metadata(label, lf.metadata, lf.dependencies)
        assert got[lf.names[0]]["genotype"] == meta["genotype"] != ""


def test_broken_file_is_skipped_and_listed(tmp_path):
    good = write(tmp_path / "good.label", {"1": (np.arange(5) * 0.1, steps_of("rrccs"))})
    broken = tmp_path / "broken.label"
    broken.write_text('{"metadata": {"id": "x"}, "labels": ["run"], "data": [', encoding="utf-8")
    missing = tmp_path / "missing.label"
    s = summarize([good, broken, missing], tmp_path / "out", plots=False)
    assert s.files == 1 and [p for p, _ in s.failed] == [str(broken), str(missing)]
    failed = rows(s.tables["failed"])
    assert [r["file"] for r in failed] == [str(broken), str(missing)]
    assert "truncated" in failed[0]["problem"]
    with pytest.raises(TrackDataError, match="broken.label.*none of the 1 label file"):
        summarize([broken], tmp_path / "out2", plots=False)
    assert not (tmp_path / "out2" / "per_larva.tsv").exists()  # nothing half-written
    assert not [p for p in (tmp_path / "out2").iterdir() if p.name.endswith(".part")]


def test_larvatagger_label_file_without_provenance(tmp_path):
    # LarvaTagger's own file: labels as {"names", "colors"}, integer-like string ids, multi-label
    # steps, a trx.mat dependency, no maggotflow mark and no metadata beyond the id.
    folder = tmp_path / "t15" / "GMR_X@UAS_Y" / "p_LED" / "20200101_120000"
    folder.mkdir(parents=True)
    text = ('{"metadata": {"id": "20200101_120000"}, "units": {"t": "s"},\n'
            '"labels": {"names": ["run", "cast", "hunch"], "colors": ["#000000", "#e41a1c", "#377eb8"]},\n'
            '"dependencies": {"filename": "trx.mat", "sha1": "0"},\n'
            '"data": [{"id": "3", "t": [0.0, 0.1, 0.2, 0.3], "labels": ["run", ["run", "hunch"], "cast", []]}]}\n')
    (folder / "trx.label").write_text(text, encoding="utf-8")
    s = summarize([folder / "trx.label"], tmp_path / "out", plots=False)
    by = {r["behaviour"]: r for r in rows(s.tables["per_larva"])}
    assert by["run"]["larva"] == "3"
    assert (by["run"]["genotype"], by["run"]["effector"], by["run"]["tracker"], by["run"]["protocol"]) == \
        ("GMR_X", "UAS_Y", "t15", "p_LED")
    assert float(by["run"]["fraction"]) == pytest.approx(2 / 3, rel=1e-3)  # ["run", "hunch"] counts as run
    assert float(by["hunch"]["fraction"]) == 0 and by["hunch"]["bouts"] == "0"


def test_cli_on_a_folder(tmp_path, capsys):
    t = np.arange(30) * 0.0333333
    folder = tmp_path / "run"
    for i, genotype in enumerate(["GEN_A", "GEN_B"]):
        write(folder / genotype / f"2020010{i}_120000@{genotype}@UAS_X@t5@p1@100.label",
              {"1": (t, steps_of("r" * 7 + "c" * 11 + "s" * 12))})
    (folder / "GEN_A" / "notes.txt").write_text("not a label")
    code = main(["summarize", str(folder), "--out", str(tmp_path / "out"), "--group-by", "genotype,effector"])
    out = capsys.readouterr().out
    assert code == 0
    assert "summarised 2 label file(s)" in out and "groups.tsv" in out and "fraction_by_group.png" in out
    assert re.search(r"GEN_A / UAS_X\s+1\s+1\s+0\.233", out)
    for name in ("per_larva", "per_file", "groups", "transitions", "failed"):
        text = (tmp_path / "out" / f"{name}.tsv").read_text()
        assert not re.search(r"\d\.\d{6,}", text), name  # no 16-digit floats
    assert rows(tmp_path / "out" / "groups.tsv")[0]["effector"] == "UAS_X"
    assert main(["summarize", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1


def test_cli_metadata_from_manifest(tmp_path, capsys):
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    (tracks / "a.spine").write_text("")
    labels = tmp_path / "predict" / "run1"
    write(labels / "a.label", {"1": (np.arange(4) * 0.1, steps_of("rrcc"))}, dependencies=None)
    (tmp_path / "manifest.tsv").write_text(f"path\tgenotype\tcondition\n{tracks / 'a.spine'}\tGEN_M\thot\n")
    code = main(["summarize", str(labels), "--out", str(tmp_path / "out"), "--metadata",
                 str(tmp_path / "manifest.tsv"), "--group-by", "genotype,condition", "--no-plots"])
    assert code == 0
    r = rows(tmp_path / "out" / "groups.tsv")[0]
    assert (r["group"], r["genotype"], r["condition"]) == ("GEN_M / hot", "GEN_M", "hot")
    assert not (tmp_path / "out" / "transitions.png").exists()


def test_streaming_consumes_input_lazily(tmp_path):
    """Rows of a file are written before the next path is even asked for (bounded memory)."""
    t = np.arange(20) * 0.1
    paths = [write(tmp_path / f"{i}.label", {"1": (t, steps_of("r" * 10 + "c" * 10))}) for i in range(5)]
    out = tmp_path / "out"
    seen_rows = []

    def lazily():
        for p in paths:
            yield p
            temporaries = [q for q in out.iterdir() if q.name.startswith(".per_larva.tsv.")]
            assert len(temporaries) == 1
            seen_rows.append(temporaries[0].read_text().count("\n"))

    calls = []
    s = summarize(lazily(), out, plots=False, progress=lambda done, total: calls.append((done, total)))
    assert s.files == 5
    assert calls == [(i, 0) for i in range(1, 6)]
    # the rows of each file are on disk before the next path is taken: header + 3 behaviours per file
    assert seen_rows == [1 + 3 * (i + 1) for i in range(5)]
    assert len(rows(s.tables["per_larva"])) == 5 * 3


def test_format_number():
    assert format_number(0.1 + 0.2) == "0.3"
    assert format_number(2 / 3) == "0.6667"
    assert format_number(12345.678) == "12346"
    assert format_number(float("nan")) == "" and format_number(None) == ""
    assert format_number(7) == "7"


def test_per_file_carries_each_files_head_tail_decision(tmp_path):
    """per_file.tsv: the head/tail decision a reader recorded in the label (a real simulated
    .spine read as is, and forced the wrong way round); empty for a LarvaTagger label."""
    from maggotflow.formats import ReadOptions, read_run
    from maggotflow.formats.label import label_file_for_run
    from maggotflow.runtables import ORIENTATION_COLUMNS
    from maggotflow.simulation import SimulationConfig, simulate_file

    track = simulate_file(tmp_path / "sim", 0, seed=3, config=SimulationConfig(duration_s=20.0, larvae=(2, 2)))
    labels = []
    for name, order in (("auto", "auto"), ("forced", "tail_first")):
        run = read_run(track, ReadOptions(spine_order=order))
        labels.append(tmp_path / "labels" / f"{name}.label")
        labels[-1].parent.mkdir(exist_ok=True)
        write_label_file(labels[-1], label_file_for_run(run, labels={tr.id: [("run",)] * tr.n_steps
                                                                     for tr in run.tracks}))
    labels.append(write(tmp_path / "labels" / "larvatagger.label", {"1": (np.arange(5) * 0.1, steps_of("rrccs"))}))
    s = summarize(labels, tmp_path / "out", plots=False)
    per_file = {r["file"]: r for r in rows(s.tables["per_file"])}
    auto, forced, larvatagger = (per_file[str(p)] for p in labels)
    assert (auto["spine_order"], auto["spine_order_decided_by"], auto["spine_order_evidence"]) == \
        ("head_first", "motion", "supports")
    assert float(auto["spine_order_forward_fraction"]) > 0.8 and float(auto["spine_order_moving_s"]) >= 5
    assert (forced["spine_order"], forced["spine_order_decided_by"], forced["spine_order_evidence"]) == \
        ("tail_first", "configured", "contradicts")
    assert float(forced["spine_order_forward_fraction"]) < 0.2
    for label, row in zip(labels[:2], (auto, forced)):  # the label's own figures, as recorded
        metadata = read_label_file(label).metadata
        assert all(row[k] == str(metadata[k]) for k in ORIENTATION_COLUMNS)
    assert all(larvatagger[k] == "" for k in ORIENTATION_COLUMNS)
    # Grouped by one of its keys, the decision is a metadata column, not a second one.
    s = summarize(labels, tmp_path / "by_order", group_by=["spine_order_decided_by"], plots=False)
    with open(s.tables["per_file"], encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    assert len(header) == len(set(header)) and set(ORIENTATION_COLUMNS) <= set(header)
    assert {r["group"] for r in rows(s.tables["groups"])} >= {"motion", "configured", "unknown"}


def test_a_prediction_runs_summary_takes_its_tagged_files_and_their_manifest_metadata(tmp_path, caplog):
    """summarize_run (rule screen_summary): the ok rows of summary.tsv, grouped by the run's
    manifest matched by the mirrored relative path; without a manifest, a warning."""
    from maggotflow.runtables import shard_row, write_shard_table
    from maggotflow.screen import summarize_run

    run = tmp_path / "results" / "predict" / "run1"
    rows = []
    for ident, genotype in (("x", "GEN_X"), ("y", "GEN_Y")):
        label = write(run / "labels" / "sub" / f"{ident}.label", {"1": (np.arange(4) * 0.1, steps_of("rrcc"))})
        rows.append(shard_row(ident, str(tmp_path / "data" / "sub" / f"{ident}.spine"), label))
    rows.append(shard_row("z", str(tmp_path / "data" / "z.spine"), problem="unreadable"))
    write_shard_table(run / "summary.tsv", rows)
    (run / "manifest.tsv").write_text("id\tpath\trelpath\tgenotype\n"
                                      f"x\t{tmp_path}/data/sub/x.spine\tsub/x.spine\tGEN_X\n"
                                      f"y\t{tmp_path}/data/sub/y.spine\tsub/y.spine\tGEN_Y\n")
    s = summarize_run(run / "summary.tsv", run / "manifest.tsv", run / "screen", group_by=["genotype"])
    assert (s.files, s.failed, s.groups) == (2, [], ["GEN_X", "GEN_Y"])
    s = summarize_run(run / "summary.tsv", run / "none.tsv", run / "screen", group_by=["genotype"])
    assert s.groups == ["unknown"] and "no manifest" in caplog.text
