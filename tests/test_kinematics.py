"""Windowed kinematic features: the torch implementation against the numpy one it replaced,
numpy and tensor inputs, the layer, shapes, degenerate input, known motions and postures,
invariances, and the gradient-boosting baseline on simulated tracks."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maggotflow.kinematics import FEATURE_NAMES, KinematicFeatures, window_features
from maggotflow.segments import build_segments
from maggotflow.simulation import SimulationConfig, simulate_run
from maggotflow.tracks import Track

REPO = Path(__file__).resolve().parents[1]
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def straight_larva(velocity=(0.0, 0.0), window=20, points=5, dt=0.1, head_angle=0.0):
    """One segment (1, 2, P, W): a straight larva of length 1 along +x, centred on its middle
    point, translated at `velocity` (body lengths/s), its head segment bent by `head_angle`."""
    s = np.linspace(-0.5, 0.5, points)
    xy = np.stack([s, np.zeros(points)], axis=0)  # (2, P)
    step = s[1] - s[0]
    xy[:, -1] = xy[:, -2] + step * np.array([np.cos(head_angle), np.sin(head_angle)])
    t = (np.arange(window) - window // 2) * dt
    seg = xy[:, :, None] + np.asarray(velocity, dtype=float)[:, None, None] * t[None, None, :]
    return seg[None].astype(np.float32)


def feature(features, name):
    return features[:, COL[name]]


def rotate(segments, angle, shift=(0.0, 0.0)):
    """Rotate segments (N, 2, P, W) by `angle` about the origin, then shift them."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = segments[:, 0], segments[:, 1]
    out = np.stack([c * x - s * y + shift[0], s * x + c * y + shift[1]], axis=1)
    return out.astype(np.float32)


def crawling_segments(fps=17.3, length_mm=3.0, duration=12.0, seed=0, centres=None):
    """Segments of a larva crawling at 0.5 body lengths/s along a curved path, head wiggling
    (centred on every step, or on `centres` in s)."""
    rng = np.random.default_rng(seed)
    t = np.round(np.sort(np.arange(0, duration, 1 / fps) + rng.uniform(0, 0.2 / fps, int(np.ceil(duration * fps)))), 4)
    s = np.linspace(0, length_mm, 11)[None, :]  # arc length tail -> head
    heading = 0.3 * np.sin(0.4 * t)[:, None]
    bend = 0.4 * np.sin(2.0 * t)[:, None]
    travel = 0.5 * length_mm * t[:, None]
    x = travel * np.cos(heading) + s * np.cos(heading + bend * s / length_mm)
    y = travel * np.sin(heading) + s * np.sin(heading + bend * s / length_mm)
    return build_segments(Track("1", t, np.stack([x, y], axis=-1)), centres=centres)


