"""Fast text readers: the fast parsers give the careful parsers' Runs, warnings and messages.

Every file is read twice, once with the fast parser allowed (`FAST_PARSER` True, the
default) and once with the careful parser only, and the two results must be identical: the
same tracks (times, spines, outlines bit for bit), metadata, left_out, sha1 and warnings, or
the same one-line TrackDataError. Files in the common layout must take the fast path
(`_parse_table_fast` returns a table); odd ones must leave it. The .spine tests run with each
fast .spine parser (`spine_parser`): pyarrow's CSV reader and pandas' (used without pyarrow).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maggotflow import plausibility
from maggotflow.formats import ReadOptions, file_sha1, read_run
from maggotflow.formats import fimtrack as fim
from maggotflow.formats import spine as sp
from maggotflow.formats.fimtrack import write_fimtrack
from maggotflow.formats.spine import write_spine
from maggotflow.simulation import SimulationConfig, simulate_run
from maggotflow.tracks import Run, Track, TrackDataError

DATE_TIME = "20200101_000000"
NAME = f"{DATE_TIME}@g@e@t15@p@100.spine"


def simulated(larvae: int = 4, duration: float = 20.0, seed: int = 0, outline: bool = True) -> Run:
    config = SimulationConfig(duration_s=duration, larvae=(larvae, larvae), frame_rate_hz=(30.0, 30.0))
    run = simulate_run(np.random.default_rng(seed), config, {"id": DATE_TIME})
    if not outline:
        run = Run(run.metadata, [tr.replace(outline=None) for tr in run.tracks])
    return run


def read_both(monkeypatch, caplog, path: Path, options: ReadOptions | None = None):
    """(fast result, careful result): a Run or a TrackDataError message, with the warnings."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(sp, "FAST_PARSER", fast)
        monkeypatch.setattr(fim, "FAST_PARSER", fast)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                outcome = read_run(path, options or ReadOptions())
            except TrackDataError as err:
                outcome = str(err)
        results.append((outcome, [r.getMessage() for r in caplog.records]))
    return results


def assert_identical(a, b) -> None:
    (run_a, warnings_a), (run_b, warnings_b) = a, b
    assert warnings_a == warnings_b
    if isinstance(run_a, str) or isinstance(run_b, str):
        assert run_a == run_b
        return
    assert run_a.metadata == run_b.metadata
    assert (run_a.sha1, run_a.left_out, run_a.format) == (run_b.sha1, run_b.left_out, run_b.format)
    assert [tr.id for tr in run_a.tracks] == [tr.id for tr in run_b.tracks]
    for x, y in zip(run_a.tracks, run_b.tracks):
        assert np.array_equal(x.t, y.t)
        assert x.spine.shape == y.spine.shape and np.array_equal(x.spine, y.spine)
        assert (x.outline is None) == (y.outline is None)
        if x.outline is not None:
            assert x.outline.shape == y.outline.shape and np.array_equal(x.outline, y.outline, equal_nan=True)


@pytest.fixture(params=["pyarrow", "pandas"])
def spine_parser(request, monkeypatch) -> str:
    """The fast .spine parser a test runs with; with "pyarrow", pandas' must not be used."""
    if request.param == "pyarrow":
        if sp._arrow() is None:
            pytest.skip("pyarrow is not usable here (see test_pyarrow_is_used_where_it_reads_like_pandas)")
        pandas_blocks = sp._parse_blocks

        def outlines_only(path, kind, *args):
            assert kind == "outline", "a .spine file went through pandas"
            return pandas_blocks(path, kind, *args)

        monkeypatch.setattr(sp, "_parse_blocks", outlines_only)
    monkeypatch.setattr(sp, "ARROW_PARSER", request.param == "pyarrow")
    return request.param


def root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


# ----------------------------------------------------------------------------- .spine / .outline


@pytest.mark.usefixtures("spine_parser")
@pytest.mark.parametrize("order", ["head_first", "tail_first"])
def test_spine_and_outline_fast_equals_careful(tmp_path, monkeypatch, caplog, order):
    path = tmp_path / NAME
    write_spine(simulated(), path, spine_order=order)
    assert sp._parse_table_fast(path, "spine") is not None
    assert sp._parse_table_fast(path.with_suffix(".outline"), "outline") is not None
    fast, careful = read_both(monkeypatch, caplog, path)
    assert_identical(fast, careful)
    run = fast[0]
    assert run.sha1 == file_sha1(path) and run.tracks[0].outline is not None
    assert run.metadata["spine_order"] == order


