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
`build_segments_torch` builds the same segments with torch, batched over many larvae, on any
device (prediction builds them on the GPU, next to the model, from the raw spines); it
agrees with `build_segments` to float32 rounding (both compute in float64).
On one CPU core (`python -m benchmarks io`) torch builds ~1.15x as many segments/s as numpy
in prediction's chunks of 4,096 centres (~165k vs ~145k/s), which prediction therefore uses
on CPU too, but is ~4x slower on whole-file batches of 100k+ centres, whose float64
intermediates leave the cache. `segment_builder` picks for such whole-file work (dataset
building, pretraining): torch on CUDA, numpy on CPU.
Output tensors are `(N, 2, P, W)` float32 = (segment, x/y, body point tail->head, time).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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


# ---------------------------------------------------------------------------- torch
# The same segments built with torch, batched over many larvae, on any device (on a GPU the
# segments are built where the model runs, from the raw spines, which are ~4x smaller than
# the segments to copy). Computed in float64 like the numpy version, then
# cast: both agree to float32 rounding (tests/test_segments.py).
SEGMENT_BUILDERS = ("auto", "numpy", "torch")


def segment_builder(device, choice: str = "auto") -> str:
    """"numpy" or "torch" for `choice` on `device` (a torch.device or its name).

    "auto": torch on CUDA (segments built on the GPU), numpy on CPU, where it is faster
    for whole-file batches (see the module docstring; prediction's small chunks use torch).
    """
    if choice not in SEGMENT_BUILDERS:
        raise ValueError(f"segment builder must be one of {', '.join(SEGMENT_BUILDERS)}, got {choice!r}")
    if choice != "auto":
        return choice
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    return "torch" if kind == "cuda" else "numpy"


def _frame_range(t: np.ndarray, centres: np.ndarray, spec: SegmentSpec, context: int) -> tuple[int, int]:
    """First and last frame (inclusive) that interpolated segments centred on `centres` read."""
    if centres.size == 0:
        return 0, 0
    offsets = window_offsets(spec, context) * spec.frame_interval
    lo_q = np.round(centres.min() + offsets[0], GRID_DECIMALS)
    hi_q = np.round(centres.max() + offsets[-1], GRID_DECIMALS)
    lo_q, hi_q = min(max(lo_q, t[0]), t[-1]), min(max(hi_q, t[0]), t[-1])
    lo = max(int(np.searchsorted(t, lo_q, side="right")) - 1, 0)
    hi = min(int(np.searchsorted(t, hi_q, side="right")), t.size - 1)
    return lo, max(hi, lo)


def _resample_torch(spine, n_points: int):
    """`resample_spine` in torch: (F, k, 2) float64 -> (F, P, 2)."""
    import torch

    f, k, _ = spine.shape
    if k == n_points:
        return spine
    if k == 1:
        return spine.expand(f, n_points, 2).contiguous()
    seg = torch.sqrt((torch.diff(spine, dim=1) ** 2).sum(dim=2))  # (F, k-1)
    cum = torch.cat([torch.zeros((f, 1), dtype=spine.dtype, device=spine.device), torch.cumsum(seg, dim=1)], dim=1)
    total = cum[:, -1:]
    frac = cum / torch.where(total > 0, total, torch.ones_like(total))
    targets = torch.linspace(0.0, 1.0, n_points, dtype=spine.dtype, device=spine.device)
    idx = ((frac[:, None, :] <= targets[None, :, None]).sum(dim=2) - 1).clamp(0, k - 2)  # (F, P)
    f0, f1 = torch.gather(frac, 1, idx), torch.gather(frac, 1, idx + 1)
    step = f1 > f0
    w = torch.where(step, (targets[None, :] - f0) / torch.where(step, f1 - f0, torch.ones_like(f0)),
                    torch.zeros_like(f0))
    gather = idx[..., None].expand(f, n_points, 2)
    p0, p1 = torch.gather(spine, 1, gather), torch.gather(spine, 1, gather + 1)
    out = p0 + w[..., None] * (p1 - p0)
    degenerate = total[:, 0] <= 0
    return torch.where(degenerate[:, None, None], spine[:, :1, :].expand(f, n_points, 2), out)


def build_segments_torch(pieces, spec: SegmentSpec = SegmentSpec(), device="cpu", context: int = 0):
    """Normalised segments of many larvae at once, as a torch tensor on `device`.

    pieces: (track, length, centres) per larva: a `Track` (or anything with `.t` and
    `.spine`), its length in mm (None: `larva_length`) and the centre times (s; None: every
    step). Returns a (sum of N, 2, P, W) float32 tensor, the pieces' segments one after the
    other, equal to `build_segments` of each piece within float32 rounding. Only the frames
    that the windows read are copied to the device and resampled.
    """
    import torch

    device = torch.device(device)
    pieces = list(pieces)
    width = (2 * context + 1) * spec.window
    if not pieces:
        return torch.zeros((0, 2, spec.n_points, width), dtype=torch.float32, device=device)
    frames = _frames_read(pieces, spec, context)
    # Resample every frame read, grouped by the number of spine points of the input.
    ks = [s.shape[1] for s in frames.spines]
    if len(set(ks)) == 1:
        points = _resample_torch(_on_device(np.concatenate(frames.spines), device), spec.n_points)
    else:
        points = torch.cat([_resample_torch(_on_device(s, device), spec.n_points) for s in frames.spines])
    n_each = np.array([c.size for c in frames.centres])
    owner = _on_device(np.repeat(np.arange(len(pieces)), n_each), device, torch.int64)  # (N,) piece of each segment
    if spec.interpolate:
        seg = _interpolate_torch(frames, points, owner, spec, context, device)
    else:
        seg = points[_on_device(np.concatenate(frames.native), device, torch.int64)]
    return _normalise_torch(seg, _on_device(frames.lengths, device)[owner], spec, context)