def _reference_features(segments, frame_interval=0.1):
    """Reference: the numpy implementation of `window_features` as it was before the port to
    torch (maggotflow.kinematics at commit 9db3a01), copied here unchanged but for the
    chunking, so that the torch port is compared with it and not with itself."""

    def angle(ax, ay, bx, by):
        return np.arctan2(ax * by - ay * bx, ax * bx + ay * by)

    def norm_(x, y):
        return np.sqrt(x * x + y * y)

    def summaries(names, values, centre):
        n, k, t = values.shape
        flat = values.reshape(n * k, t)
        weights = np.stack([np.full(t, 1.0 / t), centre], axis=1).astype(np.float32)  # (T, 2)
        mean, central = (flat @ weights).T
        dev = flat - mean[:, None]
        std = np.sqrt((dev * dev) @ weights[:, 0])
        out = {}
        for i, name in enumerate(names):
            rows = slice(i, None, k)
            out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_centre"] = mean[rows], std[rows], central[rows]
        return out

    seg = np.asarray(segments, dtype=np.float32)
    w = seg.shape[3]
    c = w // 2
    k = int(np.floor(0.25 / frame_interval + 1e-6))
    lo, hi = max(c - k, 0), min(c + k, w - 1)
    if hi == lo:
        hi = min(lo + 1, w - 1)
        lo = hi - 1
    dt = np.float32(frame_interval)

    x, y = seg[:, 0], seg[:, 1]  # (n, P, W)
    mid = x.shape[1] // 2
    dx, dy = np.diff(x, axis=1), np.diff(y, axis=1)
    length = norm_(dx, dy).sum(axis=1)
    turn = angle(dx[:, :-1], dy[:, :-1], dx[:, 1:], dy[:, 1:])
    curvature = np.abs(turn).sum(axis=1)
    hx, hy = dx[:, -1], dy[:, -1]
    head_angle = angle(x[:, -2] - x[:, 0], y[:, -2] - y[:, 0], hx, hy)
    tail_angle = angle(dx[:, 0], dy[:, 0], x[:, -1] - x[:, 1], y[:, -1] - y[:, 1])
    head_abs, tail_abs = np.abs(head_angle), np.abs(tail_angle)
    ax, ay = x[:, -1] - x[:, 0], y[:, -1] - y[:, 0]
    ux, uy = ax[:, :-1] + ax[:, 1:], ay[:, :-1] + ay[:, 1:]
    norm = norm_(ux, uy)
    ok = norm > 0
    safe = np.where(ok, norm, 1.0)
    ux, uy = np.where(ok, ux / safe, 1.0), np.where(ok, uy / safe, 0.0)
    mx, my = x[:, mid], y[:, mid]
    vx, vy = np.diff(mx, axis=1) / dt, np.diff(my, axis=1) / dt
    speed = norm_(vx, vy)
    forward = vx * ux + vy * uy
    lateral = np.abs(vy * ux - vx * uy)
    head_speed = norm_(np.diff(x[:, -1] - mx, axis=1), np.diff(y[:, -1] - my, axis=1)) / dt
    tail_speed = norm_(np.diff(x[:, 0] - mx, axis=1), np.diff(y[:, 0] - my, axis=1)) / dt
    head_turn = np.abs(angle(hx[:, :-1], hy[:, :-1], hx[:, 1:], hy[:, 1:])) / dt
    axis_turn = np.abs(angle(ax[:, :-1], ay[:, :-1], ax[:, 1:], ay[:, 1:])) / dt
    length_rate = np.diff(length, axis=1) / dt

    step_centre = np.zeros(w, np.float32)
    step_centre[lo:hi + 1] = 1.0 / (hi + 1 - lo)
    diff_centre = np.zeros(w - 1, np.float32)
    diff_centre[lo:hi] = 1.0 / (hi - lo)
    steps = ("head_angle", "head_angle_abs", "tail_angle", "tail_angle_abs", "curvature", "length")
    diffs = ("speed", "forward", "lateral", "head_speed", "tail_speed", "head_angular_speed",
             "axis_angular_speed", "length_rate")
    features = summaries(steps, np.stack([head_angle, head_abs, tail_angle, tail_abs, curvature, length], axis=1),
                         step_centre)
    features |= summaries(diffs, np.stack([speed, forward, lateral, head_speed, tail_speed, head_turn, axis_turn,
                                           length_rate], axis=1), diff_centre)
    features |= {"head_angle_abs_max": head_abs.max(axis=1), "curvature_max": curvature.max(axis=1),
                 "length_min": length.min(axis=1), "length_max": length.max(axis=1)}
    return np.stack([features[name] for name in FEATURE_NAMES], axis=1)