@pytest.mark.usefixtures("spine_parser")
def test_spine_blocks_cut_anywhere_and_short_estimate(tmp_path, monkeypatch, caplog):
    """Blocks of 7 lines (pandas) or 1 KB (pyarrow) cut larvae anywhere; the first lines are
    long, the rest short, so the estimated number of lines is too small and the table grows."""
    path = tmp_path / NAME
    run = simulated(larvae=3, duration=60.0, outline=False)
    write_spine(run, path, precision=1)
    lines = path.read_text().splitlines()
    head = [" ".join(v if i < 3 else f"{float(v):.6f}" for i, v in enumerate(line.split())) for line in lines[:400]]
    path.write_text("\n".join(head + lines[400:]) + "\n")
    monkeypatch.setattr(sp, "FAST_CHUNK_LINES", 7)
    monkeypatch.setattr(sp, "ARROW_BLOCK_BYTES", 1024)
    table = sp._parse_table_fast(path, "spine")
    assert table is not None and table.ids.size == len(lines)
    fast, careful = read_both(monkeypatch, caplog, path)
    assert_identical(fast, careful)


@pytest.mark.usefixtures("spine_parser")
def test_spine_tracks_are_views_into_one_table(tmp_path, monkeypatch):
    path = tmp_path / NAME
    write_spine(simulated(outline=False), path, spine_order="head_first")
    run = read_run(path)
    assert run.metadata["spine_order"] == "head_first"  # flipped in place, still views
    bases = {id(root(tr.spine)) for tr in run.tracks}
    assert len(bases) == 1
    assert all(not tr.spine.flags.owndata for tr in run.tracks)


@pytest.mark.usefixtures("spine_parser")
def test_larvae_interleaved_or_out_of_order_are_read_alike(tmp_path, monkeypatch, caplog):
    """Frame-major files (all larvae per frame) and larvae written in no id order."""
    path = tmp_path / NAME
    write_spine(simulated(larvae=3, outline=False), path)
    lines = path.read_text().splitlines()
    by_frame = sorted(lines, key=lambda line: (float(line.split()[2]), int(line.split()[1])))
    reverse_ids = sorted(lines, key=lambda line: -int(line.split()[1]))  # stable: times in order
    for text in (by_frame, reverse_ids):
        path.write_text("\n".join(text) + "\n")
        assert sp._parse_table_fast(path, "spine") is not None
        fast, careful = read_both(monkeypatch, caplog, path)
        assert_identical(fast, careful)
        assert len(fast[0].tracks) == 3


@pytest.mark.usefixtures("spine_parser")
def test_bridged_frames_and_short_larvae_warn_alike(tmp_path, monkeypatch, caplog):
    path = tmp_path / NAME
    write_spine(simulated(larvae=3, outline=False), path)
    lines = path.read_text().splitlines()
    parts = lines[50].split()
    parts[5] = "123456789.0"  # an impossible value, bridged and named by its line
    lines[50] = " ".join(parts)
    lines.append(f"{DATE_TIME} 99 1.000 1.0 2.0 " + " ".join(["3.0"] * (len(parts) - 5)))  # one frame: left out
    path.write_text("\n".join(lines) + "\n")
    fast, careful = read_both(monkeypatch, caplog, path)
    assert_identical(fast, careful)
    assert "line 51" in " ".join(fast[1]) and "99" in fast[0].left_out


def test_outline_wider_later_than_at_the_start(tmp_path, monkeypatch, caplog):
    """The fast outline parser guesses the width from the first lines and retries wider."""
    run = simulated(larvae=2, duration=30.0)
    path = tmp_path / NAME
    write_spine(run, path)
    outline = path.with_suffix(".outline")
    lines = outline.read_text().splitlines()
    wide = []
    for i, line in enumerate(lines):
        if i > len(lines) // 2:  # far beyond the 64 KB head
            parts = line.split()
            line = " ".join(parts + parts[3:] * 3)
        wide.append(line)
    outline.write_text("\n".join(wide) + "\n")
    table = sp._parse_table_fast(outline, "outline")
    assert table is not None and int(table.counts.max()) > 3 * int(table.counts[:10].max())
    fast, careful = read_both(monkeypatch, caplog, path)
    assert_identical(fast, careful)


