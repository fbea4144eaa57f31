"""Kinematics: windowed kinematic features of segments.

This is the one implementation of these features, in torch: the gradient-boosting baseline
(`benchmarks.baselines.BoostingTagger`) calls it on numpy arrays, and taggers with kinematic
features (`maggotflow.model`) compute it inside their forward pass, on the CPU or CUDA,
beside the encoder's latent vector, through the layer `KinematicFeatures`.

`window_features(segments, frame_interval)` turns normalised segments `(N, 2, P, W)` (see
`maggotflow.segments`) into a feature table `(N, F)` float32 whose columns are named by
`FEATURE_NAMES`: a numpy array for a numpy array, a tensor on the segments' device for a
tensor (always float32, computed with autocast off; not differentiable). Per time step of
the window it computes the quantities below, then summarises each over the window by its
mean and standard deviation (`_mean`, `_std`), for some also by its value over the central
0.5 s (`_centre`: the mean over the steps within 0.25 s of the centre step `W//2`, or over
the differences between them) and its min/max.

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
(W >= 2, P >= 3). Vectorised over segments, processed in blocks: small ones on the CPU to
stay in cache (about as fast as the former numpy implementation on one core), large ones on
an accelerator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CENTRE_HALF_WIDTH_S = 0.25  # the `_centre` features average over the central 0.5 s
_CPU_CHUNK = 2048  # segments per block on the CPU: keeps the temporaries in cache
_DEVICE_CHUNK = 1 << 16  # segments per block on an accelerator: large kernels, bounded memory

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
_STEPS = ("head_angle", "head_angle_abs", "tail_angle", "tail_angle_abs", "curvature", "length")
_DIFFS = ("speed", "forward", "lateral", "head_speed", "tail_speed", "head_angular_speed",
          "axis_angular_speed", "length_rate")


def _angle(ax, ay, bx, by):
    """Signed angle (rad) from vectors a to b; 0 where either vanishes (atan2(0, 0) = 0)."""
    return torch.atan2(ax * by - ay * bx, ax * bx + ay * by)


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


def _norm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def _summaries(names: tuple[str, ...], values: torch.Tensor, lo: int, hi: int) -> dict[str, torch.Tensor]:
    """`name_mean`, `name_std`, `name_centre` of quantities `values` (n, K, T) over time,
    the centre being the mean over entries lo..hi-1.

    Means are matrix products with weight vectors (1/T everywhere; 1/(hi-lo) on the central
    entries), several times faster than reductions over a short last axis (std_mean
    especially) on the CPU.
    """
    n, k, t = values.shape
    flat = values.reshape(n * k, t)
    weights = torch.zeros((t, 2), dtype=values.dtype, device=values.device)  # (T, 2): mean, centre
    weights[:, 0] = 1.0 / t
    weights[lo:hi, 1] = 1.0 / (hi - lo)
    mean, central = (flat @ weights).reshape(n, k, 2).unbind(dim=2)  # (n, K) each
    dev = flat - mean.reshape(n * k, 1)
    std = ((dev * dev) @ weights[:, 0]).sqrt().reshape(n, k)
    out = {}
    for i, name in enumerate(names):
        out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_centre"] = mean[:, i], std[:, i], central[:, i]
    return out


def _block(seg: torch.Tensor, dt: float, lo: int, hi: int) -> torch.Tensor:
    """Features (n, F) of one block of segments (n, 2, P, W) float32."""
    x, y = seg[:, 0], seg[:, 1]  # (n, P, W)
    mid = x.shape[1] // 2
    dx, dy = x.diff(dim=1), y.diff(dim=1)  # (n, P-1, W) spine segments, tail -> head

    # Posture per step (n, W).
    length = _norm(dx, dy).sum(dim=1)
    turn = _angle(dx[:, :-1], dy[:, :-1], dx[:, 1:], dy[:, 1:])  # (n, P-2, W)
    curvature = turn.abs().sum(dim=1)
    hx, hy = dx[:, -1], dy[:, -1]  # head segment
    head_angle = _angle(x[:, -2] - x[:, 0], y[:, -2] - y[:, 0], hx, hy)
    tail_angle = _angle(dx[:, 0], dy[:, 0], x[:, -1] - x[:, 1], y[:, -1] - y[:, 1])
    head_abs, tail_abs = head_angle.abs(), tail_angle.abs()

    # Motion per difference between consecutive steps (n, W-1).
    ax, ay = x[:, -1] - x[:, 0], y[:, -1] - y[:, 0]  # body axis per step
    ux, uy = ax[:, :-1] + ax[:, 1:], ay[:, :-1] + ay[:, 1:]  # axis over each difference
    norm = _norm(ux, uy)
    ok = norm > 0
    safe = torch.where(ok, norm, 1.0)
    ux, uy = torch.where(ok, ux / safe, 1.0), torch.where(ok, uy / safe, 0.0)
    mx, my = x[:, mid], y[:, mid]
    vx, vy = mx.diff(dim=1) / dt, my.diff(dim=1) / dt
    speed = _norm(vx, vy)
    forward = vx * ux + vy * uy
    lateral = (vy * ux - vx * uy).abs()
    head_speed = _norm((x[:, -1] - mx).diff(dim=1), (y[:, -1] - my).diff(dim=1)) / dt
    tail_speed = _norm((x[:, 0] - mx).diff(dim=1), (y[:, 0] - my).diff(dim=1)) / dt
    head_turn = _angle(hx[:, :-1], hy[:, :-1], hx[:, 1:], hy[:, 1:]).abs() / dt
    axis_turn = _angle(ax[:, :-1], ay[:, :-1], ax[:, 1:], ay[:, 1:]).abs() / dt
    length_rate = length.diff(dim=1) / dt

    features = _summaries(_STEPS, torch.stack([head_angle, head_abs, tail_angle, tail_abs, curvature, length], dim=1),
                          lo, hi + 1)
    features |= _summaries(_DIFFS, torch.stack([speed, forward, lateral, head_speed, tail_speed, head_turn, axis_turn,
                                                length_rate], dim=1), lo, hi)
    features |= {"head_angle_abs_max": head_abs.amax(dim=1), "curvature_max": curvature.amax(dim=1),
                 "length_min": length.amin(dim=1), "length_max": length.amax(dim=1)}
    return torch.stack([features[name] for name in FEATURE_NAMES], dim=1)


def window_features(segments: np.ndarray | torch.Tensor, frame_interval: float = 0.1) -> np.ndarray | torch.Tensor:
    """Kinematic features `(N, len(FEATURE_NAMES))` float32 of segments `(N, 2, P, W)`.

    segments: normalised segments (body lengths, segment frame) as `build_segments` makes
        them, W >= 2 time steps `frame_interval` s apart, P >= 3 body points tail -> head;
        a numpy array (features returned as a numpy array) or a torch tensor (features
        returned as a tensor on its device, computed in float32 whatever its dtype and any
        autocast; not differentiable).
    frame_interval: time between the window's steps (s).
    See the module docstring for the features and their units.
    """
    if isinstance(segments, torch.Tensor):
        return _features(segments, frame_interval)
    seg = np.ascontiguousarray(segments, dtype=np.float32)  # torch.from_numpy refuses negative strides
    if not seg.flags.writeable:  # and warns on read-only arrays
        seg = seg.copy()
    return _features(torch.from_numpy(seg), frame_interval).numpy()


def _features(seg: torch.Tensor, frame_interval: float) -> torch.Tensor:
    """Features (N, F) float32 of segments (N, 2, P, W) of any float dtype, on their device."""
    if seg.ndim != 4 or seg.shape[1] != 2 or seg.shape[2] < 3 or seg.shape[3] < 2:
        raise ValueError(f"segments must be (N, 2, P >= 3, W >= 2), got shape {tuple(seg.shape)}")
    if not frame_interval > 0:
        raise ValueError(f"frame_interval must be > 0 s, got {frame_interval}")
    lo, hi = _central_steps(seg.shape[3], frame_interval)
    dt = float(frame_interval)
    chunk = _CPU_CHUNK if seg.device.type == "cpu" else _DEVICE_CHUNK
    # no_grad rather than inference_mode: the features may enter a graph beside the latent.
    with torch.no_grad(), torch.autocast(device_type=seg.device.type, enabled=False):
        seg = seg.to(torch.float32)
        out = seg.new_empty((seg.shape[0], len(FEATURE_NAMES)))
        for start in range(0, seg.shape[0], chunk):
            out[start:start + chunk] = _block(seg[start:start + chunk], dt, lo, hi)
    return out


class KinematicFeatures(nn.Module):
    """`window_features` as a layer: segments (B, 2, P, W) -> features (B, n_features)
    float32 on the segments' device. No parameters, no buffers."""

    def __init__(self, frame_interval: float = 0.1):
        super().__init__()
        if not frame_interval > 0:
            raise ValueError(f"frame_interval must be > 0 s, got {frame_interval}")
        self.frame_interval = frame_interval
        self.n_features = len(FEATURE_NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_features(x, self.frame_interval)  # (B, 2, P, W) -> (B, F)

    def extra_repr(self) -> str:
        return f"frame_interval={self.frame_interval}, n_features={self.n_features}"
