"""Evaluation: hand-computed metrics, matching rules, report files, CLI."""

import csv
import json
import logging

import numpy as np
import pytest

from maggotflow.cli import main
from maggotflow.evaluation import evaluate, format_table, pair_directories, write_report
from maggotflow.metrics import accuracy, confusion_matrix, macro_f1, per_class_scores
from maggotflow.tracks import TrackDataError


SAME_TRACK_FILE = {"filename": "x.spine", "sha1": "0" * 40}


def label_file(path, tracks, names=None, colors=False, dependencies=SAME_TRACK_FILE):
    """Write a LarvaTagger .label by hand. tracks: {id: (t list, labels list)};
    dependencies=None leaves the key out."""
    used = names or sorted({n for _, steps in tracks.values() for s in steps
                            for n in ([s] if isinstance(s, str) else s)})
    labels = {"names": used, "colors": ["#000000"] * len(used)} if colors else used
    doc = {
        "metadata": {"id": "20240101_120000", "tracker": "t15"},
        "units": {"t": "s"},
        "labels": labels,
        **({} if dependencies is None else {"dependencies": dependencies}),
        "data": [{"id": larva, "t": t, "labels": steps} for larva, (t, steps) in tracks.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


T1 = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
REF = {
    "1": (T1, ["run", "run", "run", "run", "cast", "cast", "cast", [], "hunch", ["run", "hunch"]]),
    "2": ([0.0, 0.1, 0.2, 0.3], ["run", "cast", "cast", "hunch"]),
}
# Predicted times are 0.8 ms late (still matched) except at 0.5 s, 2 ms late (unmatched).
# Larva 2 has no prediction at all; larva 3 is not in the reference (ignored).
PRED_T1 = [round(t + (0.002 if t == 0.5 else 0.0008), 4) for t in T1]
PRED = {
    "1": (PRED_T1, ["run", "run", "cast", "run", "cast", "run", "cast", "cast", "hunch", "hunch"]),
    "3": ([0.0, 0.1], ["roll", "roll"]),
}


@pytest.fixture
def pair(tmp_path):
    ref = label_file(tmp_path / "ref" / "a.label", REF, colors=True)
    pred = label_file(tmp_path / "pred" / "a.label", PRED)
    return pred, ref


def test_hand_computed_metrics(pair):
    report = evaluate([pair], labels=["run", "cast", "hunch"])
    # Larva 1: 0.0 0.1 0.3 run->run; 0.2 run->cast; 0.4 0.6 cast->cast; 0.5 cast->(missing)
    # (2 ms off); 0.7 untagged -> ignored; 0.8 hunch->hunch; 0.9 (run, hunch) predicted hunch
    # -> correct, row hunch. Larva 2 absent: run, cast, cast, hunch -> (missing).
    #            run cast hunch (other) (missing)
    # run         3    1    0     0       1        support 5
    # cast        0    2    0     0       3        support 5
    # hunch       0    0    2     0       1        support 3
    assert report.columns == ["run", "cast", "hunch", "(other)", "(missing)"]
    assert report.confusion.tolist() == [[3, 1, 0, 0, 1], [0, 2, 0, 0, 3], [0, 0, 2, 0, 1]]
    assert report.n_steps == 13 and report.n_missing == 5 and report.n_ignored == 1
    # precision: run 3/3, cast 2/3, hunch 2/2; recall: run 3/5, cast 2/5, hunch 2/3
    # F1: run 2*1*.6/1.6 = .75; cast 2*(2/3)*.4/(2/3+.4) = .5; hunch 2*1*(2/3)/(5/3) = .8
    m = report.per_label
    assert m["run"]["precision"] == pytest.approx(1.0) and m["run"]["recall"] == pytest.approx(0.6)
    assert m["cast"]["precision"] == pytest.approx(2 / 3) and m["cast"]["recall"] == pytest.approx(0.4)
    assert m["hunch"]["precision"] == pytest.approx(1.0) and m["hunch"]["recall"] == pytest.approx(2 / 3)
    assert [m[n]["f1"] for n in ("run", "cast", "hunch")] == pytest.approx([0.75, 0.5, 0.8])
    assert [m[n]["support"] for n in ("run", "cast", "hunch")] == [5, 5, 3]
    assert report.macro_f1 == pytest.approx((0.75 + 0.5 + 0.8) / 3)
    assert report.accuracy == pytest.approx(7 / 13)
    assert report.files[0]["n_steps"] == 13 and report.files[0]["n_correct"] == 7


def test_label_subset_ignores_other_reference_labels_and_counts_other_predictions(pair):
    report = evaluate([pair], labels=["run", "cast"])
    # hunch-only reference steps are ignored (0.8 s, larva 2's last step) besides 0.7 s;
    # 0.9 s (run, hunch) is a run step whose prediction (hunch) is outside the set: (other).
    #          run cast (other) (missing)
    # run       3    1    1       1
    # cast      0    2    0       3
    assert report.confusion.tolist() == [[3, 1, 1, 1], [0, 2, 0, 3]]
    assert report.n_ignored == 3
    # run: P 1, R 3/6, F1 2/3; cast: P 2/3, R 2/5, F1 .5
    assert report.per_label["run"]["f1"] == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.5) / 2)
    assert report.accuracy == pytest.approx(5 / 11)