def reference_inputs():
    """(name, segments, frame_interval) on which the port must reproduce `_reference_features`:
    random segments of several shapes, simulated tracks, degenerate segments."""
    rng = np.random.default_rng(7)
    cases = [(f"random {shape} dt={dt}", rng.normal(size=shape).astype(np.float32), dt)
             for shape, dt in [((600, 2, 5, 20), 0.1), ((64, 2, 3, 2), 0.1), ((64, 2, 11, 31), 0.05),
                               ((64, 2, 3, 7), 1.0), ((64, 2, 4, 9), 0.2)]]
    cases.append(("crawling larva", crawling_segments(), 0.1))
    run = simulate_run(np.random.default_rng(0), SimulationConfig(duration_s=20, larvae=(3, 3)), {"id": "x"})
    cases.append(("simulated larvae", np.concatenate([build_segments(track) for track in run.tracks]), 0.1))
    collapsed = np.zeros((3, 2, 5, 20), np.float32)  # all points equal, no motion
    collapsed[1] = 0.3
    collapsed[2, 0], collapsed[2, 1] = 0.2, -0.7
    moving_point = np.zeros((1, 2, 5, 20), np.float32)  # all points together, moving along x
    moving_point[:, 0] = np.linspace(0, 1, 20)
    still = np.concatenate([straight_larva(), straight_larva(head_angle=0.8)])  # constant windows
    cases.append(("degenerate", np.concatenate([collapsed, moving_point, still]), 0.1))
    cases.append(("W=2", np.concatenate([straight_larva(window=2), straight_larva(velocity=(0.5, 0.2), window=2),
                                         np.zeros((1, 2, 5, 2), np.float32)]), 0.1))
    cases.append(("P=3", np.concatenate([straight_larva(points=3, head_angle=0.4),
                                         straight_larva(velocity=(0.3, -0.1), points=3),
                                         np.zeros((1, 2, 3, 20), np.float32)]), 0.1))
    return cases


REFERENCE_CASES = reference_inputs()


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=[name for name, _, _ in REFERENCE_CASES])
def test_numpy_input_matches_the_reference(case):
    _, segments, dt = case
    out = window_features(segments, dt)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference_features(segments, dt), rtol=1e-4, atol=1e-5)


def test_shape_dtype_and_names():
    rng = np.random.default_rng(0)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert 25 <= len(FEATURE_NAMES) <= 40
    for shape in [(7, 2, 5, 20), (3, 2, 3, 2), (1100, 2, 11, 31), (0, 2, 5, 20)]:
        out = window_features(rng.normal(size=shape).astype(np.float32))
        assert out.shape == (shape[0], len(FEATURE_NAMES))
        assert out.dtype == np.float32
        assert np.isfinite(out).all()


def test_rows_are_independent_of_the_batch():
    # Blocks are processed in chunks: a row's features must not depend on its neighbours.
    segments = np.random.default_rng(1).normal(size=(1500, 2, 5, 20)).astype(np.float32)
    whole = window_features(segments)
    np.testing.assert_allclose(whole[1234:1236], window_features(segments[1234:1236]), rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="segments must be"):
        window_features(np.zeros((4, 2, 2, 20), np.float32))  # P < 3
    with pytest.raises(ValueError, match="segments must be"):
        window_features(np.zeros((4, 2, 5, 1), np.float32))  # W < 2
    with pytest.raises(ValueError, match="frame_interval"):
        window_features(np.zeros((4, 2, 5, 20), np.float32), frame_interval=0.0)


def test_degenerate_segments_give_finite_zeros():
    collapsed = np.zeros((2, 2, 5, 20), np.float32)  # all points equal, no motion
    collapsed[1] = 0.3  # same, away from the origin
    moving_point = np.zeros((1, 2, 5, 20), np.float32)
    moving_point[:, 0] = np.linspace(0, 1, 20)  # all points together, moving along x
    still = straight_larva()  # a constant window
    out = window_features(np.concatenate([collapsed, moving_point, still]))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:2], 0.0)
    # A larva collapsed to a point has no axis or angles, but its speed is defined.
    assert feature(out, "speed_mean")[2] == pytest.approx(1 / 19 / 0.1, rel=1e-5)
    assert feature(out, "head_angle_abs_mean")[2] == 0.0
    assert feature(out, "length_mean")[3] == pytest.approx(1.0)
    assert feature(out, "speed_mean")[3] == 0.0
    assert feature(out, "length_std")[3] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("speed", [0.7, -0.4])