@pytest.mark.usefixtures("spine_parser")
def test_outlines_false_never_opens_the_outline(tmp_path, monkeypatch, caplog):
    path = tmp_path / NAME
    write_spine(simulated(larvae=2), path)
    outline = path.with_suffix(".outline")
    outline.unlink()
    os.mkfifo(outline)  # opening it would block; reading its status is refused
    with pytest.raises(TrackDataError, match="FIFO"):
        read_run(path)
    run = read_run(path, ReadOptions(outlines=False))
    assert all(tr.outline is None for tr in run.tracks)
    outline.unlink()
    outline.write_text("garbage\n")
    with pytest.raises(TrackDataError):
        read_run(path)
    fast, careful = read_both(monkeypatch, caplog, path, ReadOptions(outlines=False))
    assert_identical(fast, careful)
    assert len(fast[0].tracks) == 2


GOOD = f"{DATE_TIME} {{id}} {{t}} 1.0 2.0 3.0 4.0 5.0 6.0"


def lines_of(n: int = 6, larva: int = 1) -> list[str]:
    return [GOOD.format(id=larva, t=f"{i * 0.1:.1f}") for i in range(n)]


ODD_SPINES = {
    # read alike by both parsers, but not in the fast parser's layout
    "tabs": "\n".join(line.replace(" ", "\t") for line in lines_of()) + "\n",
    "double-spaces": "\n".join(line.replace(" ", "  ") for line in lines_of()) + "\n",
    "crlf": "\r\n".join(lines_of()) + "\r\n",
    "blank-lines": "\n".join(lines_of()[:3] + ["", "   "] + lines_of()[3:]) + "\n\n",
    "leading-space": "\n".join(" " + line for line in lines_of()) + "\n",
    "trailing-space": "\n".join(line + " " for line in lines_of()) + "\n",
    "exponent": "\n".join(lines_of()).replace(" 2.0 ", " 2e0 ") + "\n",
    "no-final-newline": "\n".join(lines_of()),
    "form-feed": "\n".join(lines_of()).replace(" 3.0", " \x0c3.0", 1) + "\n",
    # broken: both parsers must give the same message
    "truncated": "\n".join(lines_of() + [f"{DATE_TIME} 1 0.6 1.0 2.0 3"]),
    "columns": "\n".join(lines_of()[:2] + [f"{DATE_TIME} 1 0.2 1 2 3 4"] + lines_of()[3:]),
    "longer-line": "\n".join(lines_of()[:2] + [lines_of()[2] + " 7.0 8.0"] + lines_of()[3:]),
    "odd": f"{DATE_TIME} 1 0.0 1 2 3\n{DATE_TIME} 1 0.1 1 2 3\n",
    "text": "\n".join(lines_of()).replace("0.2 1.0 2.0", "0.2 1.0 x") + "\n",
    "nan": "\n".join(lines_of()).replace("0.2 1.0 2.0", "0.2 1.0 nan") + "\n",
    "inf": "\n".join(lines_of()).replace("0.3 1.0 2.0", "0.3 1.0 inf") + "\n",
    "nan-time": "\n".join(lines_of()).replace("0.3 1.0", "NaN 1.0") + "\n",
    "backwards": "\n".join(lines_of()[:3] + [GOOD.format(id=1, t="0.05")]) + "\n",
    "duplicated": "\n".join(lines_of()[:3] + [GOOD.format(id=1, t="0.1")]) + "\n",
    "split-backwards": "\n".join(lines_of(3) + lines_of(2, larva=2) + lines_of(2)) + "\n",
    "id-text": "\n".join(lines_of()[:2] + [GOOD.format(id="a7", t="0.3")]) + "\n",
    "id-fraction": "\n".join(lines_of()[:2] + [GOOD.format(id="1.5", t="0.3")]) + "\n",
    "id-negative": "\n".join(lines_of()[:2] + [GOOD.format(id="-3", t="0.3")]) + "\n",
    "date-time": "\n".join(lines_of()[:4] + [lines_of()[4].replace(DATE_TIME, "2020010_0000000")]) + "\n",
    "other-date-time": "\n".join(lines_of()[:4] + [lines_of()[4].replace(DATE_TIME, "20200101_000001")]) + "\n",
    "binary": "\n".join(lines_of()[:2]) + "\n\x01\x02 junk\n",
    "non-ascii": "\n".join(lines_of()).replace("0.2 1.0", "0.2 1.0\u00b5") + "\n",
    "empty-id": "\n".join(lines_of()).replace(f"{DATE_TIME} 1 0.2", f"{DATE_TIME}  0.2") + "\n",
    # where pyarrow and pandas differ (each leaves the fast path or reads as the careful parser)
    "cr": "\r".join(lines_of()) + "\r",
    "infinity": "\n".join(lines_of()).replace("0.3 1.0 2.0", "0.3 1.0 Infinity") + "\n",
    "minus-inf": "\n".join(lines_of()).replace("0.3 1.0 2.0", "0.3 -inf 2.0") + "\n",
    "plus-sign": "\n".join(lines_of()).replace(" 2.0 ", " +2 ") + "\n",
    "exponent-1e3": "\n".join(lines_of()).replace(" 2.0 ", " 1e3 ") + "\n",
    "leading-dot": "\n".join(lines_of()).replace(" 2.0 ", " .5 ") + "\n",
    "twenty-digits": "\n".join(lines_of()).replace(" 2.0 ", " 1.2345678901234567891 ") + "\n",
    "tab-inside": "\n".join(lines_of()).replace(" 3.0", "\t3.0", 1) + "\n",
    "tab-before-value": "\n".join(lines_of()).replace(" 3.0", " \t3.0", 1) + "\n",
    "tab-after-value": "\n".join(lines_of()).replace(" 3.0", " 3.0\t", 1) + "\n",
    "nul": "\n".join(lines_of()).replace(" 3.0", " 3.0\x00", 1) + "\n",
    "empty-last-line": "\n".join(lines_of()) + "\n\n",
    "one-value-more": "\n".join(lines_of()[:2] + [lines_of()[2] + " 7.0"] + lines_of()[3:]) + "\n",
    "one-value-fewer": "\n".join(lines_of()[:2] + [lines_of()[2].rsplit(" ", 1)[0]] + lines_of()[3:]) + "\n",
    "plus-id": "\n".join(lines_of()[:2] + [GOOD.format(id="+1", t="0.2")] + lines_of()[3:]) + "\n",
    "hex-id": "\n".join(lines_of()[:2] + [GOOD.format(id="0x1", t="0.2")] + lines_of()[3:]) + "\n",
    "byte-order-mark": "\ufeff" + "\n".join(lines_of()) + "\n",
}
# In the layout (times are checked after parsing, when grouping by larva; both parsers read
# these numbers as the careful parser does); "plus-id" for pandas only (pyarrow refuses "+1").
IN_LAYOUT = {"no-final-newline", "exponent", "backwards", "duplicated", "split-backwards", "plus-sign",
             "exponent-1e3", "leading-dot", "twenty-digits"}


