"""The simulated tracker: frame times, and the frames at which each larva is tracked.

Each file has its own nominal frame rate in `frame_rate_hz` (FIMTrack files: exactly 30 fps,
no timestamps), timestamps jittered by a few % of the interval and rounded to 1 ms, frames
dropped at random plus occasional gaps of several frames, larvae entering and leaving
(tracks of different lengths, sometimes only a few frames). The positional noise on the spine
and on the outline is added in `maggotflow.sim.experiment`. None of these depends on the
behaviour: the label is recoverable from posture dynamics only (no label-dependent noise,
position, orientation or frame rate).
"""

from __future__ import annotations

import numpy as np

from maggotflow.sim.config import SimulationConfig


def frame_times(
    rng: np.random.Generator, duration_s: float, frame_rate_hz: float, jitter: float
) -> np.ndarray:
    """Frame times (s) of one video: nominal grid, jittered by +-`jitter` of the interval,
    rounded to 1 ms like trackers write them; strictly increasing, starting at >= 0."""
    interval = 1.0 / frame_rate_hz
    n = int(np.floor(duration_s * frame_rate_hz)) + 1
    t = np.arange(n) * interval + rng.uniform(-jitter, jitter, n) * interval
    t = np.round(np.maximum(t, 0.0), 3)
    # Rounding to 1 ms only merges frames at hundreds of fps; keep the times strictly
    # increasing whatever the configuration.
    t = np.maximum.accumulate(t)
    bump = np.concatenate([[0.0], np.cumsum(np.diff(t) <= 0) * 0.001])
    return np.round(t + bump, 3)


def visible_frames(rng: np.random.Generator, config: SimulationConfig, n_frames: int, fps: float) -> np.ndarray:
    """Indices of the frames at which one larva is tracked (>= 3 frames, sorted)."""
    if rng.random() < config.short_track_probability:
        length = int(rng.integers(3, 9))
        first = int(rng.integers(0, max(1, n_frames - length)))
        last = min(n_frames - 1, first + length - 1)
    elif rng.random() < config.partial_track_probability:
        mode = int(rng.integers(3))  # 0: entered late, 1: left early, 2: both
        first = int(rng.integers(0, max(1, int(0.6 * n_frames)))) if mode != 1 else 0
        last = int(rng.integers(first + n_frames // 5, n_frames)) if mode != 0 else n_frames - 1
    else:
        first, last = 0, n_frames - 1
    keep = np.zeros(n_frames, dtype=bool)
    keep[first : last + 1] = True
    span = last - first + 1
    if span > 8:
        p_drop = rng.uniform(*config.dropped_frame_probability)
        keep[first : last + 1] &= rng.random(span) >= p_drop
        n_gaps = rng.poisson(config.gaps_per_minute * span / fps / 60.0)
        for _ in range(n_gaps):
            g = int(rng.integers(config.gap_frames[0], config.gap_frames[1] + 1))
            g0 = int(rng.integers(first + 1, max(first + 2, last - g)))
            keep[g0 : g0 + g] = False
        keep[first] = keep[last] = True  # the track's extent is what the tracker saw
    idx = np.flatnonzero(keep)
    if idx.size < 3:
        idx = np.arange(first, min(first + 3, n_frames))
    return idx