def test_straight_larva_forward_speed(speed):
    out = window_features(straight_larva(velocity=(speed, 0.0)))
    for name in ("forward_mean", "forward_centre"):
        assert feature(out, name)[0] == pytest.approx(speed, rel=1e-4)
    assert feature(out, "speed_mean")[0] == pytest.approx(abs(speed), rel=1e-4)
    assert feature(out, "forward_std")[0] == pytest.approx(0.0, abs=1e-4)
    for name in ("lateral_mean", "lateral_centre", "head_speed_mean", "tail_speed_mean",
                 "head_angle_abs_mean", "curvature_mean", "axis_angular_speed_mean", "length_rate_mean"):
        assert feature(out, name)[0] == pytest.approx(0.0, abs=1e-4), name
    assert feature(out, "length_mean")[0] == pytest.approx(1.0, rel=1e-5)
    assert feature(out, "length_centre")[0] == pytest.approx(1.0, rel=1e-5)


def test_accelerating_larva_central_speed():
    # Displacement (t + 1)^2 / 2 along the body: forward velocity t + 1 at each difference's
    # midpoint; the window's centre step is t = 0, its mean midpoint time -0.05 s.
    segment = straight_larva()
    t = (np.arange(20) - 10) * 0.1
    segment[:, 0] += ((t + 1) ** 2 / 2).astype(np.float32)
    out = window_features(segment)
    assert feature(out, "forward_centre")[0] == pytest.approx(1.0, rel=1e-3)
    assert feature(out, "forward_mean")[0] == pytest.approx(0.95, rel=1e-3)
    assert feature(out, "forward_std")[0] == pytest.approx(np.std(t[:-1] + 0.05 + 1), rel=1e-3)


def test_sideways_motion_is_lateral():
    out = window_features(straight_larva(velocity=(0.0, -0.3)))
    assert feature(out, "lateral_mean")[0] == pytest.approx(0.3, rel=1e-4)
    assert feature(out, "lateral_centre")[0] == pytest.approx(0.3, rel=1e-4)
    assert feature(out, "forward_mean")[0] == pytest.approx(0.0, abs=1e-4)


def test_speeds_are_per_second():
    segments = straight_larva(velocity=(0.6, 0.0))  # 0.6 body lengths/s at 0.1 s steps
    slow = window_features(segments, frame_interval=0.2)  # the same positions 0.2 s apart
    assert feature(slow, "forward_mean")[0] == pytest.approx(0.3, rel=1e-4)
    assert feature(slow, "length_mean")[0] == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("angle", [0.5, -1.0])
def test_bent_head_angle(angle):
    out = window_features(straight_larva(head_angle=angle))
    assert feature(out, "head_angle_mean")[0] == pytest.approx(angle, rel=1e-5)
    for name in ("head_angle_abs_mean", "head_angle_abs_max", "head_angle_abs_centre", "curvature_mean"):
        assert feature(out, name)[0] == pytest.approx(abs(angle), rel=1e-5), name
    assert feature(out, "head_angle_std")[0] == pytest.approx(0.0, abs=1e-5)
    # The tail segment continues the straight trunk, but the rest of the body (point 1 ->
    # head) turns towards the bent head, by atan2(sin a, 2 + cos a) for 4 equal segments.
    assert feature(out, "tail_angle_mean")[0] == pytest.approx(np.arctan2(np.sin(angle), 2 + np.cos(angle)), rel=1e-4)


def test_head_sweep_gives_angular_speed():
    # Head angle going linearly from -0.5 to 0.5 rad over the window.
    window, dt = 20, 0.1
    angles = np.linspace(-0.5, 0.5, window)
    frames = np.concatenate([straight_larva(window=1, head_angle=a) for a in angles], axis=3)
    out = window_features(frames, dt)
    assert feature(out, "head_angular_speed_mean")[0] == pytest.approx(1.0 / ((window - 1) * dt), rel=1e-4)
    assert feature(out, "head_angle_mean")[0] == pytest.approx(0.0, abs=1e-5)
    assert feature(out, "head_angle_std")[0] == pytest.approx(np.std(angles), rel=1e-4)
    assert feature(out, "head_angle_abs_max")[0] == pytest.approx(0.5, rel=1e-5)
    # The central 0.5 s: steps W//2 - 2 .. W//2 + 2.
    assert feature(out, "head_angle_abs_centre")[0] == pytest.approx(np.abs(angles[8:13]).mean(), rel=1e-4)
    assert feature(out, "head_speed_mean")[0] > 0