@pytest.mark.parametrize("case", sorted(ODD_SPINES))
def test_odd_spine_files_leave_the_fast_path_and_read_alike(tmp_path, monkeypatch, caplog, spine_parser, case):
    path = tmp_path / "20200101_000000@odd.spine"
    path.write_bytes(ODD_SPINES[case].encode("utf-8"))
    in_layout = case in IN_LAYOUT or (case == "plus-id" and spine_parser == "pandas")
    assert (sp._parse_table_fast(path, "spine") is not None) == in_layout
    fast, careful = read_both(monkeypatch, caplog, path, ReadOptions(min_steps=1))
    assert_identical(fast, careful)
    if case in ("tabs", "double-spaces", "crlf", "blank-lines", "leading-space", "trailing-space", "exponent",
                "plus-sign", "exponent-1e3", "leading-dot", "twenty-digits", "tab-inside", "tab-before-value",
                "tab-after-value", "empty-last-line", "plus-id"):
        # read, not refused
        assert isinstance(fast[0], Run) and fast[0].tracks[0].n_steps == 6
    if case in ("truncated", "columns", "longer-line", "odd", "text", "nan", "inf", "backwards", "duplicated",
                "infinity", "minus-inf", "nul", "one-value-more", "one-value-fewer", "hex-id", "byte-order-mark"):
        assert isinstance(fast[0], str) and "line" in fast[0]
    if case == "twenty-digits":  # correctly rounded, as Python's float()
        assert float("1.2345678901234567891") in fast[0].tracks[0].spine[0].ravel()


