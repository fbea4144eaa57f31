"""Data traps (issue 20): one larva id in two blocks of a file, and spines collapsed to a point.

Small `.spine` / `.outline` and FIMTrack csv files are written by hand in tmp_path (the
layouts the trackers write, with the trap in them) and read back with both text parsers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats import fimtrack as fim
from maggotflow.formats import spine as sp
from maggotflow.formats.label import label_file_for_run, label_file_text
from maggotflow.segments import SegmentSpec, build_segments
from maggotflow.tracks import Track, TrackDataError

DATE_TIME = "20200101_000000"
NAME = f"{DATE_TIME}@g@e@t15@p@100.spine"
K = 5  # spine points
DT = 0.1  # s between frames
TAIL_FIRST = ReadOptions(spine_order="tail_first")  # the files below list the tail first


def body(t: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """(n, K, 2) mm, tail -> head: a 4 mm larva crawling along +x at 0.5 mm/s, body waving."""
    s = np.linspace(0.0, 4.0, K)
    x = x0 + 0.5 * t[:, None] + s[None, :]
    y = y0 + 0.2 * np.sin(s[None, :] + 2.0 * t[:, None])
    return np.stack([x, y], axis=2)


def block(larva: int, t0: float, t1: float, x0: float = 0.0, y0: float = 0.0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Lines of one larva from t0 to t1 s (both included), and their times and spines."""
    t = np.round(np.arange(round((t1 - t0) / DT) + 1) * DT + t0, 3)
    spine = np.round(body(t, x0, y0), 4)
    lines = [
        f"{DATE_TIME} {larva} {ti:.3f} " + " ".join(f"{v:.4f}" for v in points.ravel())
        for ti, points in zip(t, spine)
    ]
    return lines, t, spine


def write(path: Path, *blocks) -> Path:
    path.write_text("\n".join(line for lines, _, _ in blocks for line in lines) + "\n")
    return path


