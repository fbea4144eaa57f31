"""A simulated larva's body: gait parameters, posture signals, spine and outline (mm, s).

A larva is a chain of `n_spine_points` points (tail -> head). Its posture at time t is set by
a handful of continuous signals:

- the position of the middle point and the body heading (integrated velocities);
- the body length (a per-larva rest length times a contraction factor);
- a tangent-angle profile along the body: an anterior bend (head angle, casts and twitches)
  plus a constant-curvature bend (the C shape of rolls);
- the spacing of the points along the body: a local compression bump travelling tail -> head
  (forward peristalsis) or head -> tail (backward), or an anterior compression (hunch).

The signals are generated on a fine regular grid (`FINE_DT`, 100 Hz), integrated with
cumulative sums, then interpolated at the file's own frame times, where the spine is built.
Nothing loops over time steps; the loops are per behaviour bout. Each bout's contribution is
cross-faded with its neighbours over a per-larva blend time of 0.1-0.2 s, as real transitions
are smooth. Bout amplitudes vary (weak casts, slow runs) so classes overlap somewhat.

Body, gait and bout-duration constants are `SimulationConfig` fields; the figures here are
their defaults (regime "A").

- run: peristaltic forward crawl, stride 1-1.5 Hz, forward displacement in pulses, body
  length oscillating a few %, heading drifting slowly, small head sway.
- cast: anterior half sweeping left/right (head angle up to ~1.5 rad), little forward motion,
  the body heading partly following the head (casts change direction).
- back: backward crawl, wave head -> tail, slower.
- hunch: body length shrinks 18-30 % in 0.25-0.45 s (tail anchored, head retracts), then
  recovers.
- roll: C-shaped body moving sideways, bend sign flipping as the larva turns over.
- stop_large: still (only the slow postural drift every larva has, and tracker noise).
- small_motion: short twitches of the head and of the body length, no displacement.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.signal import lfilter

from maggotflow.sim.behaviour import BACK, CAST, HUNCH, ROLL, RUN, SMALL
from maggotflow.sim.config import SimulationConfig

FINE_DT = 0.01  # s, grid on which posture signals are generated and integrated

# Clip range of cast amplitudes, relative to their median (`cast_amplitude`): 0.25-1.6 rad at
# the default median of 0.85 rad.
_CAST_CLIP = (0.25 / 0.85, 1.6 / 0.85)


@dataclass
class Larva:
    """Per-larva body and gait parameters (mm, s, Hz, rad)."""

    length: float  # rest body length, mm
    width: float  # body width at the middle, mm
    stride_hz: float  # forward stride frequency
    speed: float  # mean forward crawling speed, mm/s
    back_speed_ratio: float
    back_freq_ratio: float
    length_oscillation: float  # relative amplitude of the length change over a stride
    wave_depth: float  # local segment compression of the peristaltic wave
    head_sway: float  # rad, head angle oscillation during runs
    cast_follow: float  # 1/s: how fast the body heading follows the head during casts
    blend: float  # s, cross-fade time between behaviours
    posture_drift: float  # rad, SD of the slow postural drift every larva has

    @classmethod
    def draw(cls, rng: np.random.Generator, config: SimulationConfig) -> "Larva":
        """One larva's parameters, from the ranges of `config` (always drawn in this order)."""
        length = rng.uniform(*config.body_length_mm)
        stride_hz = rng.uniform(*config.stride_hz)
        # by default stride length 0.15-0.3 body lengths, so speed ~ 0.4-2 mm/s
        speed = stride_hz * length * rng.uniform(*config.stride_length)
        return cls(
            length=length,
            width=float(np.clip(rng.uniform(0.3, 0.5) * length / 3.75, 0.25, 0.6)),
            stride_hz=stride_hz,
            speed=speed,
            back_speed_ratio=rng.uniform(0.3, 0.5),
            back_freq_ratio=rng.uniform(0.65, 0.9),
            length_oscillation=rng.uniform(*config.length_oscillation),
            wave_depth=rng.uniform(*config.wave_depth),
            head_sway=rng.uniform(*config.head_sway),
            cast_follow=rng.uniform(0.3, 0.8),
            blend=rng.uniform(0.1, 0.2),
            posture_drift=rng.uniform(0.03, 0.08),
        )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 for x <= 0, 1 for x >= 1, C1-smooth in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ou(rng: np.random.Generator, n: int, sd: float, tau: float) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck process on the fine grid (SD `sd`, time constant `tau` s)."""
    a = np.exp(-FINE_DT / tau)
    noise = rng.standard_normal(n) * sd * np.sqrt(1.0 - a * a)
    x = lfilter([1.0], [1.0, -a], noise, zi=[a * sd * rng.standard_normal()])[0]
    return x


@dataclass
class Posture:
    """Posture signals at some times (all arrays of the same length)."""

    x: np.ndarray  # middle point, mm
    y: np.ndarray
    heading: np.ndarray  # body heading, rad
    length: np.ndarray  # body length, mm
    head_bend: np.ndarray  # anterior bend (head angle), rad
    c_bend: np.ndarray  # total turning of the constant-curvature bend, rad
    run_wave: np.ndarray  # 0..1 strength of the forward peristaltic wave
    run_phase: np.ndarray  # rad, cumulative stride phase
    back_wave: np.ndarray
    back_phase: np.ndarray
    hunch: np.ndarray  # 0..1 anterior compression
    width_factor: np.ndarray  # body width relative to rest

    def at(self, t_fine: np.ndarray, t: np.ndarray) -> "Posture":
        """The signals linearly interpolated at times `t` (s)."""
        return Posture(**{k: np.interp(t, t_fine, v) for k, v in vars(self).items()})


@dataclass
class _Drive:
    """What the behaviour bouts contribute to the posture on the fine grid, summed over bouts
    (each cross-faded with its neighbours). Integrated into a `Posture` by `_integrate_posture`."""

    run_speed: np.ndarray  # forward crawling speed, mm/s
    run_rate: np.ndarray  # forward stride phase rate, rad/s
    run_wave: np.ndarray  # strength of the forward peristaltic wave (0..1 within a bout)
    back_speed: np.ndarray  # backward crawling speed, mm/s
    back_rate: np.ndarray  # backward stride phase rate, rad/s
    back_wave: np.ndarray  # strength of the backward wave
    cast_bend: np.ndarray  # head sweep of casts, rad
    cast_speed: np.ndarray  # forward creep during casts, mm/s
    hunch_dev: np.ndarray  # relative body-length change of hunches (<= 0)
    hunch_ant: np.ndarray  # anterior compression of hunches (0..1)
    roll_bend: np.ndarray  # total turning of the C shape of rolls, rad
    roll_lateral: np.ndarray  # sideways speed of rolls, mm/s
    small_bend: np.ndarray  # head twitches of small motions, rad
    small_dev: np.ndarray  # relative body-length twitches of small motions

    @classmethod
    def zeros(cls, n: int) -> "_Drive":
        return cls(**{f.name: np.zeros(n) for f in fields(cls)})


@dataclass
class _Bout:
    """The part of the fine grid one bout acts on."""

    grid: slice  # fine-grid steps covered by the bout and its fades
    weight: np.ndarray  # cross-fade weight on those steps: sums to 1 across consecutive bouts
    u: np.ndarray  # time since the bout's start, s
    duration: float  # s


def _bout_span(t_fine: np.ndarray, index: int, last: int, start: float, end: float, blend: float) -> _Bout | None:
    """Where bout `index` (of bouts 0..`last`, from `start` to `end` s) acts on the grid `t_fine`,
    faded in and out over `blend` s around its ends; None when it covers no grid step.
    The first and last bouts also cover the grid beyond the track's ends (no fade there)."""
    n, t0, dt, h = t_fine.size, t_fine[0], FINE_DT, blend
    i0 = 0 if index == 0 else max(0, int(np.floor((start - h - t0) / dt)))
    i1 = n if index == last else min(n, int(np.ceil((end + h - t0) / dt)) + 1)
    if i1 <= i0:
        return None
    tt = t_fine[i0:i1]
    w = np.ones_like(tt)
    if index > 0:
        w *= _smoothstep((tt - start) / h + 0.5)
    if index < last:
        w *= 1.0 - _smoothstep((tt - end) / h + 0.5)
    return _Bout(grid=slice(i0, i1), weight=w, u=tt - start, duration=end - start)