def test_pyarrow_is_used_where_it_reads_like_pandas():
    """pyarrow parses .spine files when installed, unless pandas (2.x) rounds long numbers otherwise."""
    pytest.importorskip("pyarrow.csv")
    assert sp._arrow() is not None or int(pd.__version__.split(".")[0]) < 3


def test_spine_files_are_read_without_pyarrow_or_where_it_rounds_otherwise(tmp_path, monkeypatch):
    """A missing or broken pyarrow, or one whose numbers differ from pandas', leaves the
    .spine files to pandas' fast parser."""
    path = tmp_path / NAME
    write_spine(simulated(larvae=2, outline=False), path)
    read_csv = pd.read_csv

    def one_ulp_off(*args, **kwargs):
        df = read_csv(*args, **kwargs)
        return df.apply(lambda column: np.nextafter(column, np.inf) if column.dtype.kind == "f" else column)

    patches = {
        "not importable": lambda m: m.setitem(sys.modules, "pyarrow", None),
        "rounds otherwise": lambda m: m.setattr(pd, "read_csv", one_ulp_off),
    }
    try:
        for patch in patches.values():
            with monkeypatch.context() as m:
                patch(m)
                m.setattr(sp, "_parse_blocks", lambda *args: "pandas")
                sp._arrow.cache_clear()
                assert sp._arrow() is None
                assert sp._parse_table_fast(path, "spine") == "pandas"
    finally:
        sp._arrow.cache_clear()
    assert sp._parse_table_fast(path, "spine") is not None


def timed(larva: int, t0: float, n: int, points: str = "1.0 2.0 3.0 4.0 5.0 6.0") -> list[str]:
    """n lines of one larva from t0 s at 10 Hz."""
    return [f"{DATE_TIME} {larva} {t0 + i * 0.1:.1f} {points}" for i in range(n)]


FLAT = "1.0 2.0 1.0 2.0 1.0 2.0"  # a spine collapsed to one point
TRAP_SPINES = {
    # issue 20: an id re-used in a later block (after a time gap), overlapping, continued;
    # spines collapsed to one point. All in the fast parser's layout.
    "reused-id": timed(1, 0.0, 20) + timed(2, 0.0, 60) + timed(1, 4.0, 20),
    "reused-three-blocks": timed(1, 0.0, 20) + timed(2, 0.0, 60) + timed(1, 2.5, 10) + timed(3, 0.0, 5)
    + timed(1, 4.0, 10),
    "reused-overlap": timed(1, 0.0, 20) + timed(2, 0.0, 60) + timed(1, 1.0, 20),
    "reused-duplicate": timed(1, 0.0, 20) + timed(2, 0.0, 60) + timed(1, 1.9, 20),
    "continued": timed(1, 0.0, 20) + timed(2, 0.0, 60) + timed(1, 2.0, 20),
    "collapsed": timed(1, 0.0, 10) + timed(1, 1.0, 2, FLAT) + timed(1, 1.2, 28) + timed(2, 0.0, 30),
    "collapsed-all": timed(1, 0.0, 30, FLAT) + timed(2, 0.0, 30),
}


@pytest.mark.usefixtures("spine_parser")
@pytest.mark.parametrize("case", sorted(TRAP_SPINES))
def test_data_trap_spine_files_take_the_fast_path_and_read_alike(tmp_path, monkeypatch, caplog, case):
    path = tmp_path / "20200101_000000@trap.spine"
    path.write_text("\n".join(TRAP_SPINES[case]) + "\n")
    assert sp._parse_table_fast(path, "spine") is not None
    fast, careful = read_both(monkeypatch, caplog, path, ReadOptions(min_steps=1))
    assert_identical(fast, careful)
    if case.startswith("reused-") and case not in ("reused-overlap", "reused-duplicate"):
        assert any("is re-used" in message for message in fast[1]) and "reused_larva_ids" in fast[0].metadata
    if case in ("reused-overlap", "reused-duplicate"):
        assert isinstance(fast[0], str) and "two blocks of lines whose times overlap" in fast[0]
    if case.startswith("collapsed"):
        assert any("collapsed to one point" in message for message in fast[1])