def test_default_labels_and_zero_support_label_outside_macro_f1(tmp_path):
    ref = label_file(tmp_path / "r.label", {"1": ([0.0, 0.1, 0.2, 0.3], ["run", "run", "cast", "cast"])},
                     names=["run", "cast", "hunch"])
    pred = label_file(tmp_path / "p.label", {"1": ([0.0, 0.1, 0.2, 0.3], ["run", "roll", "cast", "cast"])})
    report = evaluate([(pred, ref)])
    # Names used in the reference in declaration order (hunch is declared but unused), then
    # names used only in the predictions.
    assert report.labels == ["run", "cast", "roll"]
    assert report.confusion[:, :3].tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    roll = report.per_label["roll"]
    assert roll == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # run: P 1, R .5, F1 2/3; cast: P 1, R 1, F1 1; roll (support 0) not averaged.
    assert report.macro_f1 == pytest.approx((2 / 3 + 1.0) / 2)
    assert report.accuracy == pytest.approx(3 / 4)


def test_metrics_macro_f1_is_over_classes_with_support():
    # Training's validation macro-F1 used to average over classes present in truth *or*
    # predictions, the evaluation over classes with support: one metric now (maggotflow.metrics).
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 2, 1, 1])  # class 2 is predicted once but never true
    cm = confusion_matrix(truth, predicted, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    scores = per_class_scores(cm)
    assert scores.support.tolist() == [2, 2, 0] and scores.f1[2] == 0.0
    assert macro_f1(cm) == pytest.approx((2 / 3 + 1.0) / 2)  # not ((2/3 + 1 + 0) / 3)
    assert accuracy(cm) == pytest.approx(3 / 4)
    assert macro_f1(np.zeros((3, 3), dtype=np.int64)) == 0.0 and accuracy(np.zeros((3, 3))) == 0.0


def test_metrics_extra_columns_lower_recall_only():
    # rows = true class; columns 0..1 predicted classes, then one "(missing)" column.
    cm = np.array([[2, 0, 2], [1, 1, 0]])
    scores = per_class_scores(cm)
    np.testing.assert_allclose(scores.precision, [2 / 3, 1.0])
    np.testing.assert_allclose(scores.recall, [0.5, 0.5])
    assert scores.support.tolist() == [4, 2]
    assert accuracy(cm) == pytest.approx(3 / 6)


def test_synonyms_and_untagged_predictions(tmp_path):
    ref = label_file(tmp_path / "r.label", {"1": ([0.0, 0.1, 0.2], ["run_large", "cast_large", "cast_large"])},
                     names=["run_large", "cast_large"])
    pred = label_file(tmp_path / "p.label", {"1": ([0.0, 0.1, 0.2], ["run", [], "cast"])})
    report = evaluate([(pred, ref)], synonyms={"run_large": "run", "cast_large": "cast"})
    assert report.labels == ["run", "cast"]
    assert report.confusion.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1]]  # untagged prediction = missing


