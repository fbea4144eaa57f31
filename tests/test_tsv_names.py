"""Any legal file name round-trips through the scan, the manifest, skipped.tsv and the screen
summary's tables (`maggotflow.tsv`): tabs, newlines, CRs, quotes and leading dashes included."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maggotflow import names
from maggotflow import manifest as mf
from maggotflow import tsv
from maggotflow.cli import main
from maggotflow.formats.label import LabelFile, write_label_file
from maggotflow.screen import summarize
from maggotflow.tracks import TrackDataError

SPINE_LINE = "20200101_120000 1 0.000 1 2 3 4\n"
# One hard character each, and one name with all of them (in a folder with a tab too).
STEMS = ["tab\there", "new\nline", "carriage\rreturn", 'say "hi"', "-x", "-"]
ALL_AT_ONCE = 'sub\tdir/-\t"a"\r\nb c '


def weird_tree(root: Path, labels: bool = False) -> list[str]:
    """Track files (and, with `labels`, a .label beside each) with hard names; their relpaths."""
    relpaths = [f"{stem}.spine" for stem in STEMS] + [ALL_AT_ONCE + ".spine"]
    for k, relpath in enumerate(relpaths):
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SPINE_LINE)
        if labels:
            t = np.arange(20) * 0.1
            steps = [("run",)] * (5 + k) + [("cast",)] * (15 - k)
            lf = LabelFile(metadata={"id": str(k)}, names=["run", "cast"], tracks={"1": (t, steps)},
                           dependencies=[{"filename": path.name, "sha1": "0" * 40}])
            write_label_file(path.with_suffix(".label"), lf)
    return sorted(relpaths)


# ----------------------------------------------------------------------------- tsv itself

HARD_CELLS = ["plain", "", "a\tb", "a\nb", "a\rb", "a\r\nb", 'a"b', '"', "-x", " spaced ", "=1+1", "é ü 中"]


def test_cells_round_trip_and_plain_tables_look_as_before():
    text = tsv.format_rows(["name", "n"], [{"name": c, "n": k} for k, c in enumerate(HARD_CELLS)])
    assert tsv.parse_rows(text) == [{"name": c, "n": str(k)} for k, c in enumerate(HARD_CELLS)]
    assert tsv.format_rows(["a", "b"], [["x", 1], {"a": "y"}]) == "a\tb\nx\t1\ny\t\n"  # no quotes needed
    assert tsv.format_line(["a\tb", 'q"']) == '"a\tb"\t"q"""\n'
    assert tsv.parse_lines(tsv.format_line([""]) + tsv.format_line(["x"])) == [[""], ["x"]]
    # What spreadsheets write: a byte-order mark and CRLF line ends; blank lines are no rows.
    assert tsv.parse_rows("\ufeffpath\tx\r\na.spine\t1\r\n\r\nb.spine\r\n") == \
        [{"path": "a.spine", "x": "1"}, {"path": "b.spine", "x": ""}]


def test_pandas_reads_the_tables(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(tsv.format_rows(["name"], [[c] for c in HARD_CELLS if c]).encode("utf-8"))
    assert tsv.read_rows(path) == [{"name": c} for c in HARD_CELLS if c]
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    assert list(frame["name"]) == [c for c in HARD_CELLS if c]


# ----------------------------------------------------------------------------- scan and manifest


def test_scan_finds_hard_names_and_the_manifest_round_trips_exactly(tmp_path):
    data = tmp_path / "data"
    relpaths = weird_tree(data, labels=True)
    m = mf.build_manifest(data)
    assert [r["relpath"] for r in m] == relpaths
    assert m.skipped == []
    for row in m:
        assert row["path"] == str(data / row["relpath"]) and Path(row["path"]).is_file()
        assert row["label"] == str(Path(row["path"]).with_suffix(".label"))
        assert names.safe_name(row["id"]) == row["id"] and not row["id"].startswith(("-", "."))
    assert len(set(m.ids)) == len(relpaths)
    out = tmp_path / "results" / "manifest.tsv"
    assert mf.write_manifest(m, out) is True
    assert mf.write_manifest(mf.build_manifest(data), out) is False  # a CR inside a cell is not a change
    back = mf.read_manifest(out)
    assert back.rows == m.rows and back.to_tsv() == m.to_tsv()
    assert list(pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)["relpath"]) == relpaths
    assert sorted(names.mirrored_label_path(r["relpath"]) for r in m) == \
        sorted(r[: -len(".spine")] + ".label" for r in relpaths)


