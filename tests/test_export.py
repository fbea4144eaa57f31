"""maggotflow.export: a run's labels copied next to the track files, never over a user's file."""

import numpy as np

from maggotflow import tsv
from maggotflow.export import FOREIGN, export_labels
from maggotflow.formats.label import LabelFile, provenance_mark, write_label_file


def predicted_label(path, name="run", marked=True):
    metadata = {"id": "x", "maggotflow": provenance_mark()} if marked else {"id": "x"}
    label = LabelFile(metadata=metadata, names=["run", "cast"],
                      tracks={"1": (np.array([0.0, 0.1]), [(name,), (name,)])})
    write_label_file(path, label)
    return path


def summary_rows(tmp_path, tracks):
    """A run's summary rows: `tracks` {track name: label name or None (not tagged)}."""
    rows = []
    for name, label in tracks.items():
        track = tmp_path / "data" / name
        track.parent.mkdir(exist_ok=True)
        track.write_text("not read")
        if label is None:
            rows.append({"path": str(track), "label": "", "status": "failed"})
        else:
            rows.append({"path": str(track), "label": str(predicted_label(tmp_path / label)), "status": "ok"})
    return rows


def statuses(out):
    return {row["path"].rsplit("/", 1)[1]: row["status"] for row in tsv.read_rows(out)}


def test_every_status_and_a_users_file_is_never_replaced(tmp_path):
    rows = summary_rows(tmp_path, {"a.spine": "a.label", "b.spine": "b.label", "c.spine": "c.label",
                                   "d.csv": "d.label", "e.spine": None})
    data = tmp_path / "data"
    (data / "b.predicted.label").write_bytes((tmp_path / "b.label").read_bytes())  # same bytes
    predicted_label(data / "c.predicted.label", name="cast")  # an earlier export that differs
    hand_made = predicted_label(data / "d.predicted.label", marked=False)
    before = hand_made.read_bytes()

    counts = export_labels(rows, tmp_path / "exported.tsv", overwrite=False)

    assert statuses(tmp_path / "exported.tsv") == {"a.spine": "written", "b.spine": "unchanged", "c.spine": "kept",
                                                   "d.csv": FOREIGN, "e.spine": "failed"}
    assert (counts.written, counts.kept) == (1, 2)
    assert (data / "a.predicted.label").read_bytes() == (tmp_path / "a.label").read_bytes()
    assert hand_made.read_bytes() == before
    assert not (data / "e.predicted.label").exists()


def test_overwrite_replaces_an_earlier_export_but_never_a_users_file(tmp_path):
    rows = summary_rows(tmp_path, {"c.spine": "c.label", "d.spine": "d.label"})
    data = tmp_path / "data"
    predicted_label(data / "c.predicted.label", name="cast")
    hand_made = predicted_label(data / "d.predicted.label", marked=False)
    before = hand_made.read_bytes()

    export_labels(rows, tmp_path / "exported.tsv", overwrite=True)

    assert statuses(tmp_path / "exported.tsv") == {"c.spine": "written", "d.spine": FOREIGN}
    assert (data / "c.predicted.label").read_bytes() == (tmp_path / "c.label").read_bytes()
    assert hand_made.read_bytes() == before


def test_a_track_name_with_a_tab_round_trips_in_the_table(tmp_path):
    rows = summary_rows(tmp_path, {"odd\tname.spine": "a.label"})
    export_labels(rows, tmp_path / "exported.tsv", overwrite=False)
    assert statuses(tmp_path / "exported.tsv") == {"odd\tname.spine": "written"}