def _run_bout(d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig) -> None:
    """Forward crawl; a per-bout speed factor makes slow and fast runs."""
    sl, w = bout.grid, bout.weight
    factor = float(np.clip(np.exp(0.3 * rng.standard_normal()), 0.4, 1.8))
    d.run_speed[sl] += w * larva.speed * factor
    d.run_rate[sl] += w * 2 * np.pi * larva.stride_hz * factor**0.3
    d.run_wave[sl] += w


def _back_bout(d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig) -> None:
    """Backward crawl: slower, at the larva's backward stride frequency."""
    sl, w = bout.grid, bout.weight
    factor = float(np.clip(np.exp(0.2 * rng.standard_normal()), 0.6, 1.5))
    d.back_speed[sl] += w * larva.speed * larva.back_speed_ratio * factor
    d.back_rate[sl] += w * 2 * np.pi * larva.stride_hz * larva.back_freq_ratio
    d.back_wave[sl] += w


def _cast_bout(d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig) -> None:
    """Head sweeps (amplitude log-normal around `config.cast_amplitude`, so that some casts are
    weak; frequency from `config.cast_frequency`), biased to one side, with a slow forward creep."""
    sl, w, u, duration = bout.grid, bout.weight, bout.u, bout.duration
    cast_amp = config.cast_amplitude
    cast_lo, cast_hi = _CAST_CLIP[0] * cast_amp, _CAST_CLIP[1] * cast_amp
    amp = float(np.clip(cast_amp * np.exp(0.4 * rng.standard_normal()), cast_lo, cast_hi))
    freq = rng.uniform(*config.cast_frequency)
    bias = rng.choice((-1.0, 1.0)) * rng.uniform(0.0, 0.8)
    env = _smoothstep(u / 0.25) * _smoothstep((duration - u) / 0.25)
    sweep = (bias + np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))) / (1 + abs(bias))
    d.cast_bend[sl] += w * amp * env * sweep
    d.cast_speed[sl] += w * larva.speed * rng.uniform(0.0, 0.15)


