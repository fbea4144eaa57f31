"""The quick checks after parsing give the verdicts and figures of the plain numpy formulas.

`maggotflow.plausibility` proves most larvae clean from whole-larva figures on a transposed
copy of the spine (`point_rows`) and hands their `BodyMeasures` on to the orientation
evidence: both must be exactly what the frame-by-frame numpy formulas give, in every layout
a reader or caller can hand over, and near every threshold.
"""

from __future__ import annotations

import itertools

import numpy as np

from maggotflow import plausibility as pl
from maggotflow.tracks import Track


def layouts(spine: np.ndarray):
    """The spine (n, k, 2) as a reader or caller may hand it over: C order, rows of a wider
    table (other columns beside them), Fortran order, points reversed, every other frame."""
    n, k = spine.shape[:2]
    table = np.zeros((n, 3 + 2 * k))
    table[:, 3:] = spine.reshape(n, -1)
    return [spine, table[:, 3:].reshape(n, k, 2), np.asfortranarray(spine), spine[:, ::-1], spine[::2]]


def test_pairwise_sum_is_numpys_row_sum_bit_for_bit():
    rng = np.random.default_rng(3)
    for m in list(range(1, 40)) + [127, 128, 129, 136, 300]:
        x = rng.choice([-0.0, 0.0, 1e-300, -1.5, 3.0, 1e300, np.pi], (200, m)) * rng.uniform(0.5, 2.0, (200, m))
        x[:3] = -0.0  # sums of negative zeros
        expected = x.sum(axis=1)
        got = pl._pairwise_sum(np.ascontiguousarray(x.T))
        assert np.array_equal(got, expected) and np.array_equal(np.signbit(got), np.signbit(expected))


def test_body_measures_are_numpys_figures_in_every_layout():
    rng = np.random.default_rng(4)
    for n, k in itertools.product((1, 2, 3, 7, 100, 2000), (2, 3, 4, 5, 8, 9, 11, 17, 30, 130)):
        spine = rng.normal(100, 40, (n, k, 2)) * rng.uniform(1e-3, 1e3)
        spine[::5, 1] = spine[::5, 0]  # zero-length segments
        half = k // 2
        for view in layouts(spine):  # the module's reference functions, whatever the layout
            measured = pl.body_measures(view)
            assert np.array_equal(measured.centre, pl.point_mean(view))
            assert np.array_equal(measured.rear, pl.point_mean(view[:, :half]))
            assert np.array_equal(measured.front, pl.point_mean(view[:, k - half :]))
            assert measured.length == float(np.median(pl.spine_lengths(view)))
        measured = pl.body_measures(spine)  # and numpy's own, as a reader's spines are laid out
        assert np.array_equal(measured.centre, spine.mean(axis=1))
        assert np.array_equal(measured.rear, spine[:, :half].mean(axis=1))
        assert np.array_equal(measured.front, spine[:, k - half :].mean(axis=1))
        assert measured.length == float(np.median(Track("1", np.arange(n), spine).spine_lengths()))


