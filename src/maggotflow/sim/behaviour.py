"""Behaviours of the simulated larvae: their names and the semi-Markov bout sequence.

A semi-Markov chain over `BEHAVIOURS_7` with behaviour-specific log-normal bout durations and
a fixed jump matrix (see `_JUMP` and `_DURATION`): runs take about 59 % of the time, casts
about 19 %, stops and small motions about 12 % together, back-ups, hunches and rolls are
rarer, rolls the rarest (about 2 %). How each behaviour moves the body is in
`maggotflow.sim.body`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

BEHAVIOURS_7 = (
    "run_large",
    "cast_large",
    "back_large",
    "hunch_large",
    "roll_large",
    "stop_large",
    "small_motion",
)
BEHAVIOURS_6 = ("run", "cast", "back", "hunch", "roll", "stop_large")
# 7-behaviour name -> 6-behaviour name (small motions count as stops in the 6-behaviour task).
TO_6 = dict(zip(BEHAVIOURS_7, BEHAVIOURS_6 + ("stop_large",)))

RUN, CAST, BACK, HUNCH, ROLL, STOP, SMALL = range(7)


# Embedded jump chain of the semi-Markov behaviour process (rows: from, columns: to;
# order of BEHAVIOURS_7; no self-jumps). Tuned with the durations below so that, in the long
# run, time fractions are: run 59 %, cast 19 %, stop 7 %, small motion 5 %, back 4.7 %,
# hunch 2.8 %, roll 1.9 %.
_JUMP = np.array(
    [
        # run   cast  back  hunch roll  stop  small
        [0.00, 0.47, 0.10, 0.19, 0.04, 0.10, 0.10],  # run
        [0.72, 0.00, 0.07, 0.06, 0.03, 0.06, 0.06],  # cast
        [0.35, 0.40, 0.00, 0.07, 0.02, 0.08, 0.08],  # back
        [0.35, 0.25, 0.20, 0.00, 0.02, 0.09, 0.09],  # hunch
        [0.55, 0.25, 0.00, 0.00, 0.00, 0.10, 0.10],  # roll
        [0.55, 0.20, 0.05, 0.05, 0.02, 0.00, 0.13],  # stop
        [0.55, 0.20, 0.05, 0.05, 0.02, 0.13, 0.00],  # small motion
    ]
)
# Bout durations: log-normal (median s, sigma of log), clipped to [min, max] s.
_DURATION = np.array(
    [
        [3.5, 0.60, 1.0, 30.0],  # run: several seconds
        [1.7, 0.35, 0.6, 5.0],  # cast: ~1-3 s
        [1.4, 0.25, 0.7, 3.0],  # back: ~1-2 s
        [0.7, 0.20, 0.45, 1.2],  # hunch: ~0.5-1 s
        [1.6, 0.30, 0.8, 4.0],  # roll: ~1-3 s
        [2.0, 0.50, 0.5, 10.0],  # stop
        [1.5, 0.40, 0.5, 6.0],  # small motion
    ]
)


def _durations(duration_scale: tuple[float, ...] | None) -> np.ndarray:
    """`_DURATION` with each behaviour's median and clip range multiplied by its scale."""
    if duration_scale is None:
        return _DURATION
    scale = np.asarray(duration_scale, dtype=np.float64)
    if scale.shape != (7,) or not np.all(scale > 0):
        raise ValueError(f"duration_scale must be 7 numbers > 0 (BEHAVIOURS_7 order), got {duration_scale}")
    durations = _DURATION.copy()
    durations[:, [0, 2, 3]] *= scale[:, None]
    return durations


@functools.lru_cache(maxsize=32)
def _stationary_time_fractions(duration_scale: tuple[float, ...] | None = None) -> np.ndarray:
    """Long-run fraction of time spent in each behaviour (for the first bout of a track),
    with bout durations scaled by `duration_scale` (see `behaviour_bouts`). Cached (read-only)."""
    vals, vecs = np.linalg.eig(_JUMP.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi = pi / pi.sum()
    durations = _durations(duration_scale)
    median, sigma = durations[:, 0], durations[:, 1]
    mean_duration = median * np.exp(sigma**2 / 2)
    frac = pi * mean_duration
    frac = frac / frac.sum()
    frac.setflags(write=False)  # shared by every caller (cached)
    return frac


def _bout_duration(rng: np.random.Generator, behaviour: int, durations: np.ndarray) -> float:
    median, sigma, lo, hi = durations[behaviour]
    return float(np.clip(median * np.exp(sigma * rng.standard_normal()), lo, hi))


def behaviour_bouts(
    rng: np.random.Generator,
    t_start: float,
    t_end: float,
    *,
    duration_scale: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Semi-Markov behaviour sequence covering [t_start, t_end] (s).

    duration_scale: multipliers of each behaviour's median bout duration and of its clip
        range, in BEHAVIOURS_7 order (default: none, i.e. all 1).

    Returns (behaviours (B,) int indices into BEHAVIOURS_7, boundaries (B+1,) s), with
    boundaries[0] <= t_start and boundaries[-1] >= t_end. The first bout is drawn from the
    long-run time fractions and started part-way, so a track can start in any behaviour.
    """
    key = None if duration_scale is None else tuple(float(x) for x in duration_scale)
    durations = _durations(key)
    state = int(rng.choice(7, p=_stationary_time_fractions(key)))
    first = _bout_duration(rng, state, durations)
    t = t_start - first * rng.uniform(0.0, 1.0)
    behaviours, bounds = [], [t]
    while True:
        duration = first if not behaviours else _bout_duration(rng, state, durations)
        behaviours.append(state)
        t += duration
        bounds.append(t)
        if t >= t_end:
            break
        state = int(rng.choice(7, p=_JUMP[state]))
    return np.asarray(behaviours, dtype=np.int64), np.asarray(bounds)
