"""One labelled larva and one labelled experiment, in memory: behaviour bouts, body and
tracker put together (`simulate_larva`, `simulate_run`).

The ground-truth label of a time step is the bout containing it (hard boundary in the middle
of the blend between two bouts).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maggotflow.sim.behaviour import behaviour_bouts
from maggotflow.sim.body import FINE_DT, Larva, body_outline, body_spine, posture_signals
from maggotflow.sim.config import SimulationConfig
from maggotflow.sim.tracker import frame_times, visible_frames
from maggotflow.tracks import Run, Track


def simulate_larva(
    rng: np.random.Generator,
    config: SimulationConfig,
    larva_id: str | int,
    *,
    times: np.ndarray | None = None,
    frame_rate_hz: float | None = None,
    noise_mm: float | None = None,
    outline_points: int | None = None,
    arena_mm: float = 200.0,
) -> Track:
    """One labelled larva.

    rng: the random generator (all draws come from it, in a fixed order).
    config: what to simulate (body length range, tracker effects, label set, ...).
    larva_id: the larva's id (a string holding an integer).
    times: the video's frame times (s), shared by all larvae of a file; by default a fresh
        grid of `config.duration_s` at `frame_rate_hz` (default: drawn from the config).
    noise_mm: SD of the tracker's positional noise (default: drawn from the config).
    outline_points: outline points per frame (default: drawn); 0 means no outline.
    arena_mm: side of the square plate (mm); larvae start in its central 40 %.

    Returns a `Track` (tail -> head spine in mm, times in s) with `labels` (one single-name
    tuple per time step, names from `config.label_names`), tracked at a subset of the frames
    (late entry, early exit, dropped frames and gaps).
    """
    if times is None:
        if frame_rate_hz is None:
            frame_rate_hz = float(rng.uniform(*config.frame_rate_hz))
        times = frame_times(rng, config.duration_s, frame_rate_hz, config.timestamp_jitter)
    times = np.asarray(times, dtype=np.float64)
    if noise_mm is None:
        noise_mm = float(rng.uniform(*config.tracker_noise_mm))
    if outline_points is None:
        outline_points = int(rng.integers(config.outline_points[0], config.outline_points[1] + 1))
    fps = (times.size - 1) / max(times[-1] - times[0], 1e-9) if times.size > 1 else 1.0

    frames = visible_frames(rng, config, times.size, fps)
    t = times[frames]
    larva = Larva.draw(rng, config)
    behaviours, bounds = behaviour_bouts(rng, t[0], t[-1], duration_scale=config.bout_duration_scale)
    # The fine grid starts a little early so that the sampled signals are free of start-up.
    t_fine = np.arange(t[0] - 0.5, t[-1] + 0.5 + FINE_DT, FINE_DT)
    start_xy = rng.uniform(0.3 * arena_mm, 0.7 * arena_mm, 2)
    posture = posture_signals(
        rng, larva, config, behaviours, bounds, t_fine, start_xy, rng.uniform(-np.pi, np.pi)
    ).at(t_fine, t)

    spine = body_spine(posture, config.n_spine_points, larva.wave_depth, config.bend_start, config.bend_exponent)
    outline = None
    if outline_points:
        counts = outline_points - rng.integers(0, config.outline_points_jitter + 1, t.size)
        outline = body_outline(spine, larva.width * posture.width_factor, counts, outline_points)
        outline += rng.normal(0.0, noise_mm, outline.shape)
    spine = spine + rng.normal(0.0, noise_mm, spine.shape)

    step_behaviour = behaviours[np.searchsorted(bounds, t, side="right") - 1]
    names = [config.label_name(b) for b in range(7)]
    labels = [(names[b],) for b in step_behaviour]
    return Track(id=str(larva_id), t=t, spine=spine, outline=outline, labels=labels)


def simulate_run(
    rng: np.random.Generator,
    config: SimulationConfig,
    run_metadata: dict[str, Any],
    *,
    frame_rate_hz: float | None = None,
    exact_times: bool = False,
    outline: bool = True,
    consecutive_ids: bool = False,
) -> Run:
    """One labelled experiment (all larvae filmed in one video).

    run_metadata: the Run's metadata (must hold `id`; usually date_time, tracker, genotype,
        effector, protocol).
    frame_rate_hz: the video's nominal frame rate (default: drawn from `config.frame_rate_hz`).
    exact_times: frame times exactly k / frame_rate (trackers that write no timestamps, like
        FIMTrack); otherwise jittered and rounded to 1 ms.
    outline: simulate outlines.
    consecutive_ids: larva ids 0, 1, 2, ... (FIMTrack numbers its columns); otherwise
        increasing integers with holes, as Choreography numbers larvae.
    """
    if "id" not in run_metadata:
        raise ValueError("run_metadata must hold an 'id'")
    if frame_rate_hz is None:
        frame_rate_hz = float(rng.uniform(*config.frame_rate_hz))
    if exact_times:
        n = int(np.floor(config.duration_s * frame_rate_hz)) + 1
        times = np.arange(n) / frame_rate_hz
    else:
        times = frame_times(rng, config.duration_s, frame_rate_hz, config.timestamp_jitter)
    noise_mm = float(rng.uniform(*config.tracker_noise_mm))
    m = int(rng.integers(config.outline_points[0], config.outline_points[1] + 1)) if outline else 0
    n_larvae = int(rng.integers(config.larvae[0], config.larvae[1] + 1))
    if consecutive_ids:
        ids = np.arange(n_larvae)
    else:
        ids = np.sort(rng.choice(np.arange(1, 4 * n_larvae + 1), n_larvae, replace=False))
    tracks = [
        simulate_larva(rng, config, str(i), times=times, noise_mm=noise_mm, outline_points=m)
        for i in ids
    ]
    return Run(metadata=dict(run_metadata), tracks=tracks)
