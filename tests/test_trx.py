"""Janelia trx.mat: round trip through write_trx/read_run, hand-built layouts, bad input."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from maggotflow.formats import ReadOptions, detect_format, read_run
from maggotflow.formats.trx import TRX_BEHAVIOUR_FLAGS, read_trx, write_trx
from maggotflow.tracks import Run, Track, TrackDataError

JANELIA_DIR = Path("t15") / "GMR_SS01@UAS_Chrimson" / "r_LED100" / "20200101_120000"
K = 11  # spine points


def make_track(larva_id: str, n: int, t0: float, dt: float, seed: int, labels) -> Track:
    """A crawling larva: tail at x=0 .. head at x=4 mm, moving and bending; NaN-padded outline."""
    rng = np.random.default_rng(seed)
    t = t0 + dt * np.arange(n)
    s = np.linspace(0.0, 4.0, K)  # tail -> head along the body
    spine = np.empty((n, K, 2))
    spine[:, :, 0] = s[None, :] + 0.3 * t[:, None] + rng.normal(0, 0.01, (n, K))
    spine[:, :, 1] = 0.2 * np.sin(s[None, :] + t[:, None]) + seed
    m = 24
    outline = np.full((n, m, 2), np.nan)
    for i in range(n):
        count = 16 + (i % 9)  # a different number of contour points per frame
        angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
        outline[i, :count, 0] = spine[i, K // 2, 0] + 2.0 * np.cos(angle)
        outline[i, :count, 1] = spine[i, K // 2, 1] + 0.5 * np.sin(angle)
    return Track(larva_id, t, spine, outline=outline, labels=labels)


def make_run() -> Run:
    def cycle(pattern, n):
        return [pattern[i % len(pattern)] for i in range(n)]

    # Tuples in TRX_BEHAVIOUR_FLAGS order (run, cast, back..., hunch), as the reader reports them.
    tracks = [
        make_track("1", 40, 0.0, 1 / 15.7, 1, cycle([("run",), ("run",), ("cast",), ()], 40)),
        make_track("7", 25, 1.234, 1 / 15.7, 2, cycle([("run", "hunch"), ("back_large",), ()], 25)),
        make_track("12", 60, 0.5, 1 / 15.7, 3, cycle([("cast",), ("run", "cast", "hunch"), ("run",)], 60)),
    ]
    meta = {"id": "20200101_120000", "date_time": "20200101_120000"}
    return Run(metadata=meta, tracks=tracks)


def write_struct(path: Path, larvae: list[dict], refs_shape: str = "1xL") -> Path:
    """Write a MATLAB-like trx struct by hand: each field value is stored exactly as given
    (h5py orientation); None stores a MATLAB empty array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(larvae[0])
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        trx = f.create_group("trx")
        trx.attrs["MATLAB_class"] = np.bytes_("struct")
        for field in fields:
            shape = (1, len(larvae)) if refs_shape == "1xL" else (len(larvae), 1)
            arr = np.empty(shape, dtype=h5py.ref_dtype)
            for i, larva in enumerate(larvae):
                value = larva[field]
                if value is None:
                    ds = refs.create_dataset(f"{field}_{i}", data=np.zeros(2, dtype=np.uint64))
                    ds.attrs["MATLAB_empty"] = np.uint8(1)
                else:
                    ds = refs.create_dataset(f"{field}_{i}", data=np.asarray(value, dtype=float))
                arr.flat[i] = ds.ref
            trx.create_dataset(field, data=arr)
    return path


def simple_larva(number: float, n: int, t0: float = 0.0, layout: str = "matlab") -> dict:
    """Hand-made larva, spine stored head first; layout 'matlab' = (11, n), 'rows' = (n, 11)."""
    t = t0 + 0.05 * np.arange(n)
    x = np.linspace(4.0, 0.0, K)[None, :] + 0.1 * t[:, None]  # head (x=4) first
    y = np.full((n, K), float(number))
    orient = (lambda a: a.T) if layout == "matlab" else (lambda a: a)
    return {
        "t": t[None, :] if layout == "matlab" else t[:, None],
        "numero_larva_num": np.array([[number]]),
        "x_spine": orient(x),
        "y_spine": orient(y),
    }


