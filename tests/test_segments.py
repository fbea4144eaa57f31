"""Segments: shape, edge handling, interpolation at odd frame rates, normalisation invariances."""

import numpy as np
import pytest

from maggotflow.segments import (
    SegmentSpec,
    build_segments,
    grid_times,
    larva_length,
    resample_spine,
    valid_centres,
)
from maggotflow.tracks import Track


def crawling_larva(fps=17.3, duration=12.0, k=11, seed=0, gap=None):
    """A larva of length ~3 mm crawling along a curved path with a wiggling head."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, duration, 1 / fps) + rng.uniform(0, 0.2 / fps, size=int(np.ceil(duration * fps)))[: int(np.ceil(duration * fps))]
    t = np.round(np.sort(t), 3)
    t = t[np.concatenate([[True], np.diff(t) > 0])]
    if gap is not None:
        t = t[(t < gap[0]) | (t > gap[1])]
    s = np.linspace(0, 3.0, k)  # arc length tail -> head
    heading = 0.3 * np.sin(0.4 * t)
    bend = 0.4 * np.sin(2.0 * t)
    x = 0.8 * t[:, None] + s[None, :] * np.cos(heading[:, None] + bend[:, None] * s[None, :] / 3)
    y = 0.2 * np.sin(0.5 * t)[:, None] + s[None, :] * np.sin(heading[:, None] + bend[:, None] * s[None, :] / 3)
    return Track("7", t, np.stack([x, y], axis=-1))


def transformed(track, angle=0.0, shift=(0.0, 0.0), scale=1.0):
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    spine = scale * track.spine @ rot.T + np.asarray(shift)
    return Track(track.id, track.t, spine)


def test_shape_dtype_and_one_segment_per_step():
    track = crawling_larva()
    seg = build_segments(track)
    assert seg.shape == (track.n_steps, 2, 5, 20)
    assert seg.dtype == np.float32
    assert np.all(np.isfinite(seg))


def test_configurable_window_interval_and_points():
    track = crawling_larva()
    spec = SegmentSpec(window=30, frame_interval=0.05, n_points=7)
    assert build_segments(track, spec).shape == (track.n_steps, 2, 7, 30)
    assert spec.duration == pytest.approx(1.5)


def test_grid_is_centred_and_rounded():
    grid = grid_times(np.array([1.0 / 3.0]), SegmentSpec())
    assert grid.shape == (1, 20)
    assert grid[0, 10] == pytest.approx(round(1 / 3, 4))
    assert np.allclose(np.diff(grid[0]), 0.1)
    np.testing.assert_allclose(grid * 1e4, np.round(grid * 1e4), atol=1e-6)


@pytest.mark.parametrize("angle", [0.7, np.pi, -2.2])
def test_invariant_to_rotation_translation_and_scale(angle):
    track = crawling_larva()
    base = build_segments(track)
    moved = build_segments(transformed(track, angle=angle, shift=(120.0, -45.0), scale=2.7))
    np.testing.assert_allclose(moved, base, atol=2e-5)


def test_normalised_frame_points_forward_and_is_centred():
    seg = build_segments(crawling_larva())
    axis = (seg[:, :, -1, :] - seg[:, :, 0, :]).mean(axis=2)  # (N, 2) tail -> head
    assert np.all(axis[:, 0] > 0)
    np.testing.assert_allclose(axis[:, 1], 0, atol=1e-5)
    np.testing.assert_allclose(seg[:, :, 2, :].mean(axis=2), 0, atol=1e-5)
    # Body spans about one larva length along x.
    assert np.median(axis[:, 0]) == pytest.approx(1.0, rel=0.1)


def test_interpolation_is_exact_for_linear_motion_at_any_frame_rate():
    """A rigid larva moving at constant velocity: segments must not depend on the frame rate."""
    def rigid(fps):
        t = np.round(np.arange(0, 8, 1 / fps), 4)
        s = np.linspace(0, 3, 11)
        x = 0.5 * t[:, None] + s[None, :]
        y = np.zeros_like(x) + 0.1 * s[None, :] ** 2
        return Track("1", t, np.stack([x, y], -1))

    centres = np.array([2.0, 4.0, 6.0])
    a = build_segments(rigid(10.0), centres=centres)
    b = build_segments(rigid(29.97), centres=centres)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_edges_are_clamped_and_short_larvae_still_get_segments():
    track = crawling_larva(duration=0.5)  # shorter than a 2 s window
    seg = build_segments(track)
    assert seg.shape[0] == track.n_steps
    first = build_segments(track, centres=track.t[:1])[0]
    # The first 10 grid points precede the track: all equal to the first frame.
    assert np.allclose(first[:, :, :10], first[:, :, :1])
    one = Track("9", [3.0], crawling_larva().spine[:1])
    assert build_segments(one).shape == (1, 2, 5, 20)


def test_gaps_are_bridged_linearly():
    track = crawling_larva(gap=(4.0, 5.0))
    seg = build_segments(track, centres=np.array([4.5]))
    assert np.all(np.isfinite(seg))


def test_context_adds_past_and_future_with_present_normalisation():
    track = crawling_larva()
    c = track.t[track.n_steps // 2: track.n_steps // 2 + 3]
    plain = build_segments(track, centres=c)
    ctx = build_segments(track, centres=c, context=1)
    assert ctx.shape == (3, 2, 5, 60)
    np.testing.assert_allclose(ctx[..., 20:40], plain, atol=1e-6)
    mask = valid_centres(track, SegmentSpec(), context=1)
    assert not mask[0] and not mask[-1] and mask[track.n_steps // 2]
    inside = track.t[mask]
    assert inside[0] - 3.0 >= track.t[0] - 1e-9 and inside[-1] + 2.9 <= track.t[-1] + 1e-9


def test_resample_spine_even_arc_length_and_order():
    spine = np.array([[[0, 0], [1, 0], [1, 1], [1, 3]]], dtype=float)  # length 4
    out = resample_spine(spine, 5)
    np.testing.assert_allclose(out[0], [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3]])
    track = crawling_larva()
    assert larva_length(track) == pytest.approx(3.0, rel=0.02)


def test_spec_compatibility_ignores_float_rounding_only():
    spec = SegmentSpec(window=20, frame_interval=0.1, n_points=5)
    assert spec.compatible_with(SegmentSpec(frame_interval=0.30000000000000004 / 3))
    assert not spec.compatible_with(SegmentSpec(frame_interval=0.1001))
    assert not spec.compatible_with(SegmentSpec(window=10))
    assert not spec.compatible_with(SegmentSpec(n_points=7))
    assert not spec.compatible_with(SegmentSpec(interpolate=False))
    assert spec.describe() == "20 steps at 0.1 s, 5 body points"
    assert SegmentSpec(window=9, interpolate=False).describe() == "9 native frames, 5 body points"


def test_cli_inspects_an_intermediate(tmp_path, capsys):
    from maggotflow.cli import main
    from maggotflow.isolation import write_isolated
    from maggotflow.tracks import Run

    track = crawling_larva()
    path = tmp_path / "a.h5"
    write_isolated(Run(metadata={}, tracks=[track], source=tmp_path / "a.spine", format="spine", sha1="0" * 40), path)
    assert main(["segments", str(path), "--window", "10", "--n-points", "7"]) == 0
    assert f"larva 7: {track.n_steps} segments of shape (2, 7, 10)" in capsys.readouterr().out
    assert main(["segments", str(path), "--window", "1"]) == 2  # a bad setting
    assert "window must be >= 2 steps" in capsys.readouterr().err


# ---------------------------------------------------------------------------- torch builder
torch = pytest.importorskip("torch")
from maggotflow.segments import build_segments_torch, segment_builder  # noqa: E402
from maggotflow.tracks import TrackDataError  # noqa: E402

TORCH_SPECS = [
    SegmentSpec(),  # the default tagger's 20 x 0.1 s, 5 points
    SegmentSpec(interpolate=False),  # native frames: the 20220418 prototype
    SegmentSpec(window=10, frame_interval=0.25, n_points=7),
    SegmentSpec(n_points=11),  # as many points as the input: no resampling
]


def odd_tracks():
    """Larvae that exercise the edges: gaps, odd and fast frame rates, a larva shorter than a
    window, one and two frames, frames whose spine points all coincide, 3 and 11 points."""
    gap = crawling_larva(fps=30.0, seed=1, gap=(3.0, 4.5))
    short = crawling_larva(fps=9.7, duration=1.0, seed=2)
    one = Track("1", short.t[:1], short.spine[:1])
    two = Track("2", short.t[:2], short.spine[:2])
    coiled = crawling_larva(fps=13.7, duration=5.0, seed=3)
    spine = coiled.spine.copy()
    spine[10:15] = spine[10:15, :1]  # five frames with zero length
    coiled = Track("3", coiled.t, spine)
    three = crawling_larva(fps=22.0, duration=4.0, k=3, seed=4)
    return [crawling_larva(seed=0), gap, short, one, two, coiled, three]


def numpy_reference(pieces, spec, context):
    return np.concatenate([build_segments(track, spec, length=length, centres=centres, context=context)
                           for track, length, centres in pieces])


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.describe())
@pytest.mark.parametrize("context", [0, 1])
def test_torch_segments_equal_numpy_on_every_step_of_odd_larvae(spec, context):
    tracks = odd_tracks()
    pieces = [(track, None, None) for track in tracks]
    expected = numpy_reference(pieces, spec, context)
    got = build_segments_torch(pieces, spec, "cpu", context=context)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert got.shape == expected.shape == (sum(t.n_steps for t in tracks), 2, spec.n_points,
                                           (2 * context + 1) * spec.window)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("spec", TORCH_SPECS[:2], ids=lambda s: s.describe())
def test_torch_segments_of_chunks_and_edge_steps_equal_numpy(spec):
    """Chunks of centres (as prediction builds them): steps at both ends, across the gap,
    off-grid centre times, a given length."""
    gap = crawling_larva(fps=30.0, seed=1, gap=(3.0, 4.5))
    base = crawling_larva(seed=0)
    pieces = [
        (gap, None, gap.t[:7]),  # first steps: windows clamped at the start
        (gap, None, gap.t[80:140]),  # across the gap
        (gap, 2.5, gap.t[-5:]),  # last steps, a given length
        (base, None, np.array([base.t[0] - 0.5, 3.14159, base.t[-1] + 0.3])),  # outside the track
        (base, None, np.zeros(0)),  # nothing asked of this larva
    ]
    expected = numpy_reference(pieces, spec, 0)
    got = build_segments_torch(pieces, spec, "cpu")
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-6)


def test_torch_segments_refuse_a_zero_length_larva_and_accept_nothing():
    track = crawling_larva()
    flat = Track("9", track.t, np.repeat(track.spine[:, :1], 11, axis=1))
    with pytest.raises(TrackDataError, match="larva 9 has zero length"):
        build_segments_torch([(flat, None, None)])
    assert tuple(build_segments_torch([], SegmentSpec(), "cpu", context=1).shape) == (0, 2, 5, 60)


def test_segment_builder_choice():
    assert segment_builder("cpu") == "numpy"  # measured faster on CPU (benchmarks io)
    assert segment_builder(torch.device("cuda:1")) == "torch"
    assert segment_builder("cpu", "torch") == "torch"
    with pytest.raises(ValueError, match="segment builder"):
        segment_builder("cpu", "fast")