def _hunch_bout(d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig) -> None:
    """The body shortens by 18-30 % in 0.25-0.45 s (anterior compression), then recovers."""
    sl, w, u, duration = bout.grid, bout.weight, bout.u, bout.duration
    depth = rng.uniform(0.18, 0.3)
    tc = min(rng.uniform(0.25, 0.45), 0.6 * duration)
    profile = np.where(
        u < tc, _smoothstep(u / tc), 1.0 - _smoothstep((u - tc) / max(duration - tc, 1e-3))
    )
    d.hunch_dev[sl] -= w * depth * profile
    d.hunch_ant[sl] += w * profile


def _roll_bout(d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig) -> None:
    """C-shaped body moving sideways, the bend's sign flipping as the larva turns over."""
    sl, w, u, duration = bout.grid, bout.weight, bout.u, bout.duration
    direction = rng.choice((-1.0, 1.0))
    amp = rng.uniform(1.4, 2.6)  # total body turning of the C shape, rad
    period = rng.uniform(1.0, 2.0)  # s between bend-sign flips (x2)
    flips = np.tanh(2.5 * np.cos(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)))
    env = _smoothstep(u / 0.2) * _smoothstep((duration - u) / 0.2)
    d.roll_bend[sl] += w * amp * env * flips
    d.roll_lateral[sl] += w * env * direction * rng.uniform(0.8, 1.6) * larva.length / 3.75


def _small_motion_bout(
    d: _Drive, bout: _Bout, rng: np.random.Generator, larva: Larva, config: SimulationConfig
) -> None:
    """Short Gaussian twitches of the head angle and of the body length, no displacement."""
    sl, w, u, duration = bout.grid, bout.weight, bout.u, bout.duration
    k = 1 + rng.poisson(1.5 * duration)
    centres = rng.uniform(0.05, max(duration - 0.05, 0.1), k)
    widths = rng.uniform(0.08, 0.2, k)
    pulses = np.exp(-0.5 * ((u[:, None] - centres) / widths) ** 2)
    d.small_bend[sl] += w * (pulses @ (rng.normal(0.0, 0.3, k)))
    d.small_dev[sl] += w * (pulses @ (rng.normal(0.0, 0.03, k)))


# What each behaviour adds to the drive. STOP adds nothing: only the slow postural drift and
# tracker noise remain.
_BOUT_DRIVES = {
    RUN: _run_bout,
    BACK: _back_bout,
    CAST: _cast_bout,
    HUNCH: _hunch_bout,
    ROLL: _roll_bout,
    SMALL: _small_motion_bout,
}


