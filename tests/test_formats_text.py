"""Text track formats (.spine/.outline, FIMTrack csv) and LarvaTagger .label files.

Runs are built in code (sinusoidal crawling, 11-point spines, outlines with a varying number
of points, an odd 13.7 Hz frame rate and a gap), written to tmp_path, read back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from maggotflow.formats import ReadOptions, detect_format, file_sha1, read_run
from maggotflow.formats.fimtrack import read_fimtrack, write_fimtrack
from maggotflow.formats.label import (
    DEFAULT_COLORS,
    LabelFile,
    attach_labels,
    label_file_for_run,
    label_file_text,
    read_label_file,
    write_label_file,
)
from maggotflow.formats.spine import read_spine, write_spine
from maggotflow.tracks import Run, Track, TrackDataError

DATE_TIME = "20200101_000000"
SPINE_NAME = f"{DATE_TIME}@FCF_attP2@UAS_TNT@t15@r_LED100_30s2x15s30s#n#n#n@100.spine"


# ----------------------------------------------------------------------------- helpers


def crawling_spine(t: np.ndarray, phase: float, k: int = 11) -> np.ndarray:
    """(n, k, 2) mm, tail -> head: a 4 mm larva crawling along x while its body swings."""
    heading = 0.4 * np.sin(0.5 * t + phase)
    centre = np.stack([0.5 * t + 10 * phase, 2.0 * np.sin(0.3 * t + phase)], axis=1)
    s = np.linspace(-2.0, 2.0, k)  # tail at -2 mm, head at +2 mm along the body
    axis = np.stack([np.cos(heading), np.sin(heading)], axis=1)
    normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
    bend = 0.15 * np.sin(s[None, :] + 3 * t[:, None])
    return centre[:, None, :] + s[None, :, None] * axis[:, None, :] + bend[:, :, None] * normal[:, None, :]


def contour(spine: np.ndarray, step_sizes: np.ndarray) -> np.ndarray:
    """(n, max(step_sizes), 2) NaN-padded outlines: an ellipse around the body per frame."""
    n, m = spine.shape[0], int(step_sizes.max())
    out = np.full((n, m, 2), np.nan)
    centre = spine.mean(axis=1)
    for i in range(n):  # test data only
        a = np.linspace(0, 2 * np.pi, step_sizes[i], endpoint=False)
        out[i, : step_sizes[i]] = centre[i] + np.stack([2.1 * np.cos(a), 0.5 * np.sin(a)], axis=1)
    return out


def make_run(fps: float = 13.7, n_steps: int = 40, outline: bool = True, labels: bool = False) -> Run:
    """Three larvae (ids 1, 2, 5); larva 2 has a gap (steps 10..14 missing), larva 5 starts late."""
    tracks = []
    for larva, phase, keep in [
        ("1", 0.0, np.arange(n_steps)),
        ("2", 1.0, np.delete(np.arange(n_steps), np.arange(10, 15))),
        ("5", 2.0, np.arange(6, n_steps)),
    ]:
        t = keep / fps
        spine = crawling_spine(t, phase)
        sizes = np.where(keep % 3 == 0, 14, 18)  # contour point count varies frame to frame
        steps = None
        if labels:
            pattern = [("run",), ("cast",), ("run", "hunch"), ()]
            steps = [pattern[(i // 4) % 4] for i in range(t.size)]
        tracks.append(Track(larva, t, spine, contour(spine, sizes) if outline else None, steps))
    meta = {"id": DATE_TIME, "tracker": "t15", "genotype": "FCF_attP2", "date_time": DATE_TIME}
    return Run(metadata=meta, tracks=tracks)


def assert_same_tracks(a: Run, b: Run, coord_tol: float = 1e-4, time_tol: float = 1e-3) -> None:
    assert [t.id for t in a.tracks] == [t.id for t in b.tracks]
    for x, y in zip(a.tracks, b.tracks):
        assert x.t.shape == y.t.shape
        np.testing.assert_allclose(y.t, x.t, atol=time_tol, rtol=0)
        np.testing.assert_allclose(y.spine, x.spine, atol=coord_tol, rtol=0)


def raises_data_error(path: Path, phrase: str, func, *args) -> TrackDataError:
    with pytest.raises(TrackDataError) as info:
        func(path, *args)
    message = str(info.value)
    assert path.name in message, message
    assert phrase in message, message
    assert "\n" not in message
    return info.value


def no_leftovers(directory: Path) -> bool:
    return not any(p.name.endswith(".part") for p in directory.iterdir())


# ----------------------------------------------------------------------------- .spine


@pytest.mark.parametrize("order", ["head_first", "tail_first"])
def test_spine_round_trip_keeps_data_and_head_tail_order(tmp_path, order):
    run = make_run()
    path = tmp_path / SPINE_NAME
    write_spine(run, path, spine_order=order)
    back = read_spine(path, ReadOptions(spine_order=order))
    assert_same_tracks(run, back)
    assert back.tracks[1].t.size == 35  # the gap stays a gap

    # The file's first point is the head (or tail) of larva 1 at its first step.
    first = path.read_text().splitlines()[0].split()
    assert first[:3] == [DATE_TIME, "1", "0.000"]
    end = -1 if order == "head_first" else 0
    np.testing.assert_allclose([float(first[3]), float(first[4])], run.tracks[0].spine[0, end], atol=1e-4)

    again = tmp_path / "again.spine"
    write_spine(run, again, spine_order=order)
    assert again.read_bytes() == path.read_bytes()  # deterministic

    # Read with the wrong convention, the spine comes back reversed (head <-> tail).
    other = "tail_first" if order == "head_first" else "head_first"
    flipped = read_spine(path, ReadOptions(spine_order=other))
    np.testing.assert_allclose(flipped.tracks[0].spine, run.tracks[0].spine[:, ::-1], atol=1e-4)
    assert no_leftovers(tmp_path)


def test_spine_outline_attached_with_variable_point_counts(tmp_path):
    run = make_run()
    path = tmp_path / SPINE_NAME
    write_spine(run, path)
    outline_path = path.with_suffix(".outline")
    assert outline_path.is_file()
    counts = {len(line.split()) for line in outline_path.read_text().splitlines()}
    assert counts == {3 + 2 * 14, 3 + 2 * 18}  # padding dropped, frames keep their own count

    back = read_run(path)
    for x, y in zip(run.tracks, back.tracks):
        assert y.outline is not None and y.outline.shape == x.outline.shape
        np.testing.assert_array_equal(np.isnan(y.outline), np.isnan(x.outline))
        np.testing.assert_allclose(y.outline, x.outline, atol=1e-4, equal_nan=True)


def test_spine_without_outline_when_not_requested(tmp_path):
    path = tmp_path / SPINE_NAME
    write_spine(make_run(), path, write_outline=False)
    assert not path.with_suffix(".outline").exists()
    assert all(track.outline is None for track in read_spine(path, ReadOptions()).tracks)


def test_spine_metadata_from_name_in_a_path_with_spaces_and_accents(tmp_path):
    folder = tmp_path / "données larves"
    path = folder / f"{DATE_TIME}@g@e@t15@p@.spine"
    write_spine(make_run(outline=False), path)
    run = read_run(path)
    assert detect_format(path) == "spine"
    assert list(run.metadata)[0] == "id"
    assert run.metadata["id"] == DATE_TIME
    assert {k: run.metadata[k] for k in ("genotype", "effector", "tracker", "protocol", "date_time")} == {
        "genotype": "g", "effector": "e", "tracker": "t15", "protocol": "p", "date_time": DATE_TIME,
    }
    assert run.metadata["filename"] == path.name
    assert run.format == "spine" and run.source == path and run.sha1 == file_sha1(path)


def test_spine_and_fimtrack_read_the_same_metadata_from_the_same_name(tmp_path):
    """One name, two formats: the same run metadata, `extra` (the parts after the protocol) included."""
    stem = f"{DATE_TIME}@g@e@t15@p@100"
    spine = tmp_path / f"{stem}.spine"
    write_spine(make_run(outline=False), spine)
    fim = tmp_path / f"{stem}.csv"
    fim.write_text(fim_text())
    from_spine = read_run(spine).metadata
    from_fim = read_fimtrack(fim, ReadOptions(framerate=10.0, pixelsize_um=80.0)).metadata
    keys = ("id", "date_time", "genotype", "effector", "tracker", "protocol", "extra")
    assert {k: from_fim.get(k) for k in keys} == {k: from_spine.get(k) for k in keys}
    assert from_fim["extra"] == "100"


def test_spine_plain_name_takes_date_time_from_first_column(tmp_path):
    path = tmp_path / "tracks.spine"
    path.write_text("20211231_235959 7 0.0 1 2 3 4\n20211231_235959 7 0.1 1.1 2 3.1 4\n")
    run = read_spine(path, ReadOptions())
    assert run.metadata["id"] == "20211231_235959"
    assert "genotype" not in run.metadata
    track = run.tracks[0]
    assert track.id == "7"
    np.testing.assert_allclose(track.spine[1], [[3.1, 4.0], [1.1, 2.0]])  # head first -> tail first


def test_spine_larva_in_two_blocks_is_merged_when_times_increase(tmp_path):
    path = tmp_path / "blocks.spine"
    lines = [
        "20200101_000000 1 0.0 0 0 1 1",
        "20200101_000000 1 0.1 0 0 1 1",
        "20200101_000000 2 0.0 5 5 6 6",
        "20200101_000000 2 0.1 5 5 6 6",
        "20200101_000000 1 0.2 0 0 1 1",
    ]
    path.write_text("\n".join(lines) + "\n")
    run = read_spine(path, ReadOptions())
    np.testing.assert_allclose(run.track("1").t, [0.0, 0.1, 0.2])

    path.write_text("\n".join(lines[:4] + ["20200101_000000 1 0.05 0 0 1 1"]) + "\n")
    err = raises_data_error(path, "is not increasing", read_spine, ReadOptions())
    assert "line 5" in str(err) and "larva 1" in str(err)


GOOD = "20200101_000000 {id} {t} 1.0 2.0 3.0 4.0 5.0 6.0"


def spine_lines(n: int = 4) -> list[str]:
    return [GOOD.format(id=1, t=f"{i * 0.1:.1f}") for i in range(n)]


@pytest.mark.parametrize(
    "content, phrase",
    [
        ("", "is empty"),
        ("\n".join(spine_lines()) + "\n20200101_000000 1 0.4 1.0 2.0 3", "last line 5 is truncated"),
        ("\n".join(spine_lines()[:2] + ["20200101_000000 1 0.2 1 2 3 4", *spine_lines()[3:]]), "wrong column count"),
        ("20200101_000000 1 0.0 1 2 3\n20200101_000000 1 0.1 1 2 3\n", "odd number of coordinates"),
        ("\n".join(spine_lines()[:2] + ["20200101_000000 1 0.2 1.0 2.0 x 4.0 5.0 6.0"]), "line 3: value 'x' is not a number"),
        ("\n".join(spine_lines()[:2] + ["20200101_000000 1 0.2 1.0 nan 3.0 4.0 5.0 6.0"]), "line 3 has NaN or infinite coordinates"),
        ("\n".join(spine_lines()[:3] + ["20200101_000000 1 0.3 1.0 2.0 inf 4.0 5.0 6.0"]), "line 4 has NaN or infinite coordinates"),
        ("\n".join(spine_lines()[:2] + [GOOD.format(id=1, t="0.05")]), "is not increasing"),
        ("\n".join(spine_lines()[:2] + [GOOD.format(id=1, t="0.1")]), "is duplicated"),
        ("\n".join(spine_lines()[:2] + [GOOD.format(id="a7", t="0.3")]), "larva id 'a7' is not a whole number"),
    ],
    ids=["empty", "truncated", "columns", "odd", "text", "nan", "inf", "backwards", "duplicated", "id"],
)
def test_spine_bad_input(tmp_path, content, phrase):
    path = tmp_path / "20200101_000000@bad.spine"
    path.write_text(content)
    raises_data_error(path, phrase, read_spine, ReadOptions())


def test_spine_binary_garbage(tmp_path):
    path = tmp_path / "garbage.spine"
    path.write_bytes(bytes(range(256)) * 4)
    raises_data_error(path, "is not a Choreography .spine file", read_run)  # detection refuses it
    raises_data_error(path, "binary", read_spine, ReadOptions())  # and so does the reader itself
    # Garbage after a valid start is caught too, with its line.
    path.write_bytes(("\n".join(spine_lines(2)) + "\n").encode() + b"\x00\x93\xff junk\n")
    raises_data_error(path, "line 3", read_run)


def test_spine_one_frame_larva_skipped_with_warning(tmp_path, caplog):
    path = tmp_path / "20200101_000000@one.spine"
    path.write_text("\n".join(spine_lines(3) + [GOOD.format(id=9, t="0.0")]) + "\n")
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert [t.id for t in run.tracks] == ["1"]
    assert any("larva 9 (1 step)" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)


def test_spine_outline_must_match_spine(tmp_path):
    run = make_run()
    path = tmp_path / SPINE_NAME
    write_spine(run, path)
    outline_path = path.with_suffix(".outline")
    lines = outline_path.read_text().splitlines()
    outline_path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # one frame of larva 1 lost
    err = raises_data_error(outline_path, "larva 1 has 39 outline lines but 40 spine lines", lambda _: read_run(path))
    assert "outline" in err.path


def test_write_spine_refuses_non_integer_ids_without_leaving_files(tmp_path):
    run = make_run(outline=False)
    run.tracks[0].id = "larva1"
    with pytest.raises(ValueError, match="whole number"):
        write_spine(run, tmp_path / "x.spine")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- FIMTrack


def fim_run() -> Run:
    """On a 30 Hz grid; larva 2 has a gap, larva 5 starts at frame 6."""
    run = make_run(fps=30.0, n_steps=30, outline=False)
    return Run(metadata={"id": "fim"}, tracks=run.tracks)


def test_fimtrack_round_trip_with_gaps(tmp_path):
    run = fim_run()
    path = tmp_path / "experiment 1.csv"
    write_fimtrack(run, path, framerate=30.0, pixelsize_um=80.0)
    assert detect_format(path) == "fimtrack"
    text = path.read_text().splitlines()
    assert text[0] == ",larva(1),larva(2),larva(5)"
    # Frame 10: larva 2 is in its gap (empty cell); head x in pixels = mm * 1000 / 80.
    head_1, head_5 = run.tracks[0].spine[10, -1, 0] * 12.5, run.tracks[2].spine[4, -1, 0] * 12.5
    assert f"head_x(10),{head_1:.4f},,{head_5:.4f}" in text
    assert any(line.startswith("mom_y(0),") for line in text)

    back = read_run(path, ReadOptions(framerate=30.0, pixelsize_um=80.0))
    assert_same_tracks(run, back, coord_tol=1e-4, time_tol=1e-9)
    assert back.format == "fimtrack"
    assert {k: back.metadata[k] for k in ("id", "filename")} == {"id": "experiment 1", "filename": path.name}
    # FIMTrack names the head; the motion check agrees and is recorded.
    assert back.metadata["spine_order_decided_by"] == "file" and back.metadata["spine_order_forward_fraction"] > 0.9
    np.testing.assert_allclose(np.diff(back.track("2").t).max(), 6 / 30)  # the gap


def test_fimtrack_hand_written_file(tmp_path, caplog):
    """A small file as FIMTrack writes it: extra features, booleans, empty cells, larva(0)."""
    rows = [
        ",larva(0),larva(3)",
        "mom_x(0),10,", "mom_x(1),11,20", "mom_x(2),12,21",
        "head_x(0),100,-nan", "head_x(1),110,200", "head_x(2),120,210",
        "head_y(0),50,", "head_y(1),55,60", "head_y(2),60,61",
        "spinepoint_1_x(0),90,", "spinepoint_1_x(1),100,190", "spinepoint_1_x(2),110,200",
        "spinepoint_1_y(0),50,", "spinepoint_1_y(1),55,60", "spinepoint_1_y(2),60,61",
        "tail_x(0),80,", "tail_x(1),90,180", "tail_x(2),100,190",
        "tail_y(0),50,", "tail_y(1),55,60", "tail_y(2),60,61",
        "radius_1(0),3,", "radius_1(1),3,3", "radius_1(2),3,3",
        "is_coiled(0),0,", "is_coiled(1),0,1", "is_coiled(2),1,0",
    ]
    path = tmp_path / "table.csv"
    path.write_text("\r\n".join(rows) + "\r\n")
    with caplog.at_level(logging.WARNING):
        run = read_fimtrack(path, ReadOptions(framerate=10.0))
    assert any("pixel size unknown" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)
    assert [t.id for t in run.tracks] == ["0", "3"]
    np.testing.assert_allclose(run.track("0").t, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(run.track("3").t, [0.1, 0.2])  # empty cells: not tracked at frame 0
    np.testing.assert_allclose(run.track("0").spine[0], [[80, 50], [90, 50], [100, 50]])  # tail -> head

    mm = read_fimtrack(path, ReadOptions(framerate=10.0, pixelsize_um=80.0))
    np.testing.assert_allclose(mm.track("0").spine[0, -1], [8.0, 4.0])


def fim_text(header: str = ",larva(0),larva(3)", extra: list[str] | None = None, drop: str = "") -> str:
    rows = [header]
    for feature in ("head_x", "head_y", "spinepoint_1_x", "spinepoint_1_y", "tail_x", "tail_y"):
        if feature != drop:
            shift = 10 if feature == "head_y" else 0  # a 10 px body: all points equal is a collapsed spine
            rows += [f"{feature}({f}),{f + 1 + shift}.5,{f + 2 + shift}.5" for f in range(3)]
    return "\n".join(rows + (extra or [])) + "\n"


@pytest.mark.parametrize(
    "content, phrase",
    [
        ("", "is empty"),
        (fim_text(header=",larva(0),larva(3),larva(3)").replace(".5\n", ".5,1\n"), "larva 3 appears twice in the header"),
        (fim_text(header="frame,larva(0),larva(3)"), "header must be ',larva(0)"),
        (fim_text(header=",larva(0),worm(3)"), "header cell 3 is 'worm(3)'"),
        (fim_text(extra=["head_x(3),1.0"]), "last line 20 is truncated"),
        (fim_text(extra=["head_x(3),1.0,2.0,3.0", "head_x(4),1,2"]), "line 20 has 4 cells but the header has 3"),
        (fim_text(drop="tail_y"), "has no tail_y rows"),
        (fim_text(drop="head_x"), "has no head_x rows"),
        (fim_text().replace("tail_x(1),2.5", "tail_x(1),abc"), "line 15: value 'abc' is not a number"),
        (fim_text().replace("tail_x(1)", "tail_x(0)"), "row tail_x(0) appears twice"),
    ],
    ids=["empty", "duplicate-larva", "header", "header-cell", "truncated", "cells", "no-tail", "no-head", "text", "dup-row"],
)
def test_fimtrack_bad_input(tmp_path, content, phrase):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    raises_data_error(path, phrase, read_fimtrack, ReadOptions())


def test_fimtrack_incomplete_spine_frame_left_out(tmp_path, caplog):
    path = tmp_path / "partial.csv"
    path.write_text(fim_text().replace("tail_y(1),2.5,3.5", "tail_y(1),2.5,"))
    with caplog.at_level(logging.WARNING):
        run = read_fimtrack(path, ReadOptions(pixelsize_um=100.0))
    np.testing.assert_allclose(run.track("3").t, [0.0, 2 / 30])
    np.testing.assert_allclose(run.track("0").t, [0.0, 1 / 30, 2 / 30])
    assert any("1 larva-frame(s) with an incomplete spine" in r.getMessage() for r in caplog.records)


def test_fimtrack_one_frame_larva_skipped(tmp_path, caplog):
    path = tmp_path / "one.csv"
    # larva(3) is only present in frame 2
    path.write_text(fim_text().replace(",2.5\n", ",\n").replace(",3.5\n", ",\n"))
    with caplog.at_level(logging.WARNING):
        run = read_fimtrack(path, ReadOptions(pixelsize_um=100.0))
    assert [t.id for t in run.tracks] == ["0"]
    assert any("larva 3 (1 step)" in r.getMessage() and "one.csv" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- .label


def labelled_spine(tmp_path: Path) -> tuple[Run, Path, dict]:
    """A labelled run written as .spine and read back (source and sha1 set by the reader)."""
    run = make_run(outline=False, labels=True)
    path = tmp_path / SPINE_NAME
    write_spine(run, path)
    back = read_spine(path, ReadOptions())
    labels = {track.id: track.labels for track in run.tracks}
    return back, path, labels


def test_label_round_trip_layout_and_determinism(tmp_path):
    run, spine_path, labels = labelled_spine(tmp_path)
    lf = label_file_for_run(run, labels=labels)
    path = tmp_path / "predicted.label"
    write_label_file(path, lf)
    text = path.read_text(encoding="utf-8")

    assert detect_format(path) == "label"
    doc = json.loads(text, object_pairs_hook=lambda pairs: pairs)  # keeps key order
    assert [k for k, _ in doc] == ["metadata", "units", "labels", "dependencies", "data"]
    metadata = dict(doc)["metadata"]
    assert metadata[0] == ("id", DATE_TIME)
    parsed = json.loads(text)
    assert parsed["units"] == {"t": "s"}
    assert parsed["labels"] == {"names": ["run", "cast", "hunch"], "colors": [DEFAULT_COLORS[n] for n in ("run", "cast", "hunch")]}
    assert parsed["dependencies"] == {"filename": spine_path.name, "sha1": file_sha1(spine_path)}
    first = parsed["data"][0]
    assert [d["id"] for d in parsed["data"]] == ["1", "2", "5"]
    assert first["labels"][:9:4] == ["run", "cast", ["run", "hunch"]] and first["labels"][12] == []
    assert first["t"][1] == 0.073  # 1/13.7 s rounded to 1 ms
    assert '"t": [0.0,0.073,0.146,0.219' in text and "0.0729" not in text
    assert text.count("\n") == 5 + 2 + 3 + 1  # one larva per line
    assert path.read_bytes() == label_file_text(lf).encode("utf-8")  # written piece by piece, the same text
    empty = dataclasses.replace(lf, tracks={})
    write_label_file(tmp_path / "empty.label", empty)
    assert json.loads((tmp_path / "empty.label").read_text())["data"] == []
    assert (tmp_path / "empty.label").read_text() == label_file_text(empty)

    again = tmp_path / "again.label"
    write_label_file(again, label_file_for_run(run, labels=labels))
    assert again.read_bytes() == path.read_bytes()  # deterministic

    back = read_label_file(path)
    assert list(back.metadata)[0] == "id" and back.metadata["genotype"] == "FCF_attP2"
    assert back.names == ["run", "cast", "hunch"]
    assert back.dependencies == [{"filename": spine_path.name, "sha1": file_sha1(spine_path)}]
    for track in run.tracks:
        t, steps = back.tracks[track.id]
        np.testing.assert_allclose(t, track.t, atol=5e-4)
        assert steps == labels[track.id]
    rewritten = tmp_path / "rewritten.label"
    write_label_file(rewritten, back)
    assert rewritten.read_bytes() == path.read_bytes()  # read -> write is the identity


def test_label_times_rounded_to_1_ms(tmp_path):
    run = make_run(outline=False, labels=True)  # in memory: t = i / 13.7 s, not rounded
    path = tmp_path / "rounded.label"
    write_label_file(path, label_file_for_run(run))
    text = path.read_text()
    assert '"t": [0.0,0.073,0.146,0.219,0.292,0.365,0.438,0.511,0.584,0.657,0.73,' in text
    assert "dependencies" not in text  # no track file known
    t, steps = read_label_file(path).tracks["1"]
    assert np.abs(t - run.track("1").t).max() <= 5e-4 and steps == run.track("1").labels


def test_label_reader_accepts_other_forms(tmp_path):
    path = tmp_path / "étiquettes" / "other.label"
    path.parent.mkdir()
    doc = {
        "metadata": {"id": "x", "filename": "a.spine", "remark": "données"},
        "labels": ["run", "cast"],
        "dependencies": [{"filename": "a.spine", "sha1": "ab"}, {"filename": "a.outline", "sha1": "cd"}],
        "data": [{"id": 3, "t": [0, 0.1], "labels": ["run", ["run", "cast"]]}, {"id": "012", "t": [0.5], "labels": [[]]}],
    }
    path.write_text(json.dumps(doc))
    lf = read_label_file(path)
    assert lf.colors is None and lf.names == ["run", "cast"] and len(lf.dependencies) == 2
    assert list(lf.tracks) == ["3", "12"]
    assert lf.tracks["3"][1] == [("run",), ("run", "cast")] and lf.tracks["12"][1] == [()]
    out = tmp_path / "out.label"
    write_label_file(out, lf)
    parsed = json.loads(out.read_text())
    assert parsed["labels"] == ["run", "cast"] and isinstance(parsed["dependencies"], list)
    assert parsed["metadata"] == {"id": "x", "filename": "a.spine", "remark": "données"}
    assert [d["id"] for d in parsed["data"]] == ["3", "12"]


@pytest.mark.parametrize(
    "content, phrase",
    [
        ("", "is empty"),
        ('{"metadata": {"id": "x"}, "labels": ["run"], "data": [{"id": "1", "t": [0.0, 0.1', "is truncated"),
        ("{'metadata': 1}", "is not valid JSON"),
        ('["metadata"]', "top level must be a JSON object"),
        ('{"metadata": {"id": "x"}, "labels": ["run"]}', "has no 'data' key"),
        ('{"metadata": {"id": "x"}, "labels": ["run"], "data": [{"id": "1", "t": [0.0, 0.1], "labels": ["run"]}]}', "larva 1 has 1 labels for 2 time steps"),
        ('{"metadata": {"id": "x"}, "labels": ["run"], "data": [{"id": "1", "t": [0.0], "labels": ["roll"]}]}', "label 'roll', which is not among the label names"),
        ('{"metadata": {"id": "x"}, "labels": ["run"], "data": [{"id": "1", "t": [0.0], "labels": ["run"]}, {"id": 1, "t": [0.0], "labels": ["run"]}]}', "larva id 1 appears twice"),
    ],
    ids=["empty", "truncated", "invalid", "top-level", "no-data", "count", "unknown-name", "duplicate-id"],
)
def test_label_bad_input(tmp_path, content, phrase):
    path = tmp_path / "bad labels.label"
    path.write_text(content)
    raises_data_error(path, phrase, read_label_file)


def test_write_label_file_never_clobbers_when_asked(tmp_path):
    path = tmp_path / "kept.label"
    path.write_text("original")
    lf = LabelFile(metadata={"id": "x"}, names=["run"], tracks={"1": (np.array([0.0]), [("run",)])})
    with pytest.raises(FileExistsError):
        write_label_file(path, lf, overwrite=False)
    assert path.read_text() == "original" and no_leftovers(tmp_path)


def test_attach_labels(tmp_path, caplog):
    run, spine_path, labels = labelled_spine(tmp_path)
    label_path = tmp_path / "manual.label"
    write_label_file(label_path, label_file_for_run(run, labels=labels))

    lf = read_label_file(label_path)
    del lf.tracks["5"]
    with caplog.at_level(logging.WARNING):
        tagged = attach_labels(run, lf, label_path)
    assert tagged.track("1").labels == labels["1"] and tagged.track("2").labels == labels["2"]
    assert tagged.track("5").labels is None
    assert any("have no labels" in r.getMessage() for r in caplog.records)
    assert run.track("1").labels is None  # the input run is not modified
    assert tagged.label_names == ["run", "cast", "hunch"]


def test_attach_labels_refuses_mismatches(tmp_path):
    run, spine_path, labels = labelled_spine(tmp_path)
    label_path = tmp_path / "manual.label"
    write_label_file(label_path, label_file_for_run(run, labels=labels))
    lf = read_label_file(label_path)

    other = tmp_path / "other.spine"
    write_spine(make_run(fps=14.0, outline=False), other)
    err = raises_data_error(label_path, "was made for another track file (sha1 mismatch with other.spine)",
                            lambda p: attach_labels(read_spine(other, ReadOptions()), lf, p))
    assert err.path == str(label_path)
    # Without the sha1 check, the different frame rate is still caught.
    raises_data_error(label_path, "times of larva 1 do not match the track file",
                      lambda p: attach_labels(read_spine(other, ReadOptions()), lf, p, check_sha1=False))

    shifted = read_label_file(label_path)
    t, steps = shifted.tracks["2"]
    shifted.tracks["2"] = (t + 0.002, steps)
    raises_data_error(label_path, "times of larva 2 do not match the track file (step 0", lambda p: attach_labels(run, shifted, p))

    shorter = read_label_file(label_path)
    t, steps = shorter.tracks["1"]
    shorter.tracks["1"] = (t[:-1], steps[:-1])
    raises_data_error(label_path, "(39 label time steps, 40 in", lambda p: attach_labels(run, shorter, p))

    foreign = read_label_file(label_path)
    foreign.tracks["77"] = foreign.tracks.pop("5")
    raises_data_error(label_path, "larva 77 is in the label file but not in", lambda p: attach_labels(run, foreign, p))

    renamed = read_label_file(label_path)
    renamed.names = ["run", "cast"]
    raises_data_error(label_path, "uses label 'hunch'", lambda p: attach_labels(run, renamed, p))


# ------------------------------------------------- impossible values (issue 9 item 4)


def segments_of(run: Run) -> dict[str, np.ndarray]:
    from maggotflow.segments import SegmentSpec, build_segments

    return {tr.id: build_segments(tr, SegmentSpec()) for tr in run.tracks}


def spine_with_bad_line(tmp_path: Path, edit) -> tuple[Run, Path, Path, int]:
    """A clean .spine and a copy whose line 12 (larva 1, step 11) is changed by `edit`."""
    run = make_run(outline=False)
    clean, bad = tmp_path / "clean.spine", tmp_path / SPINE_NAME
    write_spine(run, clean, spine_order="tail_first", write_outline=False)
    lines = clean.read_text().splitlines()
    line = 12
    lines[line - 1] = edit(lines[line - 1])
    bad.write_text("\n".join(lines) + "\n")
    return run, clean, bad, line


def huge_value(line: str) -> str:
    fields = line.split()
    fields[7] = "1e300"  # x of the third spine point
    return " ".join(fields)


def jump(line: str, mm: float = 200.0) -> str:  # 50 body lengths of this 4 mm larva
    fields = line.split()
    return " ".join(fields[:3] + [f"{float(v) + mm:.4f}" if i % 2 == 0 else v for i, v in enumerate(fields[3:])])


@pytest.mark.parametrize("edit,reason", [(huge_value, "value 1e+300"), (jump, "jump of 50 body lengths")])
def test_spine_impossible_frame_bridged_and_named(tmp_path, caplog, edit, reason):
    import warnings

    run, clean, bad, line = spine_with_bad_line(tmp_path, edit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning may reach the user
        with caplog.at_level(logging.WARNING):
            back = read_spine(bad, ReadOptions(spine_order="tail_first"))
        segments = segments_of(back)
    messages = [r.getMessage() for r in caplog.records if "impossible frame" in r.getMessage()]
    assert len(messages) == 1, caplog.text
    assert str(bad) in messages[0] and "larva 1:" in messages[0] and f"line {line} ({reason})" in messages[0]
    # The time step is kept and its spine is the mean of its neighbours (linear in time).
    track, truth = back.track("1"), run.track("1")
    assert track.n_steps == truth.n_steps
    np.testing.assert_allclose(track.t, truth.t, atol=1e-3)
    np.testing.assert_allclose(track.spine[11], (truth.spine[10] + truth.spine[12]) / 2, atol=1e-3)
    np.testing.assert_allclose(np.delete(track.spine, 11, axis=0), np.delete(truth.spine, 11, axis=0), atol=1e-4)
    reference = segments_of(read_spine(clean, ReadOptions(spine_order="tail_first")))
    for larva, seg in segments.items():
        assert np.abs(seg - reference[larva]).max() < 0.05  # body lengths


def test_spine_larva_with_too_many_impossible_frames_is_left_out(tmp_path, caplog):
    run = make_run(outline=False)
    path = tmp_path / SPINE_NAME
    write_spine(run, path, write_outline=False)
    lines = path.read_text().splitlines()
    for i in range(5, 15):  # 10 of larva 1's 40 steps
        lines[i] = huge_value(lines[i])
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        back = read_run(path)
    assert [tr.id for tr in back.tracks] == ["2", "5"]  # one tracker glitch never costs the others
    message = next(r.getMessage() for r in caplog.records if "larva 1:" in r.getMessage())
    assert message == (f"{path}: larva 1: 10 of 40 frames (25%) have impossible coordinates (first at line 6); "
                       "more than 20% is corrupt data, not a track; this larva is left out")


def test_outline_impossible_value_bridged(tmp_path, caplog):
    run = make_run()
    path = tmp_path / SPINE_NAME
    write_spine(run, path)
    outline_path = path.with_suffix(".outline")
    lines = outline_path.read_text().splitlines()
    fields = lines[20].split()
    fields[5] = "-1e300"
    lines[20] = " ".join(fields)
    outline_path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        back = read_run(path)
    assert any("impossible frame" in r.getMessage() and "line 21" in r.getMessage() for r in caplog.records)
    outline = back.track("1").outline
    assert np.nanmax(np.abs(outline)) < 1e3
    # The bridged frame has a neighbour's outline (contours are not interpolated).
    assert any(np.array_equal(outline[20], outline[j], equal_nan=True) for j in (19, 21))


def test_fimtrack_impossible_values_bridged_and_named(tmp_path, caplog):
    import warnings

    run = fim_run()
    clean, path = tmp_path / "clean.csv", tmp_path / "fim.csv"
    write_fimtrack(run, clean, framerate=30.0, pixelsize_um=100.0)
    lines = clean.read_text().splitlines()
    # tail_x(7) of larva 1 -> 1e300; all of larva 5's frame 20 shifted by 50 body lengths (2000 px)
    row = next(i for i, text in enumerate(lines) if text.startswith("tail_x(7),"))
    cells = lines[row].split(",")
    cells[1] = "1e300"
    lines[row] = ",".join(cells)
    for i, text in enumerate(lines):
        if text.split(",")[0].endswith("_x(20)") and not text.startswith("mom"):
            cells = text.split(",")
            cells[3] = f"{float(cells[3]) + 2000:.4f}"
            lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    options = ReadOptions(framerate=30.0, pixelsize_um=100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            back = read_run(path, options)
        segments = segments_of(back)
    messages = [r.getMessage() for r in caplog.records if "impossible frame" in r.getMessage()]
    assert len(messages) == 2 and all(str(path) in m for m in messages)
    assert any("larva 1:" in m and f"frame 7 (line {row + 1}) (value 1e+300)" in m for m in messages)
    assert any("larva 5:" in m and "frame 20" in m and "jump of 50 body lengths" in m for m in messages)
    reference = segments_of(read_run(clean, options))
    for larva, seg in segments.items():
        assert seg.shape == reference[larva].shape
        assert np.abs(seg - reference[larva]).max() < 0.05


def test_fimtrack_larva_with_too_many_impossible_frames_is_left_out(tmp_path, caplog):
    run = fim_run()
    path = tmp_path / "fim.csv"
    write_fimtrack(run, path, framerate=30.0, pixelsize_um=100.0)
    lines = path.read_text().splitlines()
    for i, text in enumerate(lines):
        name = text.split(",")[0]
        if name.startswith("head_x(") and int(name[7:-1]) < 10:  # 10 of larva 1's 30 frames
            cells = text.split(",")
            cells[1] = "5e5"
            lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        back = read_fimtrack(path, ReadOptions(pixelsize_um=100.0))
    assert [tr.id for tr in back.tracks] == ["2", "5"]
    assert any("larva 1: 10 of 30 frames (33%) have impossible coordinates" in r.getMessage()
               and r.getMessage().endswith("this larva is left out") for r in caplog.records)