def test_user_manifest_with_hard_names(tmp_path):
    data = tmp_path / "data"
    relpaths = weird_tree(data)
    user = tmp_path / "mine.tsv"
    user.write_text(tsv.format_rows(["path", "condition"], [[r, "ctrl"] for r in relpaths]), encoding="utf-8")
    m = mf.read_manifest(user, root=data)
    assert [r["relpath"] for r in m] == relpaths and {r["condition"] for r in m} == {"ctrl"}
    # A hand-written table with stray spaces around an ordinary name still works.
    (data / "plain.spine").write_text(SPINE_LINE)
    user.write_text("path\tcondition\n plain.spine \t ctrl \n", encoding="utf-8")
    assert [(r["relpath"], r["condition"]) for r in mf.read_manifest(user, root=data)] == [("plain.spine", "ctrl")]


def test_skipped_entries_with_hard_names_round_trip(tmp_path):
    data = tmp_path / "data"
    names = [f"{stem}.txt" for stem in STEMS] + ["x\ny.spine.gz", "-\t-.outline"]
    for name in names:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("")
    (data / "keep.spine").write_text(SPINE_LINE)
    m = mf.build_manifest(data)
    assert [r["relpath"] for r in m] == ["keep.spine"]
    assert sorted(p for p, _ in m.skipped) == sorted(names)
    listing = tmp_path / "results" / "skipped.tsv"
    assert mf.write_skipped(m.skipped, listing) is True
    assert mf.read_skipped(listing) == m.skipped
    assert mf.write_skipped(m.skipped, listing) is False


def test_names_that_are_not_utf8_are_skipped_with_one_escaped_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.spine").write_text(SPINE_LINE)
    raw = os.fsencode(data)
    try:
        with open(raw + b"/bad\xff.spine", "w") as f:
            f.write(SPINE_LINE)
        os.mkdir(raw + b"/folder\xfe")
    except OSError:  # a file system that only takes UTF-8 names (then none can occur)
        pytest.skip("this file system refuses names that are not UTF-8")
    with open(raw + b"/folder\xfe/inside.spine", "w") as f:
        f.write(SPINE_LINE)
    m = mf.build_manifest(data)
    assert [r["relpath"] for r in m] == ["good.spine"]
    assert [p for p, _ in m.skipped] == ["bad\\xff.spine", "folder\\xfe"]
    assert all("not valid UTF-8" in reason for _, reason in m.skipped)
    listing = tmp_path / "skipped.tsv"
    mf.write_skipped(m.skipped, listing)
    assert mf.read_skipped(listing) == m.skipped
    mf.write_manifest(m, tmp_path / "manifest.tsv")  # nothing unencodable reaches a table
    with pytest.raises(TrackDataError, match=r"folder\\xfe: folder name is not valid UTF-8"):
        mf.build_manifest(os.fsdecode(raw + b"/folder\xfe"))


# ----------------------------------------------------------------------------- screen summary


def test_screen_summary_counts_every_hard_name_once(tmp_path, capsys):
    data = tmp_path / "data"
    relpaths = weird_tree(data, labels=True)
    labels = [data / (r[: -len(".spine")] + ".label") for r in relpaths]
    missing = data / "gone\t\r\n.label"
    s = summarize(labels + [missing], tmp_path / "out", plots=False)
    assert (s.files, s.larvae) == (len(labels), len(labels))
    per_file = tsv.read_rows(s.tables["per_file"])
    assert sorted({r["file"] for r in per_file}) == sorted(str(p) for p in labels)
    assert len(per_file) == 2 * len(labels)  # run and cast per file
    per_larva = tsv.read_rows(s.tables["per_larva"])
    assert sorted({r["file"] for r in per_larva}) == sorted(str(p) for p in labels)
    groups = {(r["group"], r["behaviour"]): r for r in tsv.read_rows(s.tables["groups"])}
    assert groups[("all", "run")]["files"] == str(len(labels))
    assert [r["file"] for r in tsv.read_rows(s.tables["failed"])] == [str(missing)]
    frame = pd.read_csv(s.tables["per_file"], sep="\t", dtype=str, keep_default_na=False)
    assert frame["file"].nunique() == len(labels)

    # The command line, with the manifest's metadata matched to every label.
    m = mf.build_manifest(data)
    for k, row in enumerate(m):
        row["condition"] = "hot\tday" if k % 2 else "cold"
    mf.write_manifest(m, tmp_path / "manifest.tsv")
    code = main(["summarize", str(data), "--out", str(tmp_path / "cli"), "--metadata",
                 str(tmp_path / "manifest.tsv"), "--group-by", "condition", "--no-plots"])
    assert code == 0
    assert f"summarised {len(labels)} label file(s)" in capsys.readouterr().out
    rows = tsv.read_rows(tmp_path / "cli" / "groups.tsv")
    files = {r["group"]: int(r["files"]) for r in rows if r["behaviour"] == "run"}
    assert files == {"cold": (len(labels) + 1) // 2, "hot\tday": len(labels) // 2, "all": len(labels)}