# ------------------------------------------------------------------------------ round trip


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    run = make_run()
    path = tmp_path_factory.mktemp("trx") / JANELIA_DIR / "trx.mat"
    write_trx(run, path)
    return run, path


def test_round_trip(written):
    run, path = written
    assert detect_format(path) == "trx"
    back = read_run(path)
    assert back.format == "trx" and back.source == path and len(back.sha1) == 40
    assert [tr.id for tr in back.tracks] == ["1", "7", "12"]
    for original, read in zip(run.tracks, back.tracks):
        np.testing.assert_allclose(read.t, original.t, atol=1e-9, rtol=0)
        # tail -> head preserved: the tail (x near 0) stays at index 0
        np.testing.assert_array_equal(read.spine, original.spine)
        assert read.spine[0, 0, 0] < read.spine[0, -1, 0]
        np.testing.assert_array_equal(read.outline, original.outline)  # NaN padding included
        assert read.labels == original.labels
    assert back.tracks[1].labels[0] == ("run", "hunch")
    assert back.tracks[0].labels[3] == ()
    assert set(back.label_names) == {"run", "cast", "hunch", "back_large"}


def test_metadata_from_janelia_path(written):
    _, path = written
    meta = read_run(path).metadata
    assert list(meta)[0] == "id"
    identity = {k: v for k, v in meta.items() if not k.startswith("spine_order")}
    assert identity == {
        "id": "20200101_120000",
        "tracker": "t15",
        "genotype": "GMR_SS01",
        "effector": "UAS_Chrimson",
        "protocol": "r_LED100",
        "date_time": "20200101_120000",
        "filename": "trx.mat",
    }
    # Written head first with consistent x_head (these larvae crawl too slowly to vote).
    assert meta["spine_order"] == "head_first" and meta["spine_order_decided_by"] == "file"
    assert "spine_order_forward_fraction" in meta and "spine_order_moving_steps" in meta


def test_metadata_outside_janelia_layout(tmp_path):
    path = tmp_path / "data" / "raw" / "myrun" / "trx.mat"
    write_trx(make_run(), path)
    meta = read_run(path).metadata
    assert meta["id"] == "myrun" and meta["filename"] == "trx.mat"
    assert "tracker" not in meta and "genotype" not in meta


def test_file_looks_like_matlab_output(written):
    _, path = written
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Jan  1 12:00:00 2020 HDF5 schema 1.00 .")
    assert head[124:128] == b"\x00\x02IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        trx = f["trx"]
        assert trx.attrs["MATLAB_class"] == b"struct"
        assert trx["x_spine"].shape == (1, 3)
        spine = f[trx["x_spine"][0, 0]]
        assert spine.shape == (K, 40)  # MATLAB's 40 x 11, column-major
        assert spine.attrs["MATLAB_class"] == b"double"
        assert f[trx["t"][0, 1]].shape == (1, 25)
        assert f[trx["numero_larva_num"][0, 2]][()].item() == 12.0
        assert f[trx["x_contour"][0, 0]].shape == (24, 40)
        # head first on disk, and x_head says so
        np.testing.assert_array_equal(f[trx["x_head"][0, 0]][0], f[trx["x_spine"][0, 0]][0])
        assert np.array_equal(np.unique(f[trx["run"][0, 0]][()]), [0.0, 1.0])
        for field in ("x_center", "y_center", "larva_length_smooth_5", "x_tail", "y_tail"):
            assert f[trx[field][0, 0]].shape == (1, 40)
        length = f[trx["larva_length_smooth_5"][0, 0]][0]
        assert np.all((length > 3.9) & (length < 4.5))


def test_deterministic_bytes(tmp_path, written):
    _, path = written
    again = tmp_path / "again" / "trx.mat"
    write_trx(make_run(), again)
    assert again.read_bytes() == path.read_bytes()


