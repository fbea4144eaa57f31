"""Segments: normalised, regularly sampled spine windows centred on time steps.

For a time step at time c of a larva, the tagger sees the larva's posture over a window of
`window` grid steps at `frame_interval` seconds (default 20 x 0.1 s = 2 s), reduced to
`n_points` body points. The window grid is `c + (j - window//2) * frame_interval` for
j = 0..window-1 (so the centre step itself is grid point `window//2`), rounded to 1e-4 s
(float grids of 30 fps data otherwise misalign with the track's times), and the spine is
linearly interpolated onto it from the track's own, possibly irregular, times. Gaps
(dropped frames) are bridged linearly. Grid times beyond the track's ends are clamped to
the first or last frame ("edge clamping"), so steps near the ends, and larvae shorter than
a window, still get a segment.

Normalisation of one segment (the model sees shapes, not positions or sizes):
1. divide by the larva length (median spine length over the track unless given),
2. rotate so that the mean tail -> head vector over the window points along +x,
3. centre on the mean position of the middle body point over the window.

Native frames (`SegmentSpec(interpolate=False)`, the 20220418 prototype): the window is
`window` consecutive frames of the track itself around the step (index-clamped at the
ends), with no interpolation. `frame_interval` is then only nominal: the window's duration
depends on the file's frame rate, so such a tagger is only valid on data recorded at the
frame rate it was trained on (the prototype's known limitation).

Everything is vectorised over all centres of a track: no Python loop per segment.
Output tensors are `(N, 2, P, W)` float32 = (segment, x/y, body point tail->head, time).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from maggotflow.tracks import Track, TrackDataError

GRID_DECIMALS = 4  # grid times rounded to 1e-4 s


@dataclass(frozen=True)
class SegmentSpec:
    """Shape of a segment: `window` steps at `frame_interval` s, `n_points` body points.

    interpolate=False takes `window` native frames instead of resampling the track at
    `frame_interval` (see the module docstring).
    """

    window: int = 20
    frame_interval: float = 0.1
    n_points: int = 5
    interpolate: bool = True

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2 steps, got {self.window}")
        if not self.frame_interval > 0:
            raise ValueError(f"frame_interval must be > 0 s, got {self.frame_interval}")
        if self.n_points < 2:
            raise ValueError(f"n_points must be >= 2, got {self.n_points}")

    @property
    def duration(self) -> float:
        """Window duration in seconds (nominal when interpolate is False)."""
        return self.window * self.frame_interval

    def to_dict(self) -> dict:
        return asdict(self)

    def compatible_with(self, other: "SegmentSpec") -> bool:
        """Same segments: equal window, body points and interpolation, and frame intervals
        equal up to float rounding (a spec read back from JSON may differ in the last bit)."""
        return (self.window == other.window and self.n_points == other.n_points
                and self.interpolate == other.interpolate
                and math.isclose(self.frame_interval, other.frame_interval, rel_tol=1e-9, abs_tol=1e-12))

    def describe(self) -> str:
        """For messages: '20 steps at 0.1 s, 5 body points' (or '20 native frames, ...')."""
        if not self.interpolate:
            return f"{self.window} native frames, {self.n_points} body points"
        return f"{self.window} steps at {self.frame_interval:g} s, {self.n_points} body points"


def resample_spine(spine: np.ndarray, n_points: int) -> np.ndarray:
    """Resample spines (n, k, 2) to `n_points` points evenly spaced in arc length.

    Points keep the input order (tail -> head). A degenerate spine (all points equal, or a
    single point) yields `n_points` copies of its first point.
    """
    spine = np.asarray(spine, dtype=np.float64)
    n, k, _ = spine.shape
    if k == n_points:
        return spine.copy()
    if k == 1:
        return np.repeat(spine, n_points, axis=1)
    seg = np.sqrt((np.diff(spine, axis=1) ** 2).sum(axis=2))  # (n, k-1)
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(seg, axis=1)], axis=1)  # (n, k)
    total = cum[:, -1:]
    safe_total = np.where(total > 0, total, 1.0)
    frac = cum / safe_total  # (n, k) in [0, 1]
    targets = np.linspace(0.0, 1.0, n_points)  # (P,)
    # Index of the spine segment containing each target, per frame (vectorised searchsorted).
    idx = (frac[:, None, :] <= targets[None, :, None]).sum(axis=2) - 1  # (n, P)
    idx = np.clip(idx, 0, k - 2)
    rows = np.arange(n)[:, None]
    f0, f1 = frac[rows, idx], frac[rows, idx + 1]
    w = np.where(f1 > f0, (targets[None, :] - f0) / np.where(f1 > f0, f1 - f0, 1.0), 0.0)
    p0, p1 = spine[rows, idx], spine[rows, idx + 1]
    out = p0 + w[..., None] * (p1 - p0)
    degenerate = (total[:, 0] <= 0)
    if degenerate.any():
        out[degenerate] = spine[degenerate, :1, :]
    return out


def larva_length(track: Track) -> float:
    """Robust larva length in mm: the median spine length over the track."""
    return float(np.median(track.spine_lengths()))


def window_offsets(spec: SegmentSpec, context: int = 0) -> np.ndarray:
    """Step offsets (W,) of a window's points from its centre step: the centre is point
    `window//2` of the present window; `context=c` adds c windows before and after
    (W = (2c+1) * window)."""
    return np.arange(-(context * spec.window), (context + 1) * spec.window) - spec.window // 2


def grid_times(centres: np.ndarray, spec: SegmentSpec, context: int = 0) -> np.ndarray:
    """Sampling times (N, W) for segments centred on `centres` (s), see `window_offsets`."""
    offsets = window_offsets(spec, context)
    grid = np.asarray(centres, dtype=np.float64)[:, None] + offsets[None, :] * spec.frame_interval
    return np.round(grid, GRID_DECIMALS)


def interpolate_spines(t: np.ndarray, spines: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Linear interpolation of spines (n, P, 2) at times `query` (any shape), edge-clamped.

    Returns array of shape query.shape + (P, 2).
    """
    q = np.clip(query, t[0], t[-1])
    if t.size == 1:
        return np.broadcast_to(spines[0], q.shape + spines.shape[1:]).copy()
    i = np.searchsorted(t, q, side="right") - 1
    i = np.clip(i, 0, t.size - 2)
    t0, t1 = t[i], t[i + 1]
    w = ((q - t0) / (t1 - t0))[..., None, None]
    return spines[i] + w * (spines[i + 1] - spines[i])