def fim_reused(second: range) -> str:
    """larva(3) in columns 2 and 4: frames 0-9 and `second`; larva(5) in column 3."""
    rows = [",larva(3),larva(5),larva(3)"]
    for feature, along in (("head", 40.0), ("spinepoint_1", 20.0), ("tail", 0.0)):
        for axis in ("x", "y"):
            for f in range(30):
                values = [along + f if axis == "x" else 10.0 + along / 10, 500 + along + f, 900 + along + f]
                present = [f < 10, True, f in second]
                cells = [f"{v:.1f}" if here else "" for v, here in zip(values, present)]
                rows.append(",".join([f"{feature}_{axis}({f})"] + cells))
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("second", [range(20, 30), range(5, 15)], ids=["reused", "overlap"])
def test_fimtrack_reused_id_read_alike(tmp_path, monkeypatch, caplog, second):
    path = tmp_path / "reused.csv"
    path.write_text(fim_reused(second))
    fast, careful = read_both(monkeypatch, caplog, path, ReadOptions(framerate=10.0))
    assert_identical(fast, careful)
    if second.start >= 10:
        assert [tr.id for tr in fast[0].tracks] == ["3", "5", "6"]
    else:
        assert isinstance(fast[0], str) and "overlapping frames" in fast[0]


ODD_OUTLINES = {
    "gap": lambda lines: [lines[0].replace(" ", "  ", 5)] + lines[1:],
    "nan-last": lambda lines: lines[:5] + [lines[5] + " nan nan"] + lines[6:],
    "odd": lambda lines: lines[:5] + [lines[5] + " 1.0"] + lines[6:],
    "inf": lambda lines: lines[:5] + [lines[5] + " inf 1.0"] + lines[6:],
    "crlf": lambda lines: [line + "\r" for line in lines],
    "wrong-time": lambda lines: lines[:5] + [lines[5].replace(lines[5].split()[2], "999.0", 1)] + lines[6:],
    "missing-larva": lambda lines: [line for line in lines if line.split()[1] != lines[0].split()[1]],
}


@pytest.mark.parametrize("case", sorted(ODD_OUTLINES))
def test_odd_outline_files_read_alike(tmp_path, monkeypatch, caplog, case):
    path = tmp_path / NAME
    write_spine(simulated(larvae=2, duration=5.0), path)
    outline = path.with_suffix(".outline")
    outline.write_text("\n".join(ODD_OUTLINES[case](outline.read_text().splitlines())) + "\n")
    fast, careful = read_both(monkeypatch, caplog, path)
    assert_identical(fast, careful)
    if case in ("gap", "nan-last", "odd", "inf", "crlf"):
        assert sp._parse_table_fast(outline, "outline") is None


# ----------------------------------------------------------------------------- FIMTrack


def fim_run(larvae: int = 4, seed: int = 1) -> Run:
    run = simulated(larvae=larvae, duration=10.0, seed=seed, outline=False)
    t0 = min(tr.t[0] for tr in run.tracks)
    tracks = []
    for i, tr in enumerate(run.tracks):
        keep = np.ones(tr.n_steps, dtype=bool)
        if i == 1:
            keep[20:40] = False  # a gap
        tracks.append(Track(tr.id, np.rint((tr.t[keep] - t0) * 30) / 30, tr.spine[keep]))
    return Run(run.metadata, tracks)


def test_fimtrack_fast_equals_careful(tmp_path, monkeypatch, caplog):
    path = tmp_path / f"{DATE_TIME}@g@e@t15@p@100.csv"
    write_fimtrack(fim_run(), path, framerate=30.0, pixelsize_um=90.0)
    data = path.read_bytes()
    n_cells = data.split(b"\n", 1)[0].count(b",") + 1
    assert fim._plain_lines(fim._byte_counts(data), data, n_cells) is not None
    options = ReadOptions(framerate=30.0, pixelsize_um=90.0)
    fast, careful = read_both(monkeypatch, caplog, path, options)
    assert_identical(fast, careful)
    assert fast[0].sha1 == file_sha1(path) and len(fast[0].tracks) == 4


def fim_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "base.csv"
    write_fimtrack(fim_run(larvae=2), path, framerate=30.0)
    return path.read_text().splitlines()