def _bout_drive(
    rng: np.random.Generator,
    larva: Larva,
    config: SimulationConfig,
    behaviours: np.ndarray,
    bounds: np.ndarray,
    t_fine: np.ndarray,
) -> _Drive:
    """The bouts' contributions on the grid `t_fine` (s), drawn bout after bout in order."""
    drive = _Drive.zeros(t_fine.size)
    last = len(behaviours) - 1
    for index, (b, start, end) in enumerate(zip(behaviours, bounds[:-1], bounds[1:])):
        bout = _bout_span(t_fine, index, last, start, end, larva.blend)
        add = _BOUT_DRIVES.get(int(b))
        if bout is not None and add is not None:
            add(drive, bout, rng, larva, config)
    return drive


def _integrate_posture(
    rng: np.random.Generator, larva: Larva, d: _Drive, start_xy: np.ndarray, start_heading: float
) -> Posture:
    """The posture signals from the bouts' drive: stride phases, body length, bends with the
    slow postural drift, heading and position integrated by cumulative sums on the fine grid."""
    n, dt = d.run_speed.size, FINE_DT
    run_phase = rng.uniform(0, 2 * np.pi) + np.cumsum(d.run_rate) * dt
    back_phase = rng.uniform(0, 2 * np.pi) + np.cumsum(d.back_rate) * dt

    # Length: stride oscillation (shortest when the wave is mid-body), hunches, twitches.
    rel_length = (
        1.0
        + larva.length_oscillation * (d.run_wave * np.cos(run_phase) + d.back_wave * np.cos(back_phase))
        + d.hunch_dev
        + d.small_dev
    )
    length = larva.length * rel_length
    # Forward speed of the middle point: pulsed, fastest while the posterior contracts.
    forward = (
        d.run_speed * (1.0 + 0.9 * np.sin(run_phase))
        - d.back_speed * (1.0 + 0.9 * np.sin(back_phase))
        + d.cast_speed
        # hunch: the tail stays, so the middle point moves with half the length change
        + 0.5 * larva.length * np.gradient(d.hunch_dev, dt)
    )
    head_bend = (
        d.cast_bend
        + d.small_bend
        + d.run_wave * larva.head_sway * np.sin(0.5 * run_phase)
        + _ou(rng, n, larva.posture_drift, 1.5)
    )
    c_bend = d.roll_bend + _ou(rng, n, larva.posture_drift, 3.0)
    # Heading: slow drift while crawling, the body following the head during casts,
    # a wobble during rolls.
    crawling = np.clip(d.run_wave + d.back_wave, 0.0, 1.0)
    turn = (
        crawling * _ou(rng, n, 0.25, 2.0)
        + larva.cast_follow * d.cast_bend
        + np.abs(d.roll_lateral) * _ou(rng, n, 0.3, 0.5)
    )
    heading = start_heading + np.cumsum(turn) * dt
    cos_h, sin_h = np.cos(heading), np.sin(heading)
    vx = forward * cos_h - d.roll_lateral * sin_h
    vy = forward * sin_h + d.roll_lateral * cos_h
    x = start_xy[0] + np.cumsum(vx) * dt
    y = start_xy[1] + np.cumsum(vy) * dt
    return Posture(
        x=x,
        y=y,
        heading=heading,
        length=length,
        head_bend=head_bend,
        c_bend=c_bend,
        run_wave=np.clip(d.run_wave, 0, 1),
        run_phase=run_phase,
        back_wave=np.clip(d.back_wave, 0, 1),
        back_phase=back_phase,
        hunch=np.clip(d.hunch_ant, 0, 1),
        width_factor=1.0 / np.sqrt(np.clip(rel_length, 0.5, 2.0)),  # volume is conserved
    )


def posture_signals(
    rng: np.random.Generator,
    larva: Larva,
    config: SimulationConfig,
    behaviours: np.ndarray,
    bounds: np.ndarray,
    t_fine: np.ndarray,
    start_xy: np.ndarray,
    start_heading: float,
) -> Posture:
    """Generate the posture signals of one larva on the regular grid `t_fine` (s).

    behaviours, bounds: the bouts (`behaviour_bouts`); start_xy (mm), start_heading (rad):
    where the middle point starts and where the body points. config: gives the casts'
    `cast_amplitude` and `cast_frequency`. All draws come from `rng`, bout after bout, then
    for the integration.
    """
    drive = _bout_drive(rng, larva, config, behaviours, bounds, t_fine)
    return _integrate_posture(rng, larva, drive, start_xy, start_heading)