def larva(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k, 2): a ~4 mm larva wandering about at 30 fps, with tracker noise."""
    centre = np.cumsum(rng.normal(0, 0.05, (n, 2)), axis=0) + rng.uniform(-50, 50, 2)
    heading = np.cumsum(rng.normal(0, 0.05, n))
    s = np.linspace(-2.0, 2.0, k)
    axis = np.stack([np.cos(heading), np.sin(heading)], axis=1)
    return centre[:, None] + s[None, :, None] * axis[:, None] + rng.normal(0, 0.02, (n, k, 2))


def with_trap(rng: np.random.Generator, spine: np.ndarray, trap: int) -> np.ndarray:
    """The spine with something at or near one of the thresholds (or none, trap 0)."""
    spine = spine.copy()
    n, k = spine.shape[:2]
    i, p = int(rng.integers(0, n)), int(rng.integers(0, k))
    body = float(np.median(pl.spine_lengths(spine)))
    centre = spine[i].mean(axis=0)
    if trap == 1:  # a value at the limit, just above it, or far beyond
        spine[i, p, 0] = rng.choice([pl.MAX_ABS_COORDINATE, np.nextafter(pl.MAX_ABS_COORDINATE, np.inf), 1e300])
    elif trap == 2:  # a spine shrunk to about COLLAPSED_FRACTION of the body
        spine[i] = centre + (spine[i] - centre) * pl.COLLAPSED_FRACTION * rng.uniform(0.9, 1.1)
    elif trap == 3:  # a point about MAX_JUMP_BODY_LENGTHS bodies away for one frame
        direction = rng.normal(size=2)
        spine[i, p] = centre + direction / np.hypot(*direction) * body * pl.MAX_JUMP_BODY_LENGTHS * rng.uniform(0.97, 1.03)
    elif trap == 4:  # a tracking gap: the larva is elsewhere from frame i on (the bound cannot prove it)
        spine[i:] += rng.uniform(1.0, 3.0) * body
    elif trap == 5:  # a value that is not a number
        spine[i, p, 1] = rng.choice([np.nan, np.inf, -np.inf])
    elif trap == 6:  # a long spine in one frame (the bound's length term)
        spine[i] = centre + (spine[i] - centre) * rng.uniform(2.0, 4.5)
    return spine


def test_the_whole_larva_verdict_is_the_frame_by_frame_one():
    rng = np.random.default_rng(5)
    taken = 0
    for case in range(600):
        n, k = int(rng.choice([3, 4, 8, 60, 400])), int(rng.choice([2, 3, 5, 11, 21]))
        spine = with_trap(rng, larva(rng, n, k), case % 7)
        outline = None
        if case % 3 == 0:
            outline = spine.mean(axis=1)[:, None] + rng.normal(0, 2, (n, 12, 2))
            outline[rng.random((n, 12)) < 0.3] = np.nan  # padding
            if case % 9 == 0:
                outline[int(rng.integers(0, n)), 0, 0] = rng.choice([1e6, np.inf, -1e300])
        quick = pl._measure_if_plausible(spine, outline)
        found = pl._find_implausible(spine, outline)
        clean = not (found.absurd | found.jump | found.collapsed).any() and found.measured is not None
        if quick is not None:
            taken += 1
            assert clean
            assert all(np.array_equal(a, b) for a, b in zip(quick, found.measured))
        elif outline is None or np.isfinite(np.fmax.reduce(outline, axis=None)):
            assert not clean  # nothing the frame-by-frame check finds clean goes the long way
    assert taken > 100


def test_the_jump_bound_never_hides_a_jump():
    rng = np.random.default_rng(6)
    proven = 0
    for _ in range(400):
        n, k = int(rng.integers(3, 200)), int(rng.choice([2, 5, 11]))
        spine = larva(rng, n, k)
        steps = rng.random(n) < 0.02  # a few big steps of the centre, up to ~2 bodies
        spine += np.cumsum(steps[:, None] * rng.normal(0, 2.5, (n, 2)), axis=0)[:, None]
        rows = pl.point_rows(spine)
        length = pl._row_lengths(pl.point_rows(spine))
        body = float(np.median(length))
        centre = pl._row_means(rows)[0]
        found = pl._Findings(*(np.zeros(n, kind) for kind in (bool, float, bool, float, bool, float)))
        pl._mark_jumps(found, rows, slice(None), body)
        if pl._cannot_jump(centre, length, body, float(np.abs(spine).max())):
            proven += 1
            assert not found.jump.any() and found.jump_size.max() < pl.MAX_JUMP_BODY_LENGTHS
    assert 50 < proven < 400  # both ways taken


def test_a_clean_larva_is_returned_as_given_with_its_measures():
    rng = np.random.default_rng(7)
    spine = larva(rng, 300, 11)
    t = np.arange(300) / 30
    measures: list = []
    out, outline = pl.bridge_implausible_frames("f", "1", t, spine, measures=measures)
    assert out is spine and outline is None
    (measured,) = measures
    assert isinstance(measured, pl.BodyMeasures)
    assert all(np.array_equal(a, b) for a, b in zip(measured, pl.body_measures(spine)))