def test_label_names_subset_and_no_labels(tmp_path):
    run = make_run()
    path = tmp_path / "subset" / "trx.mat"
    write_trx(run, path, label_names=["run", "cast"])
    back = read_run(path)
    assert back.tracks[1].labels[0] == ("run",)  # hunch not written
    assert back.tracks[1].labels[1] == ()  # back_large not written
    plain = Run({"id": "x"}, [tr.replace(labels=None, outline=None) for tr in run.tracks])
    write_trx(plain, tmp_path / "plain" / "trx.mat")
    back = read_run(tmp_path / "plain" / "trx.mat")
    assert not back.has_labels and back.tracks[0].outline is None


def test_writer_refuses_non_integer_ids(tmp_path):
    run = make_run()
    run.tracks[0] = run.tracks[0].replace(id="larva1")
    with pytest.raises(ValueError, match="larva1"):
        write_trx(run, tmp_path / "trx.mat")
    assert not (tmp_path / "trx.mat").exists()


def test_flag_names():
    for name in ("run", "cast", "back", "hunch", "roll", "stop_large", "small_motion",
                 "run_large", "cast_large", "back_large", "hunch_large", "roll_large",
                 "run_strong", "cast_weak"):
        assert name in TRX_BEHAVIOUR_FLAGS
    assert len(set(TRX_BEHAVIOUR_FLAGS)) == len(TRX_BEHAVIOUR_FLAGS)


# ---------------------------------------------------------------------- hand-built layouts


def test_rows_layout_with_square_larva(tmp_path):
    """Arrays stored (n, 11) and refs (L, 1); the 11-frame larva is square and must follow
    the file's layout rather than MATLAB's default."""
    larvae = [simple_larva(1, 30, layout="rows"), simple_larva(2, K, t0=1.0, layout="rows")]
    path = write_struct(tmp_path / "rows" / "trx.mat", larvae, refs_shape="Lx1")
    run = read_run(path)
    assert [tr.id for tr in run.tracks] == ["1", "2"]
    for tr, n in zip(run.tracks, (30, K)):
        assert tr.spine.shape == (n, K, 2)
        assert tr.t.size == n
        np.testing.assert_allclose(tr.spine[:, :, 1], tr.spine[0, 0, 1])  # y constant per larva
        # head-first on disk (no x_head): reversed to tail (x=0) first
        np.testing.assert_allclose(tr.spine[0, :, 0], np.linspace(0.0, 4.0, K) + 0.1 * tr.t[0])


def test_tail_first_spine_told_by_head_fields(tmp_path, caplog):
    larvae = []
    for number, n in ((1, 20), (2, 15), (3, 12)):
        larva = simple_larva(number, n)
        x, y = larva["x_spine"][::-1], larva["y_spine"][::-1]  # now tail first, (11, n)
        larva.update(x_spine=x, y_spine=y, x_head=x[-1:], y_head=y[-1:], x_tail=x[:1], y_tail=y[:1])
        larvae.append(larva)
    # larva 3 has empty head/tail fields: it follows the other larvae's (tail-first) order
    larvae[2].update(x_head=None, y_head=None, x_tail=None, y_tail=None)
    path = write_struct(tmp_path / "tailfirst" / "trx.mat", larvae)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert "assuming" not in caplog.text
    for tr in run.tracks:
        np.testing.assert_allclose(tr.spine[0, :, 0], np.linspace(0.0, 4.0, K) + 0.1 * tr.t[0])


def test_head_first_assumed_with_warning(tmp_path, caplog):
    path = write_struct(tmp_path / "nohead" / "trx.mat", [simple_larva(5, 10)])
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert "head first" in caplog.text
    assert run.tracks[0].spine[0, 0, 0] < run.tracks[0].spine[0, -1, 0]
    assert run.tracks[0].labels is None