def test_time_matching_tolerance_is_one_millisecond(tmp_path):
    t = [1.0, 1.1, 1.2]
    ref = label_file(tmp_path / "r.label", {"7": (t, ["run", "run", "run"])})
    pred = label_file(tmp_path / "p.label", {"7": ([1.001, 1.0995, 1.2015], ["run", "run", "run"])})
    report = evaluate([(pred, ref)])
    assert report.confusion.tolist() == [[2, 0, 1]]  # 1 ms late, 0.5 ms early -> matched; 1.5 ms late -> missing


def test_multiple_pairs_accumulate(tmp_path, pair):
    ref2 = label_file(tmp_path / "ref" / "b.label", {"1": ([0.0, 0.1], ["hunch", "hunch"])})
    pred2 = label_file(tmp_path / "pred" / "b.label", {"1": ([0.0, 0.1], ["hunch", "run"])})
    report = evaluate([pair, (pred2, ref2)], labels=["run", "cast", "hunch"])
    assert report.confusion.tolist() == [[3, 1, 0, 0, 1], [0, 2, 0, 0, 3], [1, 0, 3, 0, 1]]
    assert [f["n_steps"] for f in report.files] == [13, 2]


def test_nothing_to_evaluate_is_an_error(tmp_path):
    ref = label_file(tmp_path / "r.label", {"1": ([0.0], [[]])}, names=["run"])
    pred = label_file(tmp_path / "p.label", {"1": ([0.0], ["run"])})
    with pytest.raises(ValueError, match="no reference time step"):
        evaluate([(pred, ref)])