def body_spine(
    posture: Posture, n_points: int, wave_depth: float, bend_start: float = 0.4, bend_exponent: float = 1.5
) -> np.ndarray:
    """Noise-free spine (n, n_points, 2) in mm, tail -> head, from posture signals.

    wave_depth: how much the peristaltic wave shortens the segments it passes (fraction).
    bend_start, bend_exponent: the anterior bend acts on the body from `bend_start` (fraction
        from the tail) to the head, weighted by ((s - bend_start) / (1 - bend_start)) **
        bend_exponent at position s (see SimulationConfig).
    """
    k = n_points
    s_seg = (np.arange(k - 1) + 0.5) / (k - 1)  # segment midpoints along the body, 0 = tail
    p = posture
    # Segment lengths: compression bumps of the travelling waves and of the hunch.
    run_pos = -0.25 + 1.5 * np.mod(p.run_phase, 2 * np.pi)[:, None] / (2 * np.pi)  # tail -> head
    back_pos = 1.25 - 1.5 * np.mod(p.back_phase, 2 * np.pi)[:, None] / (2 * np.pi)  # head -> tail
    bump = lambda pos: np.exp(-(((s_seg - pos) / 0.12) ** 2))  # noqa: E731
    weights = (
        1.0
        - wave_depth * p.run_wave[:, None] * bump(run_pos)
        - wave_depth * p.back_wave[:, None] * bump(back_pos)
        - 0.5 * p.hunch[:, None] * s_seg**2
    )
    seg_len = weights / weights.sum(axis=1, keepdims=True) * p.length[:, None]
    # Tangent angle along the body: heading + anterior bend + constant-curvature bend.
    anterior = np.clip((s_seg - bend_start) / (1.0 - bend_start), 0.0, 1.0) ** bend_exponent
    angle = (
        p.heading[:, None]
        + p.head_bend[:, None] * anterior
        + p.c_bend[:, None] * (s_seg - 0.5)
    )
    steps = seg_len[:, :, None] * np.stack([np.cos(angle), np.sin(angle)], axis=2)
    points = np.concatenate([np.zeros((len(p.x), 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    mid = k // 2
    points -= points[:, mid : mid + 1, :]
    points[:, :, 0] += p.x[:, None]
    points[:, :, 1] += p.y[:, None]
    return points


def body_outline(
    spine: np.ndarray, width: np.ndarray, counts: np.ndarray, m: int
) -> np.ndarray:
    """Outline polygon (n, m, 2) around a spine, NaN-padded beyond each frame's `counts`.

    The polygon runs along the right side from tail to head and back along the left side,
    through the tail and the head tips; the half-width profile is round (sqrt(sin)). `width` (n,) is the
    body width at the middle (mm).
    """
    n, k, _ = spine.shape
    j = np.arange(m)[None, :]
    u = j / counts[:, None]  # (n, m) perimeter parameter in [0, 1)
    valid = j < counts[:, None]
    s = np.where(u < 0.5, 2 * u, 2 - 2 * u)  # along the body, 0 = tail
    side = np.where(u < 0.5, -1.0, 1.0)  # right then left
    # spine position and tangent at fractional index s * (k - 1)
    pos = s * (k - 1)
    i = np.clip(np.floor(pos).astype(int), 0, k - 2)
    frac = (pos - i)[:, :, None]
    rows = np.arange(n)[:, None]
    a, b = spine[rows, i], spine[rows, i + 1]
    centre = a + frac * (b - a)
    tangent = b - a
    tangent /= np.maximum(np.linalg.norm(tangent, axis=2, keepdims=True), 1e-9)
    normal = np.stack([-tangent[:, :, 1], tangent[:, :, 0]], axis=2)
    half = 0.5 * width[:, None] * np.clip(np.sin(np.pi * s), 0.0, 1.0) ** 0.5
    out = centre + (side * half)[:, :, None] * normal
    out[~valid] = np.nan
    return out