def test_flags_plus_minus_one_and_missing_larva_number(tmp_path, caplog):
    larvae = [simple_larva(1, 6), simple_larva(2, 6)]
    for larva in larvae:
        del larva["numero_larva_num"]
        larva["run"] = np.array([[1, -1, 1, -1, 1, 1]])
        larva["cast"] = np.array([[-1, -1, 1, -1, -1, np.nan]])
    path = write_struct(tmp_path / "pm" / "trx.mat", larvae)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert "numero_larva_num" in caplog.text
    assert [tr.id for tr in run.tracks] == ["1", "2"]
    assert run.tracks[0].labels == [("run",), (), ("run", "cast"), (), ("run",), ("run",)]


def test_single_element_struct_stored_inline(tmp_path):
    path = tmp_path / "one" / "trx.mat"
    path.parent.mkdir()
    larva = simple_larva(4, 8)
    with h5py.File(path, "w", userblock_size=512) as f:
        for field, value in larva.items():
            f.create_dataset(f"trx/{field}", data=value)
    run = read_run(path)
    assert [tr.id for tr in run.tracks] == ["4"] and run.tracks[0].n_steps == 8


def test_unicode_path_with_spaces(tmp_path):
    path = tmp_path / "my data" / "t15" / "Génotype 1@UAS_Chrimson" / "r LED100" / "20200101_120000" / "trx.mat"
    write_trx(make_run(), path)
    run = read_run(path)
    assert run.metadata["genotype"] == "Génotype 1" and run.metadata["protocol"] == "r LED100"
    assert len(run.tracks) == 3


# ----------------------------------------------------------------------------- bad input