def test_translation_and_rotation_invariance():
    segments = crawling_segments()
    out = window_features(segments)
    assert np.isfinite(out).all()
    for angle, shift in [(0.0, (2.0, -1.0)), (1.3, (0.0, 0.0)), (-2.5, (0.4, 0.7))]:
        moved = window_features(rotate(segments, angle, shift))
        np.testing.assert_allclose(moved, out, rtol=1e-3, atol=2e-4)
    # A mirror image flips the signed angles only.
    mirrored = segments.copy()
    mirrored[:, 1] *= -1
    flipped = window_features(mirrored)
    signed = [COL[n] for n in ("head_angle_mean", "tail_angle_mean")]
    np.testing.assert_allclose(flipped[:, signed], -out[:, signed], rtol=1e-4, atol=1e-5)
    rest = [i for i in range(len(FEATURE_NAMES)) if i not in signed]
    np.testing.assert_allclose(flipped[:, rest], out[:, rest], rtol=1e-4, atol=1e-5)


def test_crawling_larva_features_do_not_depend_on_size_or_frame_rate():
    centres = np.arange(2.0, 10.0, 0.05)  # windows inside the track
    reference = window_features(crawling_segments(centres=centres))
    assert np.median(feature(reference, "forward_mean")) == pytest.approx(0.5, rel=0.1)  # curved path: a bit less
    np.testing.assert_allclose(window_features(crawling_segments(length_mm=6.0, centres=centres)), reference,
                               rtol=1e-3, atol=1e-4)
    # Another frame rate: the same features up to the linear interpolation between frames.
    other = window_features(crawling_segments(fps=30.0, seed=1, centres=centres))
    scale = np.abs(reference).mean(axis=0) + 1e-3
    assert (np.abs(other - reference).mean(axis=0) / scale).max() < 0.03


def test_imports_no_sklearn():
    # torch is the implementation; scikit-learn stays the baseline's own dependency.
    code = "import sys, maggotflow.kinematics; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=[name for name, _, _ in REFERENCE_CASES])
def test_tensor_input_matches_the_reference(case):
    _, segments, dt = case
    out = window_features(torch.from_numpy(segments), dt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    np.testing.assert_allclose(out.numpy(), _reference_features(segments, dt), rtol=1e-4, atol=1e-5)


def test_tensor_dtypes_views_and_autocast():
    segments = np.random.default_rng(3).normal(size=(300, 2, 5, 20)).astype(np.float32)
    reference = _reference_features(segments)
    # Any float dtype in, float32 out, computed in float32 (float16: on the rounded input).
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        x = torch.from_numpy(segments).to(dtype)
        out = window_features(x)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), _reference_features(x.float().numpy()), rtol=1e-4, atol=1e-5)
    # Under autocast the matrix products would run in bfloat16 (errors ~1e-2): autocast is off inside.
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = window_features(torch.from_numpy(segments))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-5)
    # Views (non-contiguous tensors and arrays, negative strides) and inputs that require a gradient.
    swapped = torch.from_numpy(segments.transpose(3, 1, 2, 0).copy()).permute(3, 1, 2, 0)
    np.testing.assert_allclose(window_features(swapped).numpy(), reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(window_features(segments[::-1]), reference[::-1], rtol=1e-4, atol=1e-5)
    read_only = segments.copy()
    read_only.flags.writeable = False
    np.testing.assert_allclose(window_features(read_only), reference, rtol=1e-4, atol=1e-5)
    out = window_features(torch.from_numpy(segments).requires_grad_())
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="segments must be"):
        window_features(torch.zeros(4, 2, 5, 1))


