"""Ethograms (`maggotflow.ethogram`): per larva, predicted above reference bouts, one PNG per file."""

from __future__ import annotations

import numpy as np
import pytest

from maggotflow.formats.label import LabelFile, write_label_file
from maggotflow.runtables import shard_row, write_shard_table

pytest.importorskip("matplotlib")

T = np.r_[np.arange(10) * 0.1, 5.0 + np.arange(10) * 0.1]  # a time gap after 0.9 s


def write(path, tracks, names=("run", "cast")):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_file(path, LabelFile(metadata={"id": "x"}, names=list(names), tracks=tracks))
    return path


def test_bars_are_bouts_with_gaps_and_untagged_steps_left_blank(tmp_path):
    from maggotflow.ethogram import ethogram_figure

    steps = [("run",)] * 8 + [()] * 2 + [("run",)] * 5 + [("cast",)] * 5
    predicted = write(tmp_path / "pred.label", {"1": (T, steps), "2": (T[:4], [("cast",)] * 4)})
    reference = write(tmp_path / "ref.label", {"1": (T, [("run",)] * 20)})
    fig = ethogram_figure(predicted, reference, "a/$weird$ name.spine")
    ax = fig.axes[0]
    boxes = [len(c.get_paths()) for c in ax.collections]
    # larva 1 predicted: run (two bouts: the gap) and cast; reference: run, split by the gap; larva 2: cast
    assert sorted(boxes) == [1, 1, 2, 2]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["larva 1", "larva 2"]
    assert ax.get_xlim() == pytest.approx((0.0, 5.9))


def test_the_first_n_tagged_files_of_a_run_by_track_path(tmp_path):
    from maggotflow.ethogram import run_ethograms

    rows, references = [], {}
    for ident in ("b", "a", "c"):
        label = write(tmp_path / "pred" / f"{ident}.label", {"1": (T, [("run",)] * 20)})
        references[ident] = str(write(tmp_path / "ref" / f"{ident}.label", {"1": (T, [("cast",)] * 20)}))
        rows.append(shard_row(ident, str(tmp_path / "tracks" / f"{ident}.spine"), label))
    rows.append(shard_row("d", str(tmp_path / "tracks" / "0.spine"), problem="unreadable"))
    write_shard_table(tmp_path / "summary.tsv", rows)
    written = run_ethograms(tmp_path / "summary.tsv", references, tmp_path / "no-manifest.tsv", 2,
                            tmp_path / "ethograms")
    assert [p.name for p in written] == ["a.png", "b.png"]  # the failed file is not drawn
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert sorted(p.name for p in (tmp_path / "ethograms").iterdir()) == ["a.png", "b.png"]