ODD_FIMTRACK = {
    "crlf": lambda lines: [line + "\r" for line in lines],
    "blank-line": lambda lines: lines[:9] + [""] + lines[9:],
    "spaces": lambda lines: [lines[0]] + [line.replace(",", ", ") for line in lines[1:]],
    "trailing-comma": lambda lines: [line + "," for line in lines],
    "row-name-spaces": lambda lines: lines[:5] + [" " + lines[5]] + lines[6:],
    "extra-feature": lambda lines: lines + [f"radius_1({i}),1.0,2.0" for i in range(3)],
    "truncated": lambda lines: lines + ["head_x(999),1.0"],
    "cells": lambda lines: lines[:5] + [lines[5] + ",7.0"] + lines[6:],
    "short-and-long": lambda lines: lines[:5] + [lines[5] + ",7.0", lines[6].rsplit(",", 1)[0]] + lines[7:],
    "row-name": lambda lines: lines[:5] + ["head_x[5]," + lines[5].split(",", 1)[1]] + lines[6:],
    "text": lambda lines: lines[:5] + [lines[5].split(",")[0] + ",abc," + lines[5].split(",")[2]] + lines[6:],
    "dup-row": lambda lines: lines + [lines[3]],
    "binary": lambda lines: lines[:5] + ["\x01" + lines[5]] + lines[6:],
    "tab": lambda lines: lines[:5] + [lines[5].replace(",", ",\t", 1)] + lines[6:],
}


@pytest.mark.parametrize("case", sorted(ODD_FIMTRACK))
def test_odd_fimtrack_files_read_alike(tmp_path, monkeypatch, caplog, case):
    path = tmp_path / "odd.csv"
    path.write_text("\n".join(ODD_FIMTRACK[case](fim_lines(tmp_path))) + "\n")
    fast, careful = read_both(monkeypatch, caplog, path, ReadOptions(framerate=30.0))
    assert_identical(fast, careful)
    if case in ("truncated", "cells", "short-and-long", "row-name", "text", "dup-row", "binary"):
        assert isinstance(fast[0], str) and "line" in fast[0]


# ----------------------------------------------------------------------------- exact helpers


def test_point_mean_and_spine_lengths_are_numpys_bit_for_bit():
    rng = np.random.default_rng(5)
    for n, k in itertools.product((1, 3, 100, 2000), (1, 2, 5, 8, 11, 17, 30)):
        spine = rng.normal(100, 40, (n, k, 2)) * rng.uniform(1e-3, 1e3)
        for view in (spine, spine[:, ::-1], spine[:, k // 2 :], spine[::2]):
            if view.shape[1]:
                assert np.array_equal(plausibility.point_mean(view), view.mean(axis=1))
        assert np.array_equal(plausibility.spine_lengths(spine), Track("1", np.arange(n), spine).spine_lengths())


def test_running_median7_is_the_sliding_median():
    for bits in itertools.product((0.0, 1.0), repeat=7):  # 0-1 principle: the network sorts
        assert plausibility.running_median7(np.array(bits)[:, None])[0, 0] == sorted(bits)[3]
    rng = np.random.default_rng(2)
    x = np.round(rng.normal(size=(500, 2)), 1)  # many ties
    expected = np.median(np.lib.stride_tricks.sliding_window_view(x, 7, axis=0), axis=-1)
    assert np.array_equal(plausibility.running_median7(x), expected)


def test_bridging_returns_its_input_when_nothing_is_impossible():
    run = simulated(larvae=1, outline=True)
    tr = run.tracks[0]
    spine, outline = plausibility.bridge_implausible_frames("f", tr.id, tr.t, tr.spine, tr.outline)
    assert spine is tr.spine and outline is tr.outline
    bad = tr.spine.copy()
    bad[5, 2, 0] = 1e9
    bridged, _ = plausibility.bridge_implausible_frames("f", tr.id, tr.t, bad, tr.outline)
    assert bridged is not bad and np.isfinite(bridged).all() and bridged[5, 2, 0] < 1e5


def test_body_measures_handed_to_orientation_change_nothing():
    from maggotflow.orientation import orientation_evidence

    run = simulated(larvae=3, duration=30.0, outline=False)
    handed = []
    for tr in run.tracks:
        measures: list = []
        plausibility.bridge_implausible_frames("f", tr.id, tr.t, tr.spine, measures=measures)
        assert len(measures) == 1
        handed.append((tr.t, tr.spine, measures[0]))
    plain = orientation_evidence([(tr.t, tr.spine) for tr in run.tracks])
    assert orientation_evidence(handed) == plain
    bad = run.tracks[0].spine.copy()
    bad[7, 3] += 500.0  # a jump: bridged, so the measures of the given spine are not handed on
    measures = []
    bridged, _ = plausibility.bridge_implausible_frames("f", "1", run.tracks[0].t, bad, measures=measures)
    assert bridged is not bad and measures == []