@dataclass
class _FramesRead:
    """Per piece of `build_segments_torch`: the frames its windows read (times, spines), where
    they start in the concatenation of all pieces' frames (start) and how many (count), the
    track's first and last time (s), its length (mm) and centres (s); `native`: per piece,
    the (N, W) rows into that concatenation (native frames only)."""

    times: list[np.ndarray] = field(default_factory=list)
    spines: list[np.ndarray] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    lasts: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    centres: list[np.ndarray] = field(default_factory=list)
    native: list[np.ndarray] = field(default_factory=list)


def _frames_read(pieces: list, spec: SegmentSpec, context: int) -> _FramesRead:
    """The frames each piece's segments read (`_frame_range`, or the native indices), its
    length (refused when zero) and centres (every step when None)."""
    out = _FramesRead()
    offset = 0
    for track, length, centres in pieces:
        t = track.t
        centres = t if centres is None else np.asarray(centres, dtype=np.float64)
        if length is None:
            length = larva_length(track)
        if not np.isfinite(length) or length <= 0:
            raise TrackDataError(None, f"larva {track.id} has zero length (all spine points coincide)")
        if spec.interpolate:
            lo, hi = _frame_range(t, centres, spec, context)
        else:
            index = native_indices(t, centres, spec, context)
            lo, hi = (int(index.min()), int(index.max())) if index.size else (0, 0)
            out.native.append(index - lo + offset)
        out.times.append(t[lo:hi + 1])
        out.spines.append(track.spine[lo:hi + 1])
        out.starts.append(offset)
        out.counts.append(hi + 1 - lo)
        out.firsts.append(t[0])
        out.lasts.append(t[-1])
        out.lengths.append(length)
        out.centres.append(centres)
        offset += hi + 1 - lo
    return out


def _on_device(a, device, dtype=None):
    """`a` (array or list) as a torch tensor on `device`, float64 unless `dtype` says otherwise."""
    import torch

    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype or torch.float64).to(device, non_blocking=True)


def _interpolate_torch(frames: _FramesRead, points, owner, spec: SegmentSpec, context: int, device):
    """Resampled `points` (F, P, 2) interpolated linearly in time onto each segment's grid
    (centre + window offsets, clamped to its track's first and last time): (N, W, P, 2)."""
    import torch

    n_pieces = len(frames.starts)
    t_all = _on_device(np.concatenate(frames.times), device)
    start, count = _on_device(frames.starts, device, torch.int64), _on_device(frames.counts, device, torch.int64)
    offsets = _on_device(window_offsets(spec, context), device) * spec.frame_interval
    centres = _on_device(np.concatenate(frames.centres), device)
    grid = torch.round(centres[:, None] + offsets[None, :], decimals=GRID_DECIMALS)
    firsts, lasts = _on_device(frames.firsts, device), _on_device(frames.lasts, device)
    q = torch.minimum(torch.maximum(grid, firsts[owner][:, None]), lasts[owner][:, None])
    # One searchsorted over all larvae: each larva's frames are shifted onto its own
    # stretch of one increasing time line (piece p starts at p * span).
    piece_of_frame = torch.repeat_interleave(torch.arange(n_pieces, device=device), count)
    first_frame_t = t_all[start]
    span = float((t_all - first_frame_t[piece_of_frame]).max()) + 1.0
    shift = torch.arange(n_pieces, device=device, dtype=torch.float64) * span - first_frame_t
    line = t_all + shift[piece_of_frame]
    i = torch.searchsorted(line, q + shift[owner][:, None], right=True) - 1
    lo = start[owner][:, None]
    hi = lo + (count[owner][:, None] - 2).clamp_min(0)
    i0 = torch.minimum(torch.maximum(i, lo), hi)
    i1 = torch.minimum(i0 + 1, lo + count[owner][:, None] - 1)
    t0, t1 = t_all[i0], t_all[i1]
    moving = t1 > t0
    w = torch.where(moving, (q - t0) / torch.where(moving, t1 - t0, torch.ones_like(t0)), torch.zeros_like(t0))
    p0, p1 = points[i0], points[i1]  # (N, W, P, 2)
    return p0 + w[..., None, None] * (p1 - p0)


def _normalise_torch(seg, length, spec: SegmentSpec, context: int):
    """The normalisation of `build_segments` in torch: segments (N, W, P, 2) centred on the
    present window's middle point, divided by `length` (N,) mm, rotated so the mean
    tail -> head axis points along +x; returned as (N, 2, P, W) float32."""
    import torch

    present = seg[:, context * spec.window:(context + 1) * spec.window]
    axis = (present[:, :, -1, :] - present[:, :, 0, :]).mean(dim=1)  # (N, 2) tail -> head
    norm = torch.hypot(axis[:, 0], axis[:, 1])
    has_axis = norm > 0
    safe = torch.where(has_axis, norm, torch.ones_like(norm))
    cos = torch.where(has_axis, axis[:, 0] / safe, torch.ones_like(norm))
    sin = torch.where(has_axis, axis[:, 1] / safe, torch.zeros_like(norm))
    centre = present[:, :, spec.n_points // 2, :].mean(dim=1)  # (N, 2)
    rel = (seg - centre[:, None, None, :]) / length[:, None, None, None]
    cos, sin = cos[:, None, None], sin[:, None, None]
    x = rel[..., 0] * cos + rel[..., 1] * sin
    y = -rel[..., 0] * sin + rel[..., 1] * cos
    return torch.stack([x, y], dim=1).transpose(2, 3).to(torch.float32).contiguous()
