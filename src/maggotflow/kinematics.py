"""Kinematics: windowed kinematic features of segments, for non-deep baselines.

`window_features(segments, frame_interval)` turns normalised segments `(N, 2, P, W)` (see
`maggotflow.segments`) into a feature table `(N, F)` float32 whose columns are named by
`FEATURE_NAMES`. Per time step of the window it computes the quantities below, then
summarises each over the window by its mean and standard deviation (`_mean`, `_std`), for
some also by its value over the central 0.5 s (`_centre`: the mean over the steps within
0.25 s of the centre step `W//2`, or over the differences between them) and its min/max.

Translation (middle point = body point P//2; body axis = tail -> head vector at that step):
- speed: middle-point speed (body lengths/s);
- forward: its component along the body axis, signed (> 0 forwards; body lengths/s);
- lateral: the absolute component across the body axis (body lengths/s);
- head_speed / tail_speed: speed of the head (last) / tail (first) point relative to the
  middle point (body lengths/s);
- head_angular_speed: absolute rate of turn of the head segment's direction (rad/s);
- axis_angular_speed: absolute rate of turn of the body axis (rad/s).
Posture (angles signed counter-clockwise, like the turning angles along the spine from tail
to head, so a larva curved as one arc has head and tail angles of the same sign):
- head_angle: angle from the trunk (tail -> neck, point P-2) to the head segment (rad);
  head_angle_abs is its absolute value;
- tail_angle: angle from the tail segment to the rest of the body (point 1 -> head) (rad);
- curvature: sum of the absolute turning angles at the P-2 inner points (rad);
- length: spine length, the sum of the point-to-point distances (body lengths: segments are
  divided by the larva's median length, so ~1); length_rate: its rate of change (1/s).

Everything is computed on the normalised segments, so speeds are in body lengths per second
and angles in radians whatever the larva's size and the file's frame rate (segments are
resampled at `frame_interval`). All features are differences of positions and angles
between vectors, so they do not change when a segment is translated or rotated. Degenerate
segments (coinciding points, still windows) give finite values: an undefined angle is 0 and
an undefined body axis is +x (the segment frame's axis). W and P come from the array shape
(W >= 2, P >= 3). Vectorised over segments (processed in chunks to stay in cache).
"""

from __future__ import annotations

import numpy as np

CENTRE_HALF_WIDTH_S = 0.25  # the `_centre` features average over the central 0.5 s
_CHUNK = 512  # segments per vectorised block: keeps the temporaries in cache

FEATURE_NAMES: tuple[str, ...] = (
    "speed_mean", "speed_std",
    "forward_mean", "forward_std", "forward_centre",
    "lateral_mean", "lateral_std", "lateral_centre",
    "head_speed_mean", "head_speed_std", "head_speed_centre",
    "tail_speed_mean", "tail_speed_std",
    "head_angular_speed_mean", "head_angular_speed_std",
    "axis_angular_speed_mean", "axis_angular_speed_std",
    "head_angle_mean", "head_angle_std",
    "head_angle_abs_mean", "head_angle_abs_max", "head_angle_abs_centre",
    "tail_angle_mean", "tail_angle_std", "tail_angle_abs_mean",
    "curvature_mean", "curvature_std", "curvature_max", "curvature_centre",
    "length_mean", "length_std", "length_min", "length_max", "length_centre",
    "length_rate_mean", "length_rate_std",
)


def _angle(ax, ay, bx, by):
    """Signed angle (rad) from vectors a to b; 0 where either vanishes (atan2(0, 0) = 0)."""
    return np.arctan2(ax * by - ay * bx, ax * bx + ay * by)


def _central_steps(window: int, frame_interval: float) -> tuple[int, int]:
    """First and last step index (inclusive) of the central 0.5 s, with at least one
    difference between them (so W = 2 or a long frame interval still has one)."""
    c = window // 2
    k = int(np.floor(CENTRE_HALF_WIDTH_S / frame_interval + 1e-6))
    lo, hi = max(c - k, 0), min(c + k, window - 1)
    if hi == lo:
        hi = min(lo + 1, window - 1)
        lo = hi - 1
    return lo, hi


def _norm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)  # np.hypot is several times slower for float32


def _summaries(names: tuple[str, ...], values: np.ndarray, centre: np.ndarray) -> dict[str, np.ndarray]:
    """`name_mean`, `name_std`, `name_centre` of quantities `values` (n, K, T) over time.

    Means are matrix products with weight vectors (`centre`: 1/k on the k central entries),
    much faster than numpy's reductions over a short last axis.
    """
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