def expect_error(path: Path, *fragments: str) -> TrackDataError:
    with pytest.raises(TrackDataError) as info:
        read_run(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_hdf5_without_trx(tmp_path):
    path = tmp_path / "trx.mat"
    with h5py.File(path, "w") as f:
        f["something"] = np.arange(3.0)
    expect_error(path, "has no 'trx' struct", "not a Janelia trx.mat")


def test_not_hdf5_direct_call(tmp_path):
    path = tmp_path / "trx.mat"
    path.write_text("just text, not a MATLAB file\n")
    with pytest.raises(TrackDataError, match="not a Janelia trx.mat") as info:
        read_trx(path, ReadOptions())
    assert str(path) in str(info.value)


def test_missing_x_spine(tmp_path):
    larva = simple_larva(1, 5)
    del larva["x_spine"]
    expect_error(write_struct(tmp_path / "trx.mat", [larva]), "'x_spine'")


def test_truncated_file(tmp_path, written):
    _, good = written
    path = tmp_path / "cut" / "trx.mat"
    path.parent.mkdir()
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated")


def test_nan_coordinates(tmp_path):
    larvae = [simple_larva(3, 10), simple_larva(7, 10)]
    larvae[1]["x_spine"][4, 6] = np.nan
    expect_error(write_struct(tmp_path / "trx.mat", larvae), "larva 7", "NaN")


def test_nan_coordinates_unicode_path(tmp_path):
    larva = simple_larva(3, 10)
    larva["y_spine"][0, 2] = np.inf
    path = write_struct(tmp_path / "données brutes" / "exp 1" / "trx.mat", [larva])
    expect_error(path, "larva 3", "infinite", "données brutes/exp 1/trx.mat")


def test_duplicated_larva_ids(tmp_path):
    path = write_struct(tmp_path / "trx.mat", [simple_larva(3, 5), simple_larva(3, 6)])
    expect_error(path, "larva id 3 appears twice")


def test_inconsistent_lengths(tmp_path):
    larvae = [simple_larva(1, 8), simple_larva(2, 8)]
    larvae[1]["y_spine"] = larvae[1]["y_spine"][:, :6]
    expect_error(write_struct(tmp_path / "trx.mat", larvae), "larva 2", "'y_spine'", "8 time steps")


def test_non_monotonic_times(tmp_path):
    larvae = [simple_larva(1, 8), simple_larva(9, 8)]
    larvae[1]["t"][0, 5] = larvae[1]["t"][0, 3]
    expect_error(write_struct(tmp_path / "trx.mat", larvae), "larva 9", "decreasing times")
    larvae[1]["t"][0, 5] = larvae[1]["t"][0, 4]
    expect_error(write_struct(tmp_path / "dup" / "trx.mat", larvae), "larva 9", "duplicated times")


def test_one_frame_larva_skipped(tmp_path, caplog):
    larvae = [simple_larva(1, 8), simple_larva(2, 1), simple_larva(3, 8)]
    path = write_struct(tmp_path / "trx.mat", larvae)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert [tr.id for tr in run.tracks] == ["1", "3"]
    assert "larva 2" in caplog.text and "skipped" in caplog.text and str(path) in caplog.text


def test_flag_length_mismatch(tmp_path):
    larva = simple_larva(4, 6)
    larva["run"] = np.ones((1, 5))
    expect_error(write_struct(tmp_path / "trx.mat", [larva]), "larva 4", "'run'")


def test_unusable_outline_is_ignored_with_warning(tmp_path, caplog):
    """A contour that is not a numeric array (here a string) must not cost the larva."""
    larvae = [simple_larva(1, 6), simple_larva(2, 6)]
    for larva in larvae:
        larva["x_contour"] = np.full((20, 6), 1.0)
        larva["y_contour"] = np.full((20, 6), 2.0)
    path = write_struct(tmp_path / "trx.mat", larvae)
    with h5py.File(path, "r+") as f:
        del f["#refs#/x_contour_1"]  # write_struct's name for larva 2's x_contour
        f["#refs#/x_contour_1"] = np.bytes_("not numbers")
        f["trx/x_contour"][0, 1] = f["#refs#/x_contour_1"].ref
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert run.tracks[0].outline.shape == (6, 20, 2)
    assert run.tracks[1].outline is None
    assert "x_contour" in caplog.text and "ignored" in caplog.text


# ------------------------------------------------- impossible values (issue 9 item 4)


def test_impossible_frames_bridged_and_named(tmp_path, caplog):
    import warnings

    from maggotflow.segments import SegmentSpec, build_segments

    clean = write_struct(tmp_path / "clean" / "trx.mat", [simple_larva(1, 40), simple_larva(2, 40)])
    larvae = [simple_larva(1, 40), simple_larva(2, 40)]
    larvae[0]["x_spine"][2, 5] = 1e300  # (11, n) MATLAB layout: point 2 of frame 5
    larvae[1]["x_spine"][:, 30] += 200.0  # 50 body lengths in one frame, and back
    path = write_struct(tmp_path / "bad" / "trx.mat", larvae)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning may reach the user
        with caplog.at_level(logging.WARNING):
            run = read_run(path)
        segments = {tr.id: build_segments(tr, SegmentSpec()) for tr in run.tracks}
    messages = [r.getMessage() for r in caplog.records if "impossible frame" in r.getMessage()]
    assert len(messages) == 2 and all(str(path) in m for m in messages)
    assert "larva 1:" in messages[0] and "frame 5 (t=0.250 s) (value 1e+300)" in messages[0]
    assert "larva 2:" in messages[1] and "frame 30 (t=1.500 s) (jump of 50 body lengths)" in messages[1]
    reference = read_run(clean)
    for tr, ref in zip(run.tracks, reference.tracks):
        assert tr.n_steps == 40
        np.testing.assert_allclose(tr.spine, ref.spine, atol=1e-9)  # straight-line motion: exact bridge
        np.testing.assert_allclose(segments[tr.id], build_segments(ref, SegmentSpec()), atol=1e-5)


def test_larva_with_too_many_impossible_frames_is_left_out(tmp_path, caplog):
    larva = simple_larva(3, 20)
    larva["y_spine"][:, 2:7] = -1e200
    path = write_struct(tmp_path / "bad" / "trx.mat", [simple_larva(1, 20), larva])
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert [tr.id for tr in run.tracks] == ["1"]
    assert any("larva 3: 5 of 20 frames (25%) have impossible coordinates (first at frame 2" in r.getMessage()
               and r.getMessage().endswith("this larva is left out") for r in caplog.records)


# ------------------------------------------------- bounded reading (issue 20)


def crafted_copy(good: Path, path: Path, field: str, make) -> Path:
    """A copy of the good file `good` whose first larva's `field` is the dataset that
    `make(refs_group, name)` creates under `#refs#`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as f:
        ds = make(f["#refs#"], "crafted")
        refs = f["trx"][field][()]
        refs[0, 0] = ds.ref
        f["trx"][field][...] = refs
    return path


def test_chunked_array_declaring_too_much_is_refused_before_reading(tmp_path, written):
    """The reported case: a gzip x_spine declared (11, 1e9) float64, unwritten chunks read as
    fill value, used to end in a 82 GiB allocation."""
    def huge(refs, name):
        ds = refs.create_dataset(name, shape=(11, 10**9), maxshape=(11, None), chunks=(11, 1000),
                                 dtype="f8", compression="gzip")
        ds[:, :1000] = np.random.default_rng(0).normal(size=(11, 1000))
        return ds

    path = crafted_copy(written[1], tmp_path / "huge" / "trx.mat", "x_spine", huge)
    assert path.stat().st_size < 2**20
    expect_error(path, "larva #1 in file order: 'x_spine' declares 11 x 1000000000 values (82.0 GiB in memory)",
                 "over the 4.0 GiB limit per array")


def test_chunked_array_mostly_unwritten_is_refused(tmp_path, written):
    def sparse(refs, name):  # 880 MB declared (under the cap), one 88 kB chunk stored
        ds = refs.create_dataset(name, shape=(11, 10**7), chunks=(11, 1000), dtype="f8", compression="gzip")
        ds[:, :1000] = np.random.default_rng(0).normal(size=(11, 1000))
        return ds

    path = crafted_copy(written[1], tmp_path / "sparse" / "trx.mat", "y_spine", sparse)
    expect_error(path, "larva #1 in file order: 'y_spine' declares 11 x 10000000 values (839.2 MiB) but stores only",
                 "more than 1100:1 compression allows: most of it is missing")


def test_chunked_array_with_nothing_stored_is_refused(tmp_path, written):
    def empty(refs, name):
        return refs.create_dataset(name, shape=(11, 40), chunks=(11, 10), dtype="f8", compression="gzip")

    path = crafted_copy(written[1], tmp_path / "unwritten" / "trx.mat", "x_spine", empty)
    expect_error(path, "larva #1 in file order: 'x_spine' declares 11 x 40 values but stores none of them")


def test_contiguous_array_larger_than_the_file_is_refused(tmp_path, written):
    def late(refs, name):  # contiguous, never written: no storage allocated
        return refs.create_dataset(name, shape=(11, 10**7), dtype="f8")

    path = crafted_copy(written[1], tmp_path / "contiguous" / "trx.mat", "x_spine", late)
    expect_error(path, "larva #1 in file order: 'x_spine' declares 11 x 10000000 values (839.2 MiB) but the whole file is")


def test_reference_array_larger_than_the_file_is_refused(tmp_path, written):
    path = tmp_path / "refs" / "trx.mat"
    path.parent.mkdir()
    shutil.copyfile(written[1], path)
    with h5py.File(path, "r+") as f:
        del f["trx/t"]
        f["trx"].create_dataset("t", shape=(1, 10**7), dtype=h5py.ref_dtype)
    expect_error(path, "trx field 't' declares 1 x 10000000 values (76.3 MiB) but the whole file is")


def test_virtual_dataset_is_refused(tmp_path, written):
    def virtual(refs, name):
        layout = h5py.VirtualLayout(shape=(11, 40), dtype="f8")
        layout[:, :] = h5py.VirtualSource(str(tmp_path / "elsewhere.h5"), "data", shape=(11, 40))
        return refs.create_virtual_dataset(name, layout, fillvalue=0.0)

    path = crafted_copy(written[1], tmp_path / "virtual" / "trx.mat", "x_spine", virtual)
    expect_error(path, "larva #1 in file order: 'x_spine' is a virtual dataset", "must hold its own data")


def test_external_raw_storage_is_refused(tmp_path, written):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(11 * 40 * 8))

    def external(refs, name):
        return refs.create_dataset(name, shape=(11, 40), dtype="f8", external=[(str(raw), 0, 11 * 40 * 8)])

    path = crafted_copy(written[1], tmp_path / "external" / "trx.mat", "x_spine", external)
    expect_error(path, "larva #1 in file order: 'x_spine' keeps its data in another file", "raw.bin")


def read_in_subprocess(path: Path) -> str:
    """str(TrackDataError) of reading `path` in a child process that may not hang (60 s)."""
    code = ("import sys\nfrom maggotflow.formats import read_run\nfrom maggotflow.tracks import TrackDataError\n"
            "try:\n    read_run(sys.argv[1])\nexcept TrackDataError as err:\n    print(err)\nelse:\n    print('read')\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("where", ["/trx/x_spine", "/trx"])
def test_external_link_to_a_fifo_is_refused_without_hanging(tmp_path, written, where):
    fifo = tmp_path / "pipe.mat"
    os.mkfifo(fifo)  # opening it would block until a writer comes: forever
    path = tmp_path / "linked" / "trx.mat"
    path.parent.mkdir()
    shutil.copyfile(written[1], path)
    with h5py.File(path, "r+") as f:
        del f[where]
        f[where] = h5py.ExternalLink(str(fifo), "/data")
    message = read_in_subprocess(path)
    assert message.startswith(f"{path}: '{where}' is a link to another file ('{fifo}')"), message
    assert message.endswith("a trx.mat must hold its own data") and "\n" not in message


def test_soft_link_is_refused(tmp_path, written):
    path = tmp_path / "soft" / "trx.mat"
    path.parent.mkdir()
    shutil.copyfile(written[1], path)
    with h5py.File(path, "r+") as f:
        del f["trx/y_spine"]
        f["trx/y_spine"] = h5py.SoftLink("/trx/x_spine")
    expect_error(path, "'/trx/y_spine' is a soft link (to '/trx/x_spine'); links are refused (MATLAB writes none)")


def test_good_file_reads_with_the_checks(tmp_path):
    """Real compressed arrays (MATLAB compresses with deflate) pass: NaN-padded contours
    compress far, yet below 1100:1."""
    larva = simple_larva(1, 400)
    larva["x_contour"] = np.full((500, 400), np.nan)
    larva["y_contour"] = np.full((500, 400), np.nan)
    larva["x_contour"][:20] = 1.0
    larva["y_contour"][:20] = 2.0
    other = {**simple_larva(2, 30), "x_contour": None, "y_contour": None}  # MATLAB empty
    path = write_struct(tmp_path / "trx.mat", [larva, other])
    with h5py.File(path, "r+") as f:
        for name in ("x_contour_0", "y_contour_0"):
            data = f["#refs#"][name][()]
            del f["#refs#"][name]
            f["#refs#"].create_dataset(name, data=data, chunks=True, compression="gzip", compression_opts=9)
            f["trx"][name.split("_0")[0]][0, 0] = f["#refs#"][name].ref
    run = read_run(path)
    assert [tr.id for tr in run.tracks] == ["1", "2"] and run.tracks[0].outline.shape == (400, 500, 2)


def test_a_date_time_folder_must_be_a_whole_date_time():
    """As for .spine and FIMTrack names: a folder '20200101_000000\\n' is not a date_time."""
    from maggotflow.formats.trx import trx_metadata_from_path

    meta = trx_metadata_from_path(Path("/data/t15/FCF@UAS/p/20200101_000000\n/trx.mat"))
    assert "date_time" not in meta and "genotype" not in meta
    meta = trx_metadata_from_path(Path("/data/t15/FCF@UAS/p/20200101_000000/trx.mat"))
    assert meta["date_time"] == "20200101_000000" and meta["genotype"] == "FCF"