def test_report_files_and_table(pair, tmp_path):
    report = evaluate([pair], labels=["run", "cast", "hunch"])
    out = tmp_path / "report"
    write_report(report, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(7 / 13)
    assert metrics["confusion"]["counts"][1] == [0, 2, 0, 0, 3]
    with open(out / "per_label.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["run", "cast", "hunch"]
    assert float(rows[2]["f1"]) == pytest.approx(0.8) and rows[2]["support"] == "3"
    with open(out / "confusion.csv") as f:
        table = list(csv.reader(f))
    assert table[0][1:] == ["run", "cast", "hunch", "(other)", "(missing)"]
    assert table[1] == ["run", "3", "1", "0", "0", "1"]
    png = (out / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list(out.glob("*.part"))
    text = format_table(report)
    assert "hunch" in text and "0.800" in text and "macro-F1 0.683" in text and "accuracy 0.538" in text


def test_pair_directories(tmp_path):
    label_file(tmp_path / "ref" / "x" / "a.label", REF)
    label_file(tmp_path / "ref" / "b.label", REF)
    label_file(tmp_path / "pred" / "x" / "a.label", PRED)  # same relative path
    label_file(tmp_path / "pred" / "elsewhere" / "b.label", PRED)  # same, unique name
    pairs = pair_directories(tmp_path / "pred", tmp_path / "ref")
    assert [(p.relative_to(tmp_path).as_posix(), r.relative_to(tmp_path).as_posix()) for p, r in pairs] == [
        ("pred/elsewhere/b.label", "ref/b.label"), ("pred/x/a.label", "ref/x/a.label")]
    # Several predictions of the same name (e.g. trx.label): the one of the same track file.
    track_file = {"filename": "trx.mat", "sha1": "3" * 40}
    label_file(tmp_path / "ref" / "t" / "trx.label", REF, dependencies=track_file)
    label_file(tmp_path / "pred" / "u" / "trx.label", PRED)
    label_file(tmp_path / "pred" / "v" / "trx.label", PRED, dependencies=track_file)
    pairs = pair_directories(tmp_path / "pred", tmp_path / "ref")
    assert (tmp_path / "pred/v/trx.label", tmp_path / "ref/t/trx.label") in pairs
    label_file(tmp_path / "ref" / "c.label", REF)
    with pytest.raises(ValueError, match="1 reference file"):
        pair_directories(tmp_path / "pred", tmp_path / "ref")


def test_cli(pair, tmp_path, capsys):
    pred, ref = pair
    out = tmp_path / "report"
    assert main(["evaluate", "--predicted", str(pred), "--reference", str(ref), "--out", str(out),
                 "--labels", "run,cast,hunch"]) == 0
    assert "macro-F1 0.683" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"metrics.json", "per_label.csv", "confusion.csv", "confusion.png"}
    assert main(["evaluate", "--predicted-dir", str(pred.parent), "--reference-dir", str(ref.parent),
                 "--labels", "run,cast,hunch"]) == 0
    assert "accuracy 0.538" in capsys.readouterr().out
    assert main(["evaluate", "--predicted", str(pred), str(pred), "--reference", str(ref)]) == 2
    assert "same number of files" in capsys.readouterr().err
    bad = tmp_path / "bad.label"
    bad.write_text('{"metadata": {"id": "x"}, "labels": [], "data": [')
    assert main(["evaluate", "--predicted", str(bad), "--reference", str(ref)]) == 1
    assert "bad.label" in capsys.readouterr().err


def test_unreadable_label_file_names_it(tmp_path):
    ref = label_file(tmp_path / "r.label", REF)
    with pytest.raises(TrackDataError, match="missing.label"):
        evaluate([(tmp_path / "missing.label", ref)])


SEVEN = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]
SIX = ["run", "cast", "back", "hunch", "roll", "stop_large"]


def test_reference_labels_the_tagger_does_not_predict_are_left_out_with_a_warning(tmp_path, caplog, capsys):
    # A 7-behaviour reference against a 6-behaviour tagger, --synonyms forgotten: only
    # stop_large is a name both use.
    ref = label_file(tmp_path / "r.label", {"1": (T1, ["run_large"] * 3 + ["cast_large"] * 2 + ["stop_large"] * 3
                                                  + ["small_motion"] * 2)}, names=SEVEN)
    pred = label_file(tmp_path / "p.label", {"1": (T1, ["run"] * 3 + ["cast"] * 2 + ["stop_large"] * 5)}, names=SIX)
    with caplog.at_level(logging.WARNING, logger="maggotflow.evaluation"):
        report = evaluate([(pred, ref)])
    # Rows: the reference's names the tagger declares, then the names it predicts. The 7
    # foreign steps are not rows (their F1 would be 0 by construction), so macro-F1 is over
    # stop_large only: 3/3 correct, precision 1 (the small_motion steps predicted stop_large
    # are left out with their rows).
    assert report.labels == ["stop_large", "run", "cast"]
    assert report.confusion.tolist() == [[3, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert report.n_steps == 3 and report.n_foreign == 7 and report.n_ignored == 7
    assert report.foreign_labels == {"run_large": 3, "cast_large": 2, "small_motion": 2}
    assert report.macro_f1 == 1.0 and report.accuracy == 1.0
    assert report.to_dict()["foreign_labels"] == {"run_large": 3, "cast_large": 2, "small_motion": 2}
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith("7 of 10 labelled reference step(s) carry only labels the tagger does not predict")
    assert "run_large: 3, cast_large: 2, small_motion: 2" in message
    assert "left out of the evaluation and of macro-F1" in message
    assert "give --synonyms run_large=run,cast_large=cast " in message
    assert format_table(report).splitlines()[-1] == f"warning: {message}"
    # The command prints it as the last line of its report.
    assert main(["evaluate", "--predicted", str(pred), "--reference", str(ref)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"warning: {message}"
    # With the synonyms, only small_motion is left: it really is not a behaviour of the tagger.
    report = evaluate([(pred, ref)], synonyms={"run_large": "run", "cast_large": "cast"})
    assert report.labels == ["run", "cast", "stop_large"] and report.foreign_labels == {"small_motion": 2}
    assert report.macro_f1 == 1.0 and report.n_steps == 8
    # Nothing in common at all: an error that says what to do, not a report of zeros.
    ref7 = label_file(tmp_path / "r7.label", {"1": (T1[:3], ["run_large", "cast_large", "cast_large"])}, names=SEVEN)
    with pytest.raises(ValueError, match=r"cast_large: 2, run_large: 1 step\(s\)\) are all labels the tagger does "
                                         r"not predict .*give --synonyms cast_large=cast,run_large=run"):
        evaluate([(pred, ref7)])
    # An explicit label the tagger does not declare stays in macro-F1, with a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="maggotflow.evaluation"):
        report = evaluate([(pred, ref)], labels=["stop_large", "small_motion"])
    assert report.macro_f1 == pytest.approx((0.75 + 0.0) / 2)  # stop_large P 3/5 R 1; small_motion 0
    assert any("small_motion are not declared by the predicted files" in r.getMessage() for r in caplog.records)


def test_cli_prints_the_confusion_matrix(pair, capsys):
    pred, ref = pair
    assert main(["evaluate", "--predicted", str(pred), "--reference", str(ref), "--labels", "run,cast,hunch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("confusion matrix (counts of reference steps)")
    assert lines[at + 1].split() == ["reference", "\\", "predicted", "run", "cast", "hunch", "(missing)"]
    # (other) holds nothing, so it is not shown (as in confusion.png).
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[at + 2:at + 5]}
    assert rows == {"run": [3, 1, 0, 1], "cast": [0, 2, 0, 3], "hunch": [0, 0, 2, 1]}


def test_ignore_ends_leaves_out_the_steps_near_each_track_end(pair, capsys):
    labels = ["run", "cast", "hunch"]
    assert evaluate([pair], labels=labels).n_steps == 13
    # 0.1 s: larva 1 (0.0-0.9 s) loses 0.0 and 0.9, larva 2 (0.0-0.3 s) 0.0 and 0.3; a step
    # exactly 0.1 s from an end is kept.
    report = evaluate([pair], labels=labels, ignore_ends=0.1)
    assert report.n_steps == 13 - 4 and report.n_at_ends == 4 and report.n_ignored == 1
    # 0.15 s: larva 1 loses 0.0, 0.1, 0.8, 0.9; larva 2 all four steps.
    report = evaluate([pair], labels=labels, ignore_ends=0.15)
    assert report.n_steps == 13 - 8 and report.n_at_ends == 8 and report.files[0]["n_at_ends"] == 8
    assert report.confusion.tolist() == [[1, 1, 0, 0, 0], [0, 2, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert report.to_dict()["ignore_ends"] == 0.15
    pred, ref = pair
    assert main(["evaluate", "--predicted", str(pred), "--reference", str(ref), "--labels", "run,cast,hunch",
                 "--ignore-ends", "0.1"]) == 0
    assert "(9 steps, " in capsys.readouterr().out
    with pytest.raises(ValueError, match="ignore_ends"):
        evaluate([pair], ignore_ends=-1)


def test_predicted_and_reference_of_different_track_files_is_an_error(tmp_path, caplog, capsys):
    tracks = {"1": ([0.0, 0.1], ["run", "cast"])}
    ref = label_file(tmp_path / "ref.label", tracks)
    pred = label_file(tmp_path / "pred.label", tracks, dependencies={"filename": "y.spine", "sha1": "1" * 40})
    with pytest.raises(TrackDataError) as err:
        evaluate([(pred, ref)])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{pred}: predicted from the track file y.spine (sha1 {'1' * 40})")
    assert f"its reference {ref} labels x.spine (sha1 {'0' * 40}): not the same track file" in message
    assert main(["evaluate", "--predicted", str(pred), "--reference", str(ref)]) == 1
    assert capsys.readouterr().err == f"maggotflow evaluate: error: {message}\n"
    # Without dependencies the pairing cannot be checked: a warning naming the file.
    bare = label_file(tmp_path / "bare.label", tracks, dependencies=None)
    # The .spine and .outline of one Choreography run have different sha1s: a warning only.
    outline = label_file(tmp_path / "outline.label", tracks, dependencies={"filename": "x.outline", "sha1": "2" * 40})
    with caplog.at_level(logging.WARNING, logger="maggotflow.evaluation"):
        assert evaluate([(bare, ref), (outline, ref)]).n_steps == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{bare}: no track-file sha1 in its 'dependencies': cannot check that it labels the same track file " \
           f"as {ref}" in warnings
    assert any(w.startswith(f"{outline}: predicted from x.outline but the reference") for w in warnings)


# ---------------------------------------------------------------------------- report material


def test_per_file_scores_evaluate_each_pair_alone(pair, tmp_path):
    from maggotflow.evaluation import per_file_scores

    other = (label_file(tmp_path / "pred" / "b.label", {"1": (T1, ["run"] * 10)}),
             label_file(tmp_path / "ref" / "b.label", {"1": (T1, ["run"] * 5 + ["cast"] * 5)}))
    rows = per_file_scores([pair, other], labels=["run", "cast", "hunch"])
    alone = evaluate([pair], labels=["run", "cast", "hunch"])
    assert [r["reference"] for r in rows] == [str(pair[1]), str(other[1])]
    assert rows[0]["macro_f1"] == pytest.approx(alone.macro_f1) and rows[0]["n_steps"] == 13
    assert rows[1]["accuracy"] == pytest.approx(0.5) and rows[1]["n_steps"] == 10


def test_compare_behaviour_time_fractions_and_bouts(pair, tmp_path):
    from maggotflow.evaluation import compare_behaviour, write_behaviour

    report = evaluate([pair], labels=["run", "cast", "hunch"])
    rows, durations = compare_behaviour(report, [pair])
    by = {r["label"]: r for r in rows}
    # Fractions of the 13 evaluated steps: the confusion matrix's row and column sums.
    assert [by[n]["reference_fraction"] for n in ("run", "cast", "hunch")] == pytest.approx([5 / 13, 5 / 13, 3 / 13])
    assert [by[n]["predicted_fraction"] for n in ("run", "cast", "hunch")] == pytest.approx([3 / 13, 3 / 13, 2 / 13])
    # Reference bouts, larva 1: run 0-0.3 (0.4 s), cast 0.4-0.6 (0.3 s), [untagged], hunch
    # 0.8, run 0.9 (the (run, hunch) step: first in label-set order); larva 2: run, cast
    # cast, hunch. Predicted: larva 1 only (larva 3 is not in the reference).
    assert sorted(durations["run"]["reference"]) == pytest.approx([0.1, 0.1, 0.4])
    assert sorted(durations["cast"]["reference"]) == pytest.approx([0.2, 0.3])
    assert [by[n]["predicted_bouts"] for n in ("run", "cast", "hunch")] == [3, 3, 1]
    assert by["cast"]["reference_median_bout_s"] == pytest.approx(0.25)
    write_behaviour(rows, durations, tmp_path / "behaviour.tsv", tmp_path / "behaviour.png")
    lines = (tmp_path / "behaviour.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["label", "reference_fraction", "predicted_fraction"] and len(lines) == 4
    assert (tmp_path / "behaviour.png").read_bytes()[:4] == b"\x89PNG"


def test_simulated_data_are_recognised(tmp_path):
    from maggotflow.report import is_simulated
    from maggotflow.simulation import SimulationConfig, simulate

    tracks = simulate(tmp_path / "sim", 1, config=SimulationConfig(duration_s=2, larvae=(1, 1)))
    assert is_simulated(tracks) and is_simulated([tmp_path / "sim"])
    real = tmp_path / "real" / "a.spine"
    real.parent.mkdir()
    real.write_text("")
    (tmp_path / "real" / "README.txt").write_text("Our screen, 2024\n")
    assert not is_simulated([real], stop=[tmp_path])


def test_a_prediction_runs_tagged_files_are_paired_with_their_references(tmp_path, caplog):
    """run_pairs (rule evaluate_heldout): ok rows of summary.tsv, sorted by reference; a file
    not tagged is left out with a warning. write_evaluation writes every file of the folder."""
    from maggotflow.evaluation import EVALUATION_FILES, run_pairs, write_evaluation
    from maggotflow.runtables import shard_row, write_shard_table

    references = {}
    rows = []
    for ident in ("b", "a"):
        label = label_file(tmp_path / "pred" / f"{ident}.label", PRED)
        references[ident] = str(label_file(tmp_path / "ref" / f"{ident}.label", REF))
        rows.append(shard_row(ident, f"/data/{ident}.spine", label))
    rows.append(shard_row("c", "/data/c.spine", problem="unreadable"))
    write_shard_table(tmp_path / "summary.tsv", rows)
    pairs = run_pairs(tmp_path / "summary.tsv", references)
    assert pairs == [(str(tmp_path / "pred" / "a.label"), references["a"]),
                     (str(tmp_path / "pred" / "b.label"), references["b"])]
    assert "/data/c.spine: not tagged, left out of the evaluation" in caplog.text
    caplog.clear()
    report = write_evaluation(pairs, tmp_path / "out", labels=["run", "cast", "hunch"])
    # Each pair is read and checked once: its warning (larva 2 has no prediction) is logged once.
    assert caplog.text.count("have no prediction") == 2
    assert report.n_steps == 26 and sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(EVALUATION_FILES)