def test_kinematic_features_layer():
    layer = KinematicFeatures(frame_interval=0.05)
    assert layer.n_features == len(FEATURE_NAMES) == 36
    assert list(layer.parameters()) == [] and list(layer.buffers()) == [] and layer.state_dict() == {}
    segments = np.random.default_rng(4).normal(size=(50, 2, 5, 20)).astype(np.float32)
    out = layer(torch.from_numpy(segments))
    assert out.shape == (50, layer.n_features) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _reference_features(segments, 0.05), rtol=1e-4, atol=1e-5)
    # Beside a latent vector in a network: the features are inputs, the gradient flows around them.
    encoder = torch.nn.Linear(2 * 5 * 20, 8)
    x = torch.from_numpy(segments)
    joint = torch.cat([encoder(x.flatten(1)), layer(x)], dim=1)
    joint.sum().backward()
    assert encoder.weight.grad is not None
    assert KinematicFeatures().frame_interval == 0.1
    with pytest.raises(ValueError, match="frame_interval"):
        KinematicFeatures(frame_interval=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_reference_under_float16_autocast():
    layer = KinematicFeatures()
    for name, segments, dt in REFERENCE_CASES:
        layer.frame_interval = dt
        x = torch.from_numpy(segments).cuda()
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            out = layer(x)
        assert out.device == x.device and out.dtype == torch.float32
        np.testing.assert_allclose(out.cpu().numpy(), _reference_features(segments, dt), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    # Blocks larger than one chunk on the device: rows do not depend on their neighbours.
    big = torch.randn(70_000, 2, 5, 20, device="cuda")
    whole = window_features(big)
    rows = slice(65_530, 65_540)  # across the first block's end
    np.testing.assert_allclose(whole[rows].cpu().numpy(), _reference_features(big[rows].cpu().numpy()),
                               rtol=1e-4, atol=1e-5)

def simulated_larvae():
    """Features and class indices of the 6 larvae of one simulated minute, one pair per larva."""
    config = SimulationConfig(duration_s=60, larvae=(6, 6))
    run = simulate_run(np.random.default_rng(0), config, {"id": "x"})
    names = list(config.label_names)
    return names, [(window_features(build_segments(track)), np.array([names.index(step[0]) for step in track.labels]))
                   for track in run.tracks]


def test_boosting_separates_run_and_cast_on_held_out_larvae(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is a package of the repository, not installed
    from benchmarks.baselines import BoostingTagger

    names, larvae = simulated_larvae()
    train, test = larvae[2:], larvae[:2]  # split by larva: no window of a test larva is seen
    features, truth = (np.concatenate(parts) for parts in zip(*train))
    held_out, expected = (np.concatenate(parts) for parts in zip(*test))
    tagger = BoostingTagger().fit(features, truth, seed=0)
    pred = tagger.predict(held_out)
    assert pred.shape == expected.shape and pred.dtype == np.int64

    majority = np.bincount(truth).argmax()
    assert names[majority].startswith("run")
    assert (pred == expected).mean() > np.mean(expected == majority) + 0.1  # ~0.88 vs 0.67
    for behaviour in ("run_large", "cast_large"):
        label = names.index(behaviour)
        hit, true = pred == label, expected == label
        f1 = 2 * np.sum(hit & true) / (hit.sum() + true.sum())
        assert f1 > {"run_large": 0.9, "cast_large": 0.7}[behaviour], (behaviour, f1)  # ~0.95, ~0.85

    # Subsampling and class weights: the same seed gives the same model.
    small = {"class_weight": "balanced", "max_samples": 1000, "max_iter": 30}
    first = BoostingTagger(**small).fit(features, truth, seed=3).predict(held_out)
    np.testing.assert_array_equal(first, BoostingTagger(**small).fit(features, truth, seed=3).predict(held_out))
    assert (first == expected).mean() > np.mean(expected == majority)
    with pytest.raises(ValueError, match="class_weight"):
        BoostingTagger(class_weight="inverse").fit(features, truth)
    with pytest.raises(RuntimeError, match="before fit"):
        BoostingTagger().predict(held_out)