def read_alike(monkeypatch, caplog, path: Path, options: ReadOptions = TAIL_FIRST):
    """The Run (or the error message) and the warnings, the same with the fast and the careful parser."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(sp, "FAST_PARSER", fast)
        monkeypatch.setattr(fim, "FAST_PARSER", fast)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                outcome = read_run(path, options)
            except TrackDataError as err:
                outcome = str(err)
        results.append((outcome, [r.getMessage() for r in caplog.records]))
    (a, warned_a), (b, warned_b) = results
    assert warned_a == warned_b
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
    else:
        assert a.metadata == b.metadata and a.left_out == b.left_out
        assert [tr.id for tr in a.tracks] == [tr.id for tr in b.tracks]
        for x, y in zip(a.tracks, b.tracks):
            assert np.array_equal(x.t, y.t) and np.array_equal(x.spine, y.spine)
    return a, warned_a


def reuse_warnings(warned: list[str]) -> list[str]:
    return [message for message in warned if "is re-used" in message]


# ----------------------------------------------------------------------------- one id, two blocks


def test_reused_id_is_read_as_two_larvae_with_both_time_ranges_named(tmp_path, monkeypatch, caplog):
    """Larva 3 at 0-10 s, larva 5 at 0-30 s, larva 3 again at 20-30 s elsewhere in the arena."""
    first, second = block(3, 0.0, 10.0), block(3, 20.0, 30.0, x0=60.0, y0=40.0)
    path = write(tmp_path / NAME, first, block(5, 0.0, 30.0, y0=20.0), second)
    run, warned = read_alike(monkeypatch, caplog, path)

    assert [tr.id for tr in run.tracks] == ["3", "5", "6"]  # 6 = the file's largest id + 1
    assert run.metadata["reused_larva_ids"] == {"6": "3"}
    assert reuse_warnings(warned) == [
        f"{path}: larva id 3 is re-used: it comes back after other larvae's lines and a time gap, so its 2 blocks "
        "of lines are read as separate larvae (nothing is interpolated across the gap): "
        "lines 1-101 (0.000-10.000 s) stay larva 3; lines 403-503 (20.000-30.000 s) become larva 6"
    ]
    # Each track holds its own block only: nothing spans the 10 s gap.
    for larva, (_, t, spine) in (("3", first), ("6", second)):
        track = run.track(larva)
        np.testing.assert_array_equal(track.t, t)
        np.testing.assert_allclose(track.spine, spine, atol=1e-9)

    # No segment is interpolated across the gap: larva 3's segments (the last ones reach past
    # 10 s) are those of block 1 alone, edge-clamped at its end.
    spec = SegmentSpec()
    alone = Track("3", first[1], first[2])
    np.testing.assert_array_equal(build_segments(run.track("3"), spec), build_segments(alone, spec))
    np.testing.assert_array_equal(build_segments(run.track("6"), spec), build_segments(Track("6", *second[1:]), spec))

    # The new id reaches the .label with its provenance.
    text = label_file_text(label_file_for_run(run, labels={tr.id: [("run",)] * tr.n_steps for tr in run.tracks}))
    assert '"reused_larva_ids": {"6": "3"}' in text and '"id": "6"' in text


def test_same_id_in_two_blocks_that_overlap_in_time_is_an_error(tmp_path, monkeypatch, caplog):
    """Two animals at once with one id: never merged, never guessed apart."""
    path = write(tmp_path / NAME, block(3, 0.0, 10.0), block(5, 0.0, 30.0), block(3, 5.0, 15.0, x0=60.0))
    message, _ = read_alike(monkeypatch, caplog, path)
    assert message == (
        f"{path}: larva 3 is in two blocks of lines whose times overlap (lines 1-101: 0.000-10.000 s; "
        "lines 403-503: 5.000-15.000 s): two animals cannot share one id at the same time; "
        "time 5.0000 s on line 403 is not increasing (line 101 has 10.0000 s)"
    )


def test_three_blocks_and_two_reused_ids_are_numbered_by_id_then_time(tmp_path, monkeypatch, caplog):
    path = write(
        tmp_path / NAME,
        block(3, 0.0, 5.0), block(5, 0.0, 5.0, y0=20.0), block(7, 0.0, 30.0, y0=40.0),
        block(3, 10.0, 15.0, x0=60.0), block(5, 12.0, 20.0, x0=30.0, y0=20.0), block(3, 20.0, 25.0, x0=90.0),
    )
    run, warned = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["3", "5", "7", "8", "9", "10"]
    assert run.metadata["reused_larva_ids"] == {"8": "3", "9": "3", "10": "5"}
    np.testing.assert_allclose([run.track(i).t[[0, -1]] for i in ("3", "8", "9", "5", "10")],
                               [[0, 5], [10, 15], [20, 25], [0, 5], [12, 20]])
    messages = reuse_warnings(warned)
    assert len(messages) == 2
    assert messages[0].endswith("lines 1-51 (0.000-5.000 s) stay larva 3; lines 404-454 (10.000-15.000 s) become "
                                "larva 8; lines 536-586 (20.000-25.000 s) become larva 9")
    assert "its 3 blocks" in messages[0] and "larva id 5 is re-used" in messages[1]


def test_block_continuing_where_the_larva_left_off_is_the_same_larva(tmp_path, monkeypatch, caplog):
    """No time gap (the next frame): the id was not re-used, the lines were only split."""
    path = write(tmp_path / NAME, block(3, 0.0, 10.0), block(5, 0.0, 30.0, y0=20.0), block(3, 10.1, 20.0, x0=5.05))
    run, warned = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["3", "5"] and "reused_larva_ids" not in run.metadata
    assert run.track("3").n_steps == 201 and not reuse_warnings(warned)


def test_time_ordered_file_keeps_a_larva_absent_for_a_while_as_one_track(tmp_path, monkeypatch, caplog):
    """Frame-major lines (the time never goes back): a larva missing 10 s is one track with a
    gap, as the tracker wrote it (documented); nothing is split, nothing warned."""
    larva3 = [block(3, 0.0, 10.0), block(3, 20.0, 30.0)]
    larva5 = block(5, 0.0, 30.0, y0=20.0)
    rows = [(t, 3, line) for lines, times, _ in larva3 for line, t in zip(lines, times)]
    rows += [(t, 5, line) for line, t in zip(larva5[0], larva5[1])]
    path = tmp_path / NAME
    path.write_text("\n".join(line for _, _, line in sorted(rows)) + "\n")
    run, warned = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["3", "5"] and not reuse_warnings(warned)
    assert run.track("3").n_steps == 202 and np.diff(run.track("3").t).max() == pytest.approx(10.0)


def test_outline_of_a_reused_id_follows_its_spine(tmp_path, monkeypatch, caplog):
    blocks = [block(3, 0.0, 10.0), block(5, 0.0, 30.0, y0=20.0), block(3, 20.0, 30.0, x0=60.0)]
    path = write(tmp_path / NAME, *blocks)
    outline_lines = []
    for lines, _, spine in blocks:  # a 4-point contour: the spine's ends and two side points
        for line, points in zip(lines, spine):
            ring = [points[0], points[2] + [0, 0.3], points[-1], points[2] - [0, 0.3]]
            outline_lines.append(" ".join(line.split()[:3]) + " " + " ".join(f"{v:.4f}" for p in ring for v in p))
    path.with_suffix(".outline").write_text("\n".join(outline_lines) + "\n")
    run, _ = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["3", "5", "6"]
    np.testing.assert_allclose(run.track("6").outline[:, 0], blocks[2][2][:, 0], atol=1e-9)
    np.testing.assert_allclose(run.track("3").outline[:, 0], blocks[0][2][:, 0], atol=1e-9)


# ----------------------------------------------------------------------------- FIMTrack


def fim_table(columns: list[tuple[int, range, float]], n_frames: int = 30) -> str:
    """A FIMTrack csv: (larva id, frames present, x offset in px) per column; 3-point spines."""
    rows = [",".join([""] + [f"larva({larva})" for larva, _, _ in columns])]
    for feature, along in (("head", 40.0), ("spinepoint_1", 20.0), ("tail", 0.0)):
        for axis in ("x", "y"):
            for f in range(n_frames):
                cells = [f"{feature}_{axis}({f})"]
                for _, frames, x0 in columns:
                    value = x0 + along + 5.0 * f if axis == "x" else 100.0 + 3.0 * np.sin(along / 20 + f / 5)
                    cells.append(f"{value:.2f}" if f in frames else "")
                rows.append(",".join(cells))
    return "\n".join(rows) + "\n"


FIM_OPTIONS = ReadOptions(framerate=10.0, pixelsize_um=100.0)


def test_fimtrack_id_in_two_columns_without_overlap_is_two_larvae(tmp_path, monkeypatch, caplog):
    path = tmp_path / "joined.csv"
    path.write_text(fim_table([(3, range(0, 10), 0.0), (5, range(0, 30), 500.0), (3, range(20, 30), 1000.0)]))
    run, warned = read_alike(monkeypatch, caplog, path, FIM_OPTIONS)
    assert [tr.id for tr in run.tracks] == ["3", "5", "6"]
    assert run.metadata["reused_larva_ids"] == {"6": "3"}
    assert reuse_warnings(warned) == [
        f"{path}: larva id 3 is re-used: 2 columns of the header are larva(3), in frames that do not overlap, so they "
        "are read as separate larvae (nothing is interpolated between them): column 2 (frames 0-9, 0.000-0.900 s) "
        "stays larva 3; column 4 (frames 20-29, 2.000-2.900 s) becomes larva 6"
    ]
    np.testing.assert_allclose(run.track("3").t, np.arange(10) / 10.0)
    np.testing.assert_allclose(run.track("6").t, np.arange(20, 30) / 10.0)
    np.testing.assert_allclose(run.track("6").spine[:, 0, 0], (1000.0 + 5.0 * np.arange(20, 30)) / 10.0)


def test_fimtrack_id_in_two_columns_with_overlapping_frames_is_an_error(tmp_path, monkeypatch, caplog):
    path = tmp_path / "joined.csv"
    path.write_text(fim_table([(3, range(0, 10), 0.0), (5, range(0, 30), 500.0), (3, range(5, 30), 1000.0)]))
    message, _ = read_alike(monkeypatch, caplog, path, FIM_OPTIONS)
    assert message == (f"{path}: larva 3 appears twice in the header (columns 2 and 4) with overlapping frames "
                       "(0-9 and 5-29): two animals cannot share one id at the same time")


# ----------------------------------------------------------------------------- collapsed spines


def collapse(line: str) -> str:
    """The line with every spine point at its first point (length 0)."""
    fields = line.split()
    return " ".join(fields[:3] + fields[3:5] * K)


def test_collapsed_frames_are_bridged_and_named(tmp_path, monkeypatch, caplog):
    lines, t, spine = block(1, 0.0, 9.9)  # 100 frames
    others = block(2, 0.0, 9.9, y0=20.0)
    lines = [collapse(line) if 10 <= i < 25 or i == 40 else line for i, line in enumerate(lines)]
    path = tmp_path / NAME
    path.write_text("\n".join(lines + others[0]) + "\n")
    run, warned = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["1", "2"] and not run.left_out
    assert [m for m in warned if "impossible frame" in m] == [
        f"{path}: larva 1: 16 impossible frame(s) bridged by interpolating between the nearest plausible frames "
        "(time steps kept): line 11 to line 25 (15 frames, spine collapsed to one point), "
        "line 41 (spine collapsed to one point)"
    ]
    track = run.track("1")
    np.testing.assert_array_equal(track.t, t)  # every time step kept
    assert track.spine_lengths().min() > 3.0  # a 4 mm larva again
    np.testing.assert_allclose(track.spine[40], (spine[39] + spine[41]) / 2, atol=1e-9)
    assert np.isfinite(build_segments(track)).all()


def test_larva_collapsed_in_every_frame_is_left_out_not_divided_by_zero(tmp_path, monkeypatch, caplog):
    flat = [collapse(line) for line in block(1, 0.0, 4.9)[0]]
    path = tmp_path / NAME
    path.write_text("\n".join(flat + block(2, 0.0, 4.9, y0=20.0)[0]) + "\n")
    run, warned = read_alike(monkeypatch, caplog, path)
    assert [tr.id for tr in run.tracks] == ["2"]
    assert run.left_out == {"1": "spine mostly collapsed to one point"}
    assert f"{path}: larva 1: 50 of 50 frames (100%) have a spine collapsed to one point (first at line 1); " \
           "more than 20% is corrupt data, not a track; this larva is left out" in warned
    assert all(np.isfinite(build_segments(track)).all() for track in run.tracks)


def test_fimtrack_collapsed_frames_are_bridged_and_named(tmp_path, monkeypatch, caplog):
    path = tmp_path / "flat.csv"
    rows = fim_table([(1, range(30), 0.0), (2, range(30), 500.0)]).splitlines()
    # Frames 5-7 of larva 1: every point at the tail (head and spinepoint_1 rows copy the tail's cells).
    cell = {row.split(",")[0]: row.split(",")[1] for row in rows[1:]}
    for i, row in enumerate(rows):
        name = row.split(",")[0]
        for f in (5, 6, 7):
            for point in ("head", "spinepoint_1"):
                for axis in ("x", "y"):
                    if name == f"{point}_{axis}({f})":
                        cells = row.split(",")
                        cells[1] = cell[f"tail_{axis}({f})"]
                        rows[i] = ",".join(cells)
    path.write_text("\n".join(rows) + "\n")
    run, warned = read_alike(monkeypatch, caplog, path, FIM_OPTIONS)
    assert [tr.id for tr in run.tracks] == ["1", "2"]
    assert [m for m in warned if "impossible frame" in m] == [
        f"{path}: larva 1: 3 impossible frame(s) bridged by interpolating between the nearest plausible frames "
        "(time steps kept): frame 5 (line 7) to frame 7 (line 9) (3 frames, spine collapsed to one point)"
    ]
    assert run.track("1").spine_lengths().min() > 3.0
