"""Head/tail orientation from motion (spine_order auto) and the checks on trx.mat / FIMTrack.

Files are written by the simulator or built here from simple crawling larvae (straight
bodies moving along their axis, some of the time backwards), then read back.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np
import pytest

from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.fimtrack import write_fimtrack
from maggotflow.formats.label import label_file_for_run, read_label_file, write_label_file
from maggotflow.formats.spine import write_spine
from maggotflow.formats.trx import write_trx
from maggotflow.isolation import isolate, read_isolated
from maggotflow import orientation
from maggotflow.orientation import (
    DECISIVE_SWEEP_RATIO,
    MAX_WINDOW_S,
    MOVING_BODY_LENGTHS,
    WINDOW_S,
    MotionEvidence,
    SweepEvidence,
    orientation_evidence,
)
from maggotflow.simulation import SimulationConfig, file_run
from maggotflow.tracks import Run, Track

SMALL = SimulationConfig(duration_s=20, larvae=(3, 4))
NAME = "20200101_000000@g@e@t15@p@1.spine"


def simulated(index: int = 0) -> Run:
    return file_run(index, 5, "spine", SMALL)


def orientation_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def crawling_run(
    fps: float, backward_share: float, seed: int = 0, n_larvae: int = 4, duration_s: float = 40.0,
    speed_mm_s: float = 1.0, k: int = 11, sweep_rad: float = 0.0,
) -> Run:
    """Straight 4 mm larvae crawling along their axis, tail -> head; `backward_share` of the
    time (in bouts of 3 s) they crawl backwards at the SAME speed (harder than real back-ups,
    which are slower). Jittered frame times, dropped frames and a 1 s gap, tracker noise.
    `sweep_rad` > 0: the anterior half sweeps left/right by up to that angle (period ~2 s),
    forwards or backwards alike; 0 keeps the whole body straight."""
    rng = np.random.default_rng(seed)
    tracks = []
    for larva in range(1, n_larvae + 1):
        fine_t = np.arange(0.0, duration_s, 0.01)
        direction = np.ones_like(fine_t)
        n_back = int(round(backward_share * duration_s / 3.0))
        starts = np.sort(rng.choice(np.arange(0.0, duration_s - 4.0, 4.0), n_back, replace=False))
        for s in starts:
            direction[(fine_t >= s) & (fine_t < s + 3.0)] = -1.0
        heading = np.cumsum(rng.normal(0.0, 0.02, fine_t.size))
        velocity = speed_mm_s * direction[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        centre = np.cumsum(velocity * 0.01, axis=0) + rng.uniform(0, 50, 2)
        t = np.arange(0.0, duration_s - 0.1, 1.0 / fps)
        t = t + rng.uniform(-0.03, 0.03, t.size) / fps
        keep = rng.random(t.size) > 0.03
        keep &= ~((t > 10.0) & (t < 11.0))  # a gap
        t = np.round(t[keep], 3)
        c = np.stack([np.interp(t, fine_t, centre[:, i]) for i in range(2)], axis=1)
        h = np.interp(t, fine_t, heading)
        axis = np.stack([np.cos(h), np.sin(h)], axis=1)
        s = np.linspace(-2.0, 2.0, k)  # tail at -2 mm, head at +2 mm
        spine = c[:, None, :] + s[None, :, None] * axis[:, None, :]
        if sweep_rad > 0:  # tangent angle h + sweep * (s / 2 mm)^2 on the anterior half: the head bends most
            sweep = sweep_rad * np.sin(2 * np.pi * t / (1.7 + 0.2 * larva) + larva)  # no rng: same draws
            fine_s = np.linspace(0.0, 2.0, 201)
            angle = h[:, None] + sweep[:, None] * (fine_s[None, :] / 2.0) ** 2
            ds = fine_s[1] - fine_s[0]
            x = np.concatenate([np.zeros((t.size, 1)), np.cumsum(np.cos(angle[:, 1:]) * ds, axis=1)], axis=1)
            y = np.concatenate([np.zeros((t.size, 1)), np.cumsum(np.sin(angle[:, 1:]) * ds, axis=1)], axis=1)
            front = s > 0
            for axis_i, coord in enumerate((x, y)):
                bent = np.stack([np.interp(s[front], fine_s, row) for row in coord])
                spine[:, front, axis_i] = c[:, None, axis_i] + bent
        spine = spine + rng.normal(0, 0.03, (t.size, k, 2))
        tracks.append(Track(str(larva), t, spine))
    return Run(metadata={"id": "20200101_000000", "date_time": "20200101_000000"}, tracks=tracks)


def assert_same_spines(read: Run, truth: Run, atol: float = 2e-3) -> None:
    by_id = {tr.id: tr for tr in truth.tracks}
    assert read.tracks
    for tr in read.tracks:
        np.testing.assert_allclose(tr.spine, by_id[tr.id].spine, atol=atol)


# ------------------------------------------------------------------------------ .spine auto


@pytest.mark.parametrize("order", ["head_first", "tail_first"])
def test_auto_reads_simulated_file_in_either_order(tmp_path, caplog, order):
    truth = simulated()
    path = tmp_path / NAME
    write_spine(truth, path, spine_order=order)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)  # default options: auto
    assert ReadOptions().spine_order == "auto"
    assert_same_spines(run, truth)
    meta = run.metadata
    assert meta["spine_order"] == order and meta["spine_order_decided_by"] == "motion"
    assert meta["spine_order_forward_fraction"] > 0.8 and meta["spine_order_moving_steps"] > 100
    json.dumps(meta)  # stored as JSON in the intermediate and the .label file
    assert not any("head from tail" in m or "backwards" in m for m in orientation_warnings(caplog))


@pytest.mark.parametrize("fps", [10.0, 13.7, 30.0])
def test_auto_decides_with_larvae_backing_up_30_percent_of_the_time(tmp_path, caplog, fps):
    truth = crawling_run(fps, backward_share=0.3, seed=int(fps))
    path = tmp_path / NAME
    write_spine(truth, path, spine_order="tail_first", write_outline=False)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert run.metadata["spine_order"] == "tail_first"
    assert run.metadata["spine_order_decided_by"] == "motion"
    assert 0.6 < run.metadata["spine_order_forward_fraction"] < 0.8  # backing up shows in the figure
    assert_same_spines(run, truth)
    assert not orientation_warnings(caplog)


def test_still_larvae_fall_back_to_head_first_with_warning(tmp_path, caplog):
    truth = simulated()
    rng = np.random.default_rng(1)
    for tr in truth.tracks:  # every frame the first one, plus tracker noise: nothing moves
        tr.spine = tr.spine[:1].repeat(tr.n_steps, axis=0) + rng.normal(0, 0.02, tr.spine.shape)
        tr.outline = None
    path = tmp_path / NAME
    write_spine(truth, path, spine_order="tail_first", write_outline=False)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert run.metadata["spine_order"] == "head_first"
    assert run.metadata["spine_order_decided_by"] == "convention"
    messages = [m for m in orientation_warnings(caplog) if "cannot tell head from tail" in m]
    assert len(messages) == 1 and str(path) in messages[0] and "moving steps" in messages[0]


def test_forced_order_contradicted_by_motion_warns_and_is_kept(tmp_path, caplog):
    truth = simulated(1)
    path = tmp_path / NAME
    write_spine(truth, path, spine_order="tail_first")
    with caplog.at_level(logging.WARNING):
        run = read_run(path, ReadOptions(spine_order="head_first"))
    assert_same_spines(run, Run(metadata={}, tracks=[tr.replace(spine=tr.spine[:, ::-1]) for tr in truth.tracks]))
    meta = run.metadata
    assert meta["spine_order"] == "head_first" and meta["spine_order_decided_by"] == "configured"
    assert meta["spine_order_forward_fraction"] < 0.2
    messages = [m for m in orientation_warnings(caplog) if "spine_order is set to head_first" in m]
    assert len(messages) == 1 and str(path) in messages[0]
    assert f"forward motion {100 * meta['spine_order_forward_fraction']:.0f}%" in messages[0]
    assert "tail_first" in messages[0]


def test_forced_order_agreeing_with_motion_is_silent(tmp_path, caplog):
    path = tmp_path / NAME
    write_spine(simulated(), path, spine_order="tail_first")
    with caplog.at_level(logging.WARNING):
        run = read_run(path, ReadOptions(spine_order="tail_first"))
    assert run.metadata["spine_order_decided_by"] == "configured"
    assert not any("spine_order" in m for m in orientation_warnings(caplog))


def test_read_options_accept_auto_only_among_known_orders():
    assert ReadOptions(spine_order="auto").spine_order == "auto"
    with pytest.raises(ValueError, match="auto, head_first or tail_first"):
        ReadOptions(spine_order="head")


# ------------------------------------------------------ the decision reaches every output


def test_decision_recorded_in_intermediate_and_label_file(tmp_path):
    truth = simulated(2)
    path = tmp_path / NAME
    write_spine(truth, path, spine_order="tail_first")
    out = tmp_path / "iso.h5"
    isolate(path, out)
    with h5py.File(out, "r") as f:
        stored = json.loads(f.attrs["metadata"])
    assert stored["spine_order"] == "tail_first" and stored["spine_order_decided_by"] == "motion"
    assert stored["spine_order_forward_fraction"] > 0.8 and stored["spine_order_moving_steps"] > 100

    run = read_isolated(out)
    assert_same_spines(run, truth)
    labels = {tr.id: [("run",)] * tr.n_steps for tr in run.tracks}
    label_path = tmp_path / "predicted.label"
    write_label_file(label_path, label_file_for_run(run, labels=labels))
    meta = read_label_file(label_path).metadata
    for key in ("spine_order", "spine_order_decided_by", "spine_order_forward_fraction", "spine_order_moving_steps",
                "spine_order_head_sweep_ratio"):
        assert meta[key] == stored[key], key


def test_cli_isolate_accepts_spine_order_auto(tmp_path):
    path = tmp_path / NAME
    write_spine(simulated(), path, spine_order="tail_first")
    out = tmp_path / "o.h5"
    done = subprocess.run(
        [sys.executable, "-m", "maggotflow.cli", "isolate", str(path), str(out), "--spine-order", "auto"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert read_isolated(out).metadata["spine_order"] == "tail_first"


# --------------------------------------------------- files that name the head themselves


def backwards_run() -> Run:
    """Simulated larvae whose named head is really their tail: they move backwards."""
    run = simulated(3)
    return Run(metadata=run.metadata, tracks=[tr.replace(spine=tr.spine[:, ::-1], outline=None) for tr in run.tracks])


def test_trx_head_contradicted_by_motion_warns_and_keeps_file_head(tmp_path, caplog):
    swapped = backwards_run()
    path = tmp_path / "t15" / "g@e" / "p" / "20200101_000000" / "trx.mat"
    write_trx(swapped, path, label_names=[])
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert_same_spines(run, swapped, atol=1e-9)  # not flipped silently
    meta = run.metadata
    assert meta["spine_order_decided_by"] == "file" and meta["spine_order_forward_fraction"] < 0.2
    messages = [m for m in orientation_warnings(caplog) if "move backwards" in m]
    assert len(messages) == 1 and str(path) in messages[0] and "x_head/x_tail" in messages[0]
    assert f"forward motion {100 * meta['spine_order_forward_fraction']:.0f}%" in messages[0]


def test_fimtrack_head_contradicted_by_motion_warns(tmp_path, caplog):
    run = file_run(4, 5, "fimtrack", SMALL)
    swapped = Run(metadata=run.metadata, tracks=[tr.replace(spine=tr.spine[:, ::-1]) for tr in run.tracks])
    path = tmp_path / "swapped.csv"
    write_fimtrack(swapped, path, framerate=30.0, pixelsize_um=100.0)
    with caplog.at_level(logging.WARNING):
        back = read_run(path, ReadOptions(framerate=30.0, pixelsize_um=100.0))
    assert_same_spines(back, swapped)
    messages = [m for m in orientation_warnings(caplog) if "move backwards" in m]
    assert len(messages) == 1 and str(path) in messages[0] and "forward motion" in messages[0]
    assert back.metadata["spine_order_decided_by"] == "file"


def test_correct_trx_and_fimtrack_heads_are_silent(tmp_path, caplog):
    trx_path = tmp_path / "a" / "trx.mat"
    write_trx(simulated(3), trx_path, label_names=[])
    fim = file_run(4, 5, "fimtrack", SMALL)
    fim_path = tmp_path / "fim.csv"
    write_fimtrack(fim, fim_path, framerate=30.0, pixelsize_um=100.0)
    with caplog.at_level(logging.WARNING):
        a = read_run(trx_path)
        b = read_run(fim_path, ReadOptions(framerate=30.0, pixelsize_um=100.0))
    assert not any("move backwards" in m for m in orientation_warnings(caplog))
    assert a.metadata["spine_order_forward_fraction"] > 0.8 and b.metadata["spine_order_forward_fraction"] > 0.8


# ----------------------------------------------------- head sweeps: the second, direction-free cue


@pytest.mark.parametrize("order", ["head_first", "tail_first"])
def test_head_sweeps_alone_pick_the_head_in_either_order(tmp_path, caplog, order):
    truth = simulated()
    file_order = [(tr.t, tr.spine[:, ::-1] if order == "head_first" else tr.spine) for tr in truth.tracks]
    sweeps = orientation_evidence(file_order)[1]  # last point of each line = supposed head
    assert sweeps.supports if order == "tail_first" else sweeps.contradicts
    # The larvae sweep their heads on the spot (centre held still): no crawling evidence at all.
    for tr in truth.tracks:
        tr.spine = tr.spine - tr.spine.mean(axis=1, keepdims=True) + tr.spine[:1].mean(axis=1, keepdims=True)
        tr.outline = None
    path = tmp_path / NAME
    write_spine(truth, path, spine_order=order, write_outline=False)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    meta = run.metadata
    assert meta["spine_order"] == order and meta["spine_order_decided_by"] == "motion"
    assert meta["spine_order_moving_steps"] == 0 and meta["spine_order_head_sweep_ratio"] >= DECISIVE_SWEEP_RATIO
    assert_same_spines(run, truth)
    assert not any("head from tail" in m or "spine_order" in m for m in orientation_warnings(caplog))


@pytest.mark.parametrize("fps", [10.0, 30.0])
@pytest.mark.parametrize("order", ["head_first", "tail_first"])
def test_larvae_backing_up_65_percent_of_the_time_fall_back_with_warning(tmp_path, caplog, fps, order):
    truth = crawling_run(fps, backward_share=0.65, seed=int(fps), sweep_rad=0.5)
    path = tmp_path / NAME
    write_spine(truth, path, spine_order=order, write_outline=False)
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    meta = run.metadata
    # The crawling direction says the wrong end, the head sweeps the right one: no guess.
    assert meta["spine_order"] == "head_first" and meta["spine_order_decided_by"] == "convention"
    forward = meta["spine_order_forward_fraction"]
    assert forward > 0.6 if order == "tail_first" else forward < 0.4
    wrong = "head_first" if order == "tail_first" else "tail_first"
    messages = orientation_warnings(caplog)
    assert len(messages) == 1 and str(path) in messages[0]
    assert f"the motion says {wrong}" in messages[0] and f"the head sweeps say {order}" in messages[0]
    assert "cannot tell head from tail" in messages[0] and "check the file" in messages[0]
    assert "forward motion" in messages[0] and "head/tail lateral motion" in messages[0]


def test_forced_order_against_backing_up_larvae_is_silent_when_head_sweeps_agree(tmp_path, caplog):
    truth = crawling_run(30.0, backward_share=0.65, seed=3, sweep_rad=0.5)
    path = tmp_path / NAME
    write_spine(truth, path, spine_order="tail_first", write_outline=False)
    with caplog.at_level(logging.WARNING):
        run = read_run(path, ReadOptions(spine_order="tail_first"))
    assert run.metadata["spine_order_forward_fraction"] < 0.4  # mostly backwards, as configured
    assert run.metadata["spine_order_head_sweep_ratio"] >= DECISIVE_SWEEP_RATIO
    assert_same_spines(run, truth)
    assert not orientation_warnings(caplog)


def test_evidence_is_quick_and_silent_on_degenerate_spines():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 300.0, 1 / 30)
    tracks = [(t, rng.normal(0, 1, (t.size, 11, 2)).cumsum(axis=0)) for _ in range(30)]
    tracks.append((t[:50], np.zeros((50, 11, 2))))  # zero-length spines
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start = time.perf_counter()
        motion, sweeps = orientation_evidence(tracks)
        elapsed = time.perf_counter() - start
    # Each "spine" is 11 independent random walks: its centre moves ~1 per 0.5 s window while its
    # median length is ~1000, never the 5 % of it that makes a window moving.
    assert motion.moving_steps == 0 and motion.moving_s == 0.0 and np.isnan(motion.forward_fraction)
    # Every window of the 30 jumbles (all but the last 0.5 s of frames), none of the zero-length
    # spines; their points are interchangeable, so neither end sweeps decisively more.
    assert sweeps.windows == 30 * (t.size - 15)
    assert 1 / DECISIVE_SWEEP_RATIO < sweeps.ratio < DECISIVE_SWEEP_RATIO
    assert elapsed < 5.0  # ~0.3 s here; generous for a loaded machine


# ------------------------------------------------- the same figures as the plain numpy formulas


def plain_evidence(tracks) -> tuple[MotionEvidence, SweepEvidence]:
    """orientation_evidence written with the plain numpy formulas, frame by frame (reference)."""
    forward = backward = seconds = sweep_seconds = 0.0
    steps, head_lateral, tail_lateral = 0, [], []
    with np.errstate(all="ignore"):
        for t, spine in tracks:
            n, k = spine.shape[:2]
            if n < 2 or k < 2:
                continue
            centre, body = spine.mean(axis=1), float(np.median(Track("1", t, spine).spine_lengths()))
            axis = spine[:, k - k // 2 :].mean(axis=1) - spine[:, : k // 2].mean(axis=1)
            end = np.searchsorted(t, t + WINDOW_S - 1e-9)
            start = np.flatnonzero(end < n)
            end = end[start]
            keep = t[end] - t[start] <= MAX_WINDOW_S
            start, end = start[keep], end[keep]
            if not body > 0 or start.size == 0:
                continue
            frame_s = np.minimum(np.diff(t, append=t[-1])[start], MAX_WINDOW_S)
            d = centre[end] - centre[start]
            unit = axis / np.hypot(axis[:, 0], axis[:, 1])[:, None]
            a = unit[start] + unit[end]
            along = (d * a / np.hypot(a[:, 0], a[:, 1])[:, None]).sum(axis=1)
            moving = (np.hypot(d[:, 0], d[:, 1]) >= MOVING_BODY_LENGTHS * body) & np.isfinite(along)
            forward += float(along[moving & (along > 0)].sum())
            backward += float(-along[moving & (along < 0)].sum())
            steps, seconds = steps + int(moving.sum()), seconds + float(frame_s[moving].sum())
            if k < 4:
                continue
            q = max(1, int(round(k / 4)))
            mid = spine[:, k - 1 - q] - spine[:, q]
            normal = np.stack([-mid[:, 1], mid[:, 0]], axis=1) / (np.hypot(mid[:, 0], mid[:, 1]) * body)[:, None]
            lateral = [((spine[:, i] - centre) * normal).sum(axis=1) for i in (-1, 0)]
            dh, dt = (np.abs(y[end] - y[start]) for y in lateral)
            ok = np.isfinite(dh) & np.isfinite(dt)
            head_lateral.append(dh[ok])
            tail_lateral.append(dt[ok])
            sweep_seconds += float(frame_s[ok].sum())
    total = forward + backward
    motion = MotionEvidence(forward / total if total > 0 else float("nan"), steps, seconds)
    windows = sum(x.size for x in head_lateral)
    head, tail = (float(np.median(np.concatenate(x))) if windows else float("nan") for x in (head_lateral, tail_lateral))
    return motion, SweepEvidence(head, tail, windows, sweep_seconds)


def test_evidence_is_the_plain_formulas_bit_for_bit_with_or_without_measures():
    from maggotflow.plausibility import bridge_or_leave_out

    runs = [crawling_run(fps, share, seed=i, k=k, sweep_rad=0.5) for i, (fps, share, k) in
            enumerate([(30.0, 0.3, 11), (10.0, 0.65, 5), (15.0, 0.0, 4), (30.0, 0.2, 3), (30.0, 0.1, 2)])]
    runs.append(simulated(1))
    for run in runs:
        tracks = [(tr.t, tr.spine) for tr in run.tracks]
        tracks.append((tracks[0][0][:40], np.zeros((40, tracks[0][1].shape[1], 2))))  # zero length
        expected = repr(plain_evidence(tracks))  # repr: every bit of every float, NaN equal to NaN
        assert repr(orientation_evidence(tracks)) == expected
        flipped = [(t, s[:, ::-1]) for t, s in tracks]
        assert repr(orientation_evidence(flipped)) == repr(plain_evidence(flipped))
        handed = []
        for t, spine in tracks:
            measures: list = []
            bridge_or_leave_out({}, "f", "1", t, spine, measures=measures)  # the zero-length larva: left out
            handed.append((t, spine, measures[0] if measures else None))
        assert sum(m is not None for _, _, m in handed) >= len(run.tracks) - 1
        assert repr(orientation_evidence(handed)) == expected


def test_moving_is_decided_as_hypot_decides_near_the_threshold():
    rng = np.random.default_rng(8)
    for threshold in (0.0, 1e-120, 1e-5, 0.2, 3.0, 1e90, 1e150, np.inf, np.nan):
        angle = rng.uniform(0, 2 * np.pi, 2000)
        radius = np.full(2000, threshold if np.isfinite(threshold) else 1.0)
        radius[::3] = np.nextafter(radius[::3], np.inf)
        radius[1::3] = np.nextafter(radius[1::3], 0)
        radius[::7] *= 1 + rng.normal(0, 1e-9, radius[::7].size)
        d = radius * np.stack([np.cos(angle), np.sin(angle)])
        d[:, :8] = [[threshold, 0.0, -0.0, np.nan, np.inf, -np.inf, 1e-320, 1e200],
                    [0.0, threshold, np.nan, 1.0, np.nan, 2.0, 1e-320, -1e200]]
        d[:, 8:20] = rng.normal(0, 3, (2, 12))
        expected = np.hypot(d[0], d[1]) >= threshold
        with np.errstate(all="ignore"):  # as in orientation_evidence
            assert np.array_equal(orientation._at_least(d, threshold), expected)