def build_segments(
    track: Track,
    spec: SegmentSpec = SegmentSpec(),
    length: float | None = None,
    centres: np.ndarray | None = None,
    context: int = 0,
) -> np.ndarray:
    """Normalised segments `(N, 2, P, W)` float32 centred on `centres` (default: every step).

    `length` (mm) overrides the larva length used for scaling. With `context=c`, W covers
    c windows before and after the present one; normalisation uses the present window only
    (so the decoder predicts past and future in the present's frame of reference).
    """
    centres = track.t if centres is None else np.asarray(centres, dtype=np.float64)
    if length is None:
        length = larva_length(track)
    if not np.isfinite(length) or length <= 0:
        raise TrackDataError(None, f"larva {track.id} has zero length (all spine points coincide)")
    points = resample_spine(track.spine, spec.n_points)  # (n, P, 2)
    if spec.interpolate:
        grid = grid_times(centres, spec, context)  # (N, W)
        seg = interpolate_spines(track.t, points, grid)  # (N, W, P, 2)
    else:
        seg = points[native_indices(track.t, centres, spec, context)]  # (N, W, P, 2)
    present = seg[:, context * spec.window:(context + 1) * spec.window]  # (N, window, P, 2)
    axis = (present[:, :, -1, :] - present[:, :, 0, :]).mean(axis=1)  # (N, 2) tail -> head
    norm = np.hypot(axis[:, 0], axis[:, 1])
    # A segment whose mean axis vanishes (e.g. a coiled larva) keeps its orientation.
    cos = np.where(norm > 0, axis[:, 0] / np.where(norm > 0, norm, 1.0), 1.0)
    sin = np.where(norm > 0, axis[:, 1] / np.where(norm > 0, norm, 1.0), 0.0)
    centre = present[:, :, spec.n_points // 2, :].mean(axis=1)  # (N, 2)
    rel = (seg - centre[:, None, None, :]) / length
    # Rotate by -angle: x' = x cos + y sin, y' = -x sin + y cos.
    x = rel[..., 0] * cos[:, None, None] + rel[..., 1] * sin[:, None, None]
    y = -rel[..., 0] * sin[:, None, None] + rel[..., 1] * cos[:, None, None]
    out = np.stack([x, y], axis=1)  # (N, 2, W, P)
    return np.ascontiguousarray(out.transpose(0, 1, 3, 2), dtype=np.float32)


def native_indices(t: np.ndarray, centres: np.ndarray, spec: SegmentSpec, context: int = 0) -> np.ndarray:
    """Frame indices (N, W) of native-frame windows centred on the frames nearest `centres`.

    Frame `window//2` of the present window is the centre frame; indices past the track's
    ends are clamped to the first or last frame.
    """
    centres = np.asarray(centres, dtype=np.float64)
    i = np.clip(np.searchsorted(t, centres), 1, max(t.size - 1, 1))
    nearest = np.where(np.abs(t[i - 1] - centres) <= np.abs(t[np.minimum(i, t.size - 1)] - centres), i - 1, i)
    nearest = np.minimum(nearest, t.size - 1)
    return np.clip(nearest[:, None] + window_offsets(spec, context)[None, :], 0, t.size - 1)


def valid_centres(track: Track, spec: SegmentSpec, context: int = 0) -> np.ndarray:
    """Boolean mask of the steps whose whole (context) window lies inside the track."""
    if not spec.interpolate:
        offsets = window_offsets(spec, context)
        index = np.arange(track.t.size)
        return (index + offsets[0] >= 0) & (index + offsets[-1] <= track.t.size - 1)
    grid = grid_times(track.t[[0]], spec, context)[0] - track.t[0]
    lo, hi = grid[0], grid[-1]
    return (track.t + lo >= track.t[0] - 1e-9) & (track.t + hi <= track.t[-1] + 1e-9)
