"""Bouts (`maggotflow.bouts`): one definition, so the evaluation's behaviour.tsv, the screen
summary and the ethograms measure a larva's bouts alike (time gaps and untagged steps end them)."""

from __future__ import annotations

import numpy as np
import pytest

from maggotflow.bouts import NO_BEHAVIOUR, find_bouts, step_codes, step_durations
from maggotflow.formats.label import LabelFile, write_label_file
from maggotflow.tsv import read_rows

CODES = {"run": 0, "cast": 1}
# 0.1-s steps with missing frames between 0.9 s and 5.0 s (a time gap).
T = np.r_[np.arange(10) * 0.1, 5.0 + np.arange(10) * 0.1]
# run x6, cast x4 | gap | cast x3, run x7: one behaviour on both sides of the gap.
STEPS = [("run",)] * 6 + [("cast",)] * 4 + [("cast",)] * 3 + [("run",)] * 7


def test_a_time_gap_ends_a_bout_and_the_step_before_it_lasts_at_most_two_intervals():
    bouts = find_bouts(T, step_codes(STEPS, CODES.get))
    assert bouts.code.tolist() == [0, 1, 1, 0]
    assert bouts.start_s == pytest.approx([0.0, 0.6, 5.0, 5.3])
    # cast before the gap: 3 steps of 0.1 s and the last one capped at 2 intervals.
    assert bouts.duration_s == pytest.approx([0.6, 0.5, 0.3, 0.7])
    assert bouts.transitions == [(0, 1), (1, 0)]  # none across the gap


def test_untagged_steps_and_names_outside_the_measured_set_belong_to_no_bout():
    steps = [("run",), ("run", "hunch"), (), ("edited", "cast"), ("hunch",), ("cast",)]
    codes = step_codes(steps, CODES.get)
    assert codes.tolist() == [0, 0, NO_BEHAVIOUR, 1, NO_BEHAVIOUR, 1]
    bouts = find_bouts(np.arange(6) * 0.1, codes)
    assert bouts.code.tolist() == [0, 1, 1] and bouts.duration_s == pytest.approx([0.2, 0.1, 0.1])
    assert bouts.transitions == []  # an unlabelled step between every pair
    assert step_durations(np.array([1.0])).tolist() == [0.0] and find_bouts([], []).code.size == 0


def write(path, names=("run", "cast")):
    lf = LabelFile(metadata={"id": "x"}, names=list(names), tracks={"1": (T, STEPS)},
                   dependencies=[{"filename": "x.spine", "sha1": "0" * 40}])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_file(path, lf)
    return path


def test_evaluation_and_screen_summary_give_the_same_bouts_of_one_larva(tmp_path):
    """The held-out run's labels: the evaluation's behaviour.tsv and the screen summary's
    per_larva.tsv count the same bouts with the same durations, across a time gap."""
    from maggotflow.evaluation import write_evaluation
    from maggotflow.screen import summarize

    predicted, reference = write(tmp_path / "pred" / "a.label"), write(tmp_path / "ref" / "a.label")
    write_evaluation([(predicted, reference)], tmp_path / "evaluation")
    summary = summarize([predicted], tmp_path / "screen", plots=False)
    screen = {r["behaviour"]: r for r in read_rows(summary.tables["per_larva"])}
    evaluation = {r["label"]: r for r in read_rows(tmp_path / "evaluation" / "behaviour.tsv")}
    expected = {"run": (2, 0.65), "cast": (2, 0.4)}  # bouts [0.6, 0.7] and [0.5, 0.3]
    for name, (n, median) in expected.items():
        assert int(screen[name]["bouts"]) == n and float(screen[name]["median_bout_s"]) == pytest.approx(median)
        for side in ("reference", "predicted"):
            assert int(evaluation[name][f"{side}_bouts"]) == n
            assert float(evaluation[name][f"{side}_median_bout_s"]) == pytest.approx(median)