def _block(seg: np.ndarray, dt: float, lo: int, hi: int) -> np.ndarray:
    """Features (n, F) of one block of segments (n, 2, P, W) float32."""
    x, y = seg[:, 0], seg[:, 1]  # (n, P, W)
    w = x.shape[2]
    mid = x.shape[1] // 2
    dx, dy = np.diff(x, axis=1), np.diff(y, axis=1)  # (n, P-1, W) spine segments, tail -> head

    # Posture per step (n, W).
    length = _norm(dx, dy).sum(axis=1)
    turn = _angle(dx[:, :-1], dy[:, :-1], dx[:, 1:], dy[:, 1:])  # (n, P-2, W)
    curvature = np.abs(turn).sum(axis=1)
    hx, hy = dx[:, -1], dy[:, -1]  # head segment
    head_angle = _angle(x[:, -2] - x[:, 0], y[:, -2] - y[:, 0], hx, hy)
    tail_angle = _angle(dx[:, 0], dy[:, 0], x[:, -1] - x[:, 1], y[:, -1] - y[:, 1])
    head_abs, tail_abs = np.abs(head_angle), np.abs(tail_angle)

    # Motion per difference between consecutive steps (n, W-1).
    ax, ay = x[:, -1] - x[:, 0], y[:, -1] - y[:, 0]  # body axis per step
    ux, uy = ax[:, :-1] + ax[:, 1:], ay[:, :-1] + ay[:, 1:]  # axis over each difference
    norm = _norm(ux, uy)
    ok = norm > 0
    safe = np.where(ok, norm, 1.0)
    ux, uy = np.where(ok, ux / safe, 1.0), np.where(ok, uy / safe, 0.0)
    mx, my = x[:, mid], y[:, mid]
    vx, vy = np.diff(mx, axis=1) / dt, np.diff(my, axis=1) / dt
    speed = _norm(vx, vy)
    forward = vx * ux + vy * uy
    lateral = np.abs(vy * ux - vx * uy)
    head_speed = _norm(np.diff(x[:, -1] - mx, axis=1), np.diff(y[:, -1] - my, axis=1)) / dt
    tail_speed = _norm(np.diff(x[:, 0] - mx, axis=1), np.diff(y[:, 0] - my, axis=1)) / dt
    head_turn = np.abs(_angle(hx[:, :-1], hy[:, :-1], hx[:, 1:], hy[:, 1:])) / dt
    axis_turn = np.abs(_angle(ax[:, :-1], ay[:, :-1], ax[:, 1:], ay[:, 1:])) / dt
    length_rate = np.diff(length, axis=1) / dt

    step_centre = np.zeros(w, np.float32)
    step_centre[lo:hi + 1] = 1.0 / (hi + 1 - lo)  # central steps
    diff_centre = np.zeros(w - 1, np.float32)
    diff_centre[lo:hi] = 1.0 / (hi - lo)  # differences between central steps
    steps = ("head_angle", "head_angle_abs", "tail_angle", "tail_angle_abs", "curvature", "length")
    diffs = ("speed", "forward", "lateral", "head_speed", "tail_speed", "head_angular_speed",
             "axis_angular_speed", "length_rate")
    features = _summaries(steps, np.stack([head_angle, head_abs, tail_angle, tail_abs, curvature, length], axis=1),
                          step_centre)
    features |= _summaries(diffs, np.stack([speed, forward, lateral, head_speed, tail_speed, head_turn, axis_turn,
                                            length_rate], axis=1), diff_centre)
    features |= {"head_angle_abs_max": head_abs.max(axis=1), "curvature_max": curvature.max(axis=1),
                 "length_min": length.min(axis=1), "length_max": length.max(axis=1)}
    return np.stack([features[name] for name in FEATURE_NAMES], axis=1)


def window_features(segments: np.ndarray, frame_interval: float = 0.1) -> np.ndarray:
    """Kinematic features `(N, len(FEATURE_NAMES))` float32 of segments `(N, 2, P, W)`.

    segments: normalised segments (body lengths, segment frame) as `build_segments` makes
        them, W >= 2 time steps `frame_interval` s apart, P >= 3 body points tail -> head.
    frame_interval: time between the window's steps (s).
    See the module docstring for the features and their units.
    """
    seg = np.asarray(segments, dtype=np.float32)
    if seg.ndim != 4 or seg.shape[1] != 2 or seg.shape[2] < 3 or seg.shape[3] < 2:
        raise ValueError(f"segments must be (N, 2, P >= 3, W >= 2), got shape {seg.shape}")
    if not frame_interval > 0:
        raise ValueError(f"frame_interval must be > 0 s, got {frame_interval}")
    lo, hi = _central_steps(seg.shape[3], frame_interval)
    dt = np.float32(frame_interval)
    out = np.empty((seg.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, seg.shape[0], _CHUNK):
        out[start:start + _CHUNK] = _block(seg[start:start + _CHUNK], dt, lo, hi)
    return out
