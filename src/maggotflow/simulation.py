"""Labelled larva simulator: synthetic experiments in every track format, with ground truth.

This is the project's demo data and test-fixture factory: taggers are trained and evaluated
on it, so the kinematics are meant to be realistic enough and the task not trivially
separable. Everything is in millimetres and seconds.

The body
--------
A larva is a chain of `n_spine_points` points (tail -> head). Its posture at time t is set by
a handful of continuous signals:

- the position of the middle point and the body heading (integrated velocities);
- the body length (a per-larva rest length times a contraction factor);
- a tangent-angle profile along the body: an anterior bend (head angle, casts and twitches)
  plus a constant-curvature bend (the C shape of rolls);
- the spacing of the points along the body: a local compression bump travelling tail -> head
  (forward peristalsis) or head -> tail (backward), or an anterior compression (hunch).

The signals are generated on a fine regular grid (100 Hz), integrated with cumulative sums,
then interpolated at the file's own (jittered) frame times, where the spine is built. Nothing
loops over time steps; the loops are per behaviour bout.

Behaviours
----------
A semi-Markov chain over `BEHAVIOURS_7` with behaviour-specific log-normal bout durations and
a fixed jump matrix (see `_JUMP` and `_DURATION`): runs take about 59 % of the time, casts
about 19 %, stops and small motions about 12 % together, back-ups, hunches and rolls are
rarer, rolls the rarest (about 2 %). Each bout's contribution to the posture signals is cross-faded with
its neighbours over a per-larva blend time of 0.1-0.2 s, as real transitions are smooth. The
ground-truth label of a time step is the bout containing it (hard boundary in the middle of
the blend). Bout amplitudes vary (weak casts, slow runs) so classes overlap somewhat.

Body, gait and bout-duration constants are `SimulationConfig` fields; the figures here are
their defaults (regime "A" below).

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

The tracker
-----------
Each file has its own nominal frame rate in `frame_rate_hz` (FIMTrack files: exactly 30 fps,
no timestamps), timestamps jittered by a few % of the interval and rounded to 1 ms, frames
dropped at random plus occasional gaps of several frames, larvae entering and leaving
(tracks of different lengths, sometimes only a few frames), Gaussian positional noise on the
spine and on the outline. None of these depends on the behaviour: the label is recoverable
from posture dynamics only (no label-dependent noise, position, orientation or frame rate).

Regimes
-------
`REGIMES` names three sets of `SimulationConfig` overrides that differ as much as two labs,
trackers or strains would; `regime_config(name, **overrides)` builds one:

- "A", the reference lab: the defaults (11 spine points, 10-30 fps, 2.5-5 mm larvae).
- "B": small, fast larvae (2-3.2 mm, stride 1.4-2 Hz) filmed by a coarse, noisy tracker
  (7 spine points, 12-16 fps, more noise and dropped frames), with a stiff-necked body
  model without peristaltic length change (bend from 25 % of the body, linear; weak
  segment compression) and small, fast casts; longer runs, shorter casts.
- "C": large, slow larvae (4.5-7 mm, stride 0.6-1 Hz) filmed by a fine, fast tracker
  (21 spine points, 40-60 fps, little noise), bent near the head only, with strong
  peristalsis and wide, slow casts; shorter runs, longer casts, stops and small motions.

FIMTrack files stay at `fimtrack_frame_rate_hz` (30 fps) in every regime. The regimes are
a robustness test (does a tagger trained on one regime tag another?), not a target to fit:
they were fixed before any model was measured on them, so do not tune them.

Files
-----
`simulate(outdir, n_files, seed)` writes file i with `formats[i % len(formats)]`, content
drawn from `np.random.default_rng([seed, i])` (independent of `n_files`):

- spine:    `OUTDIR/<tracker>/<date_time>@<genotype>@<effector>@<tracker>@<protocol>@100.spine`
            (+ `.outline`) and `<same stem>.label`;
- trx:      `OUTDIR/<tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat` (behaviour
            flags inside) and `trx.label` next to it;
- fimtrack: `OUTDIR/fimtrack/<date_time>/<date_time>.csv` (30 fps, 100 um per pixel) and
            `<date_time>.label`.

The tracker name alternates between t5 and t15 with the file index. Command line:
`maggotflow simulate` (`maggotflow.cli.simulate`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.signal import lfilter

from maggotflow.tracks import Run, Track

log = logging.getLogger(__name__)

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

FIMTRACK_FRAME_RATE_HZ = 30.0
FIMTRACK_PIXELSIZE_UM = 100.0

GENOTYPES = ("FCF_attP2", "GMR_SS01816", "GMR_72F11_AE_01", "attP2")
EFFECTORS = ("UAS_TNT_2_0003", "UAS_CsChrimson_Uas", "UAS_Shi_ts1_3_0001")
PROTOCOLS = ("r_LED100_30s2x15s30s#n#n#n", "p_8_45s1x30s0s#p_8_105s10x2s10s#n#n")
TRACKERS = ("t5", "t15")

_FINE_DT = 0.01  # s, grid on which posture signals are generated and integrated

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
# Clip range of cast amplitudes, relative to their median (`cast_amplitude`): 0.25-1.6 rad at
# the default median of 0.85 rad.
_CAST_CLIP = (0.25 / 0.85, 1.6 / 0.85)


@dataclass
class SimulationConfig:
    """What to simulate. Ranges are (min, max), drawn uniformly per file or per larva.

    duration_s: length of each experiment (s).
    larvae: number of larvae per file.
    frame_rate_hz: nominal frame rate per file (FIMTrack files always use
        `fimtrack_frame_rate_hz`, with exact times: the csv has none).
    timestamp_jitter: timestamp jitter, as a fraction of the frame interval (uniform +-).
    n_spine_points: points per spine.
    outline_points: points per outline, drawn per file; each frame then has up to
        `outline_points_jitter` fewer (NaN-padded, as trackers' outlines vary).
    body_length_mm: rest body length per larva.
    tracker_noise_mm: standard deviation of the positional noise per file (mm).
    dropped_frame_probability: per-frame drop probability, drawn per larva.
    gaps_per_minute, gap_frames: occasional tracking gaps of several consecutive frames.
    partial_track_probability: chance that a larva enters late and/or leaves early.
    short_track_probability: chance that a larva is tracked for only a few (3-8) frames.
    label_set: "7" (BEHAVIOURS_7) or "6" (BEHAVIOURS_6, small_motion merged into stop_large).

    Body and gait (drawn per larva unless said otherwise):
    stride_hz: forward stride frequency (Hz).
    stride_length: stride length in body lengths (crawling speed = stride_hz * body length *
        stride_length, mm/s).
    length_oscillation: relative body-length change over a stride (peristaltic length
        change; (0, 0) = none).
    wave_depth: local segment compression of the peristaltic wave (fraction, < 1).
    head_sway: amplitude of the head's sway during runs (rad).
    bend_start: fraction of the body, from the tail, where the anterior bend (head angle,
        casts, twitches) begins, in [0, 1).
    bend_exponent: how the anterior bend concentrates towards the head (> 0; higher: stiffer
        body, bent near the head only).
    cast_amplitude: median head-sweep amplitude of casts (rad); per cast log-normal around
        it, clipped to 0.29-1.88 times it.
    cast_frequency: frequency of the head sweeps of casts (Hz), drawn per cast.
    bout_duration_scale: multipliers of the median bout duration (and of its clip range) of
        each behaviour, in BEHAVIOURS_7 order; they change bout durations and hence the
        class balance.
    """

    duration_s: float = 60.0
    larvae: tuple[int, int] = (8, 15)
    frame_rate_hz: tuple[float, float] = (10.0, 30.0)
    timestamp_jitter: float = 0.03
    fimtrack_frame_rate_hz: float = FIMTRACK_FRAME_RATE_HZ
    fimtrack_pixelsize_um: float = FIMTRACK_PIXELSIZE_UM
    n_spine_points: int = 11
    outline_points: tuple[int, int] = (20, 40)
    outline_points_jitter: int = 4
    body_length_mm: tuple[float, float] = (2.5, 5.0)
    tracker_noise_mm: tuple[float, float] = (0.02, 0.05)
    dropped_frame_probability: tuple[float, float] = (0.01, 0.04)
    gaps_per_minute: float = 1.0
    gap_frames: tuple[int, int] = (3, 15)
    partial_track_probability: float = 0.4
    short_track_probability: float = 0.04
    label_set: str = "7"
    stride_hz: tuple[float, float] = (1.0, 1.5)
    stride_length: tuple[float, float] = (0.15, 0.3)
    length_oscillation: tuple[float, float] = (0.02, 0.05)
    wave_depth: tuple[float, float] = (0.2, 0.4)
    head_sway: tuple[float, float] = (0.03, 0.12)
    bend_start: float = 0.4
    bend_exponent: float = 1.5
    cast_amplitude: float = 0.85
    cast_frequency: tuple[float, float] = (0.4, 0.9)
    bout_duration_scale: tuple[float, ...] = (1.0,) * 7

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0 s, got {self.duration_s}")
        lo, hi = self.larvae
        if not 1 <= lo <= hi:
            raise ValueError(f"larvae must be a range 1 <= min <= max, got {self.larvae}")
        lo, hi = self.frame_rate_hz
        if not 0 < lo <= hi:
            raise ValueError(f"frame_rate_hz must be a range 0 < min <= max, got {self.frame_rate_hz}")
        if not 0 <= self.timestamp_jitter < 0.3:
            raise ValueError(f"timestamp_jitter must be in [0, 0.3), got {self.timestamp_jitter}")
        if self.n_spine_points < 3:
            raise ValueError(f"n_spine_points must be >= 3, got {self.n_spine_points}")
        if self.outline_points[0] - self.outline_points_jitter < 6:
            raise ValueError("outline_points must leave at least 6 points per frame")
        if str(self.label_set) not in ("6", "7"):
            raise ValueError(f"label_set must be '6' or '7', got {self.label_set!r}")
        self.label_set = str(self.label_set)
        for name in ("stride_hz", "stride_length", "head_sway", "cast_frequency"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range 0 <= min <= max, got {getattr(self, name)}")
        for name in ("length_oscillation", "wave_depth"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi < 1:
                raise ValueError(f"{name} must be a range 0 <= min <= max < 1, got {getattr(self, name)}")
        if not 0 <= self.bend_start < 1:
            raise ValueError(f"bend_start must be in [0, 1), got {self.bend_start}")
        if not self.bend_exponent > 0:
            raise ValueError(f"bend_exponent must be > 0, got {self.bend_exponent}")
        if not self.cast_amplitude >= 0:
            raise ValueError(f"cast_amplitude must be >= 0 rad, got {self.cast_amplitude}")
        scale = tuple(self.bout_duration_scale)
        if len(scale) != 7 or not all(x > 0 for x in scale):
            raise ValueError(
                f"bout_duration_scale must be 7 numbers > 0 (one per behaviour of BEHAVIOURS_7), got {scale}"
            )
        self.bout_duration_scale = tuple(float(x) for x in scale)

    @property
    def label_names(self) -> tuple[str, ...]:
        return BEHAVIOURS_7 if self.label_set == "7" else BEHAVIOURS_6

    def label_name(self, behaviour: int) -> str:
        name = BEHAVIOURS_7[behaviour]
        return name if self.label_set == "7" else TO_6[name]


# Named simulation regimes: SimulationConfig overrides (see "Regimes" in the module doc).
# Fixed before any model was measured on them: a robustness test, not a target to fit.
REGIMES: dict[str, dict[str, Any]] = {
    # the reference lab: today's defaults
    "A": {},
    # small, fast larvae; coarse, noisy tracker; stiff-necked body model without
    # peristaltic length change
    "B": {
        "n_spine_points": 7,
        "frame_rate_hz": (12.0, 16.0),
        "body_length_mm": (2.0, 3.2),
        "tracker_noise_mm": (0.04, 0.07),
        "dropped_frame_probability": (0.03, 0.08),
        "stride_hz": (1.4, 2.0),
        "stride_length": (0.2, 0.35),
        "length_oscillation": (0.0, 0.01),
        "wave_depth": (0.0, 0.1),
        "head_sway": (0.02, 0.06),
        "bend_start": 0.25,
        "bend_exponent": 1.0,
        "cast_amplitude": 0.6,
        "cast_frequency": (0.6, 1.2),
        "bout_duration_scale": (1.5, 0.7, 1.0, 1.0, 1.0, 1.0, 1.0),
    },
    # large, slow larvae; fine, fast tracker; bend near the head, strong peristalsis
    "C": {
        "n_spine_points": 21,
        "frame_rate_hz": (40.0, 60.0),
        "body_length_mm": (4.5, 7.0),
        "tracker_noise_mm": (0.01, 0.03),
        "stride_hz": (0.6, 1.0),
        "stride_length": (0.12, 0.22),
        "length_oscillation": (0.05, 0.09),
        "wave_depth": (0.35, 0.55),
        "head_sway": (0.08, 0.2),
        "bend_start": 0.55,
        "bend_exponent": 2.5,
        "cast_amplitude": 1.1,
        "cast_frequency": (0.3, 0.6),
        "bout_duration_scale": (0.7, 1.4, 1.0, 1.0, 1.0, 1.5, 1.3),
    },
}


def regime_config(name: str, **overrides: Any) -> SimulationConfig:
    """The SimulationConfig of regime `name` (a key of REGIMES), with `overrides` (field ->
    value, e.g. duration_s=20) applied on top."""
    if name not in REGIMES:
        raise ValueError(f"unknown simulation regime {name!r}; expected one of {', '.join(REGIMES)}")
    return SimulationConfig(**{**REGIMES[name], **overrides})


# --------------------------------------------------------------------------------------
# Behaviour sequence


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


# --------------------------------------------------------------------------------------
# Kinematics


@dataclass
class _Larva:
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
    def draw(cls, rng: np.random.Generator, config: SimulationConfig) -> "_Larva":
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
    a = np.exp(-_FINE_DT / tau)
    noise = rng.standard_normal(n) * sd * np.sqrt(1.0 - a * a)
    x = lfilter([1.0], [1.0, -a], noise, zi=[a * sd * rng.standard_normal()])[0]
    return x


@dataclass
class _Posture:
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

    def at(self, t_fine: np.ndarray, t: np.ndarray) -> "_Posture":
        """The signals linearly interpolated at times `t` (s)."""
        return _Posture(**{k: np.interp(t, t_fine, v) for k, v in vars(self).items()})


def _posture_signals(
    rng: np.random.Generator,
    larva: _Larva,
    config: SimulationConfig,
    behaviours: np.ndarray,
    bounds: np.ndarray,
    t_fine: np.ndarray,
    start_xy: np.ndarray,
    start_heading: float,
) -> _Posture:
    """Generate the posture signals of one larva on the regular grid `t_fine` (s).

    config: gives the casts' `cast_amplitude` and `cast_frequency`.
    """
    n = t_fine.size
    dt = _FINE_DT
    z = lambda: np.zeros(n)  # noqa: E731
    run_speed, run_rate, run_wave = z(), z(), z()
    back_speed, back_rate, back_wave = z(), z(), z()
    cast_bend, cast_speed, hunch_dev, hunch_ant = z(), z(), z(), z()
    roll_bend, roll_lateral, small_bend, small_dev = z(), z(), z(), z()
    h = larva.blend
    t0 = t_fine[0]
    cast_amp = config.cast_amplitude
    cast_lo, cast_hi = _CAST_CLIP[0] * cast_amp, _CAST_CLIP[1] * cast_amp

    last = len(behaviours) - 1
    for index, (b, start, end) in enumerate(zip(behaviours, bounds[:-1], bounds[1:])):
        # The first and last bouts also cover the grid beyond the track's ends (no fade there).
        i0 = 0 if index == 0 else max(0, int(np.floor((start - h - t0) / dt)))
        i1 = n if index == last else min(n, int(np.ceil((end + h - t0) / dt)) + 1)
        if i1 <= i0:
            continue
        tt = t_fine[i0:i1]
        u = tt - start  # time since bout start
        duration = end - start
        # cross-fade window: sums to 1 across consecutive bouts
        w = np.ones_like(tt)
        if index > 0:
            w *= _smoothstep((tt - start) / h + 0.5)
        if index < last:
            w *= 1.0 - _smoothstep((tt - end) / h + 0.5)
        sl = slice(i0, i1)
        if b == RUN:
            # slow and fast runs: per-bout speed factor
            factor = float(np.clip(np.exp(0.3 * rng.standard_normal()), 0.4, 1.8))
            run_speed[sl] += w * larva.speed * factor
            run_rate[sl] += w * 2 * np.pi * larva.stride_hz * factor**0.3
            run_wave[sl] += w
        elif b == BACK:
            factor = float(np.clip(np.exp(0.2 * rng.standard_normal()), 0.6, 1.5))
            back_speed[sl] += w * larva.speed * larva.back_speed_ratio * factor
            back_rate[sl] += w * 2 * np.pi * larva.stride_hz * larva.back_freq_ratio
            back_wave[sl] += w
        elif b == CAST:
            # head sweeps; amplitude log-normal so that some casts are weak
            amp = float(np.clip(cast_amp * np.exp(0.4 * rng.standard_normal()), cast_lo, cast_hi))
            freq = rng.uniform(*config.cast_frequency)
            bias = rng.choice((-1.0, 1.0)) * rng.uniform(0.0, 0.8)
            env = _smoothstep(u / 0.25) * _smoothstep((duration - u) / 0.25)
            sweep = (bias + np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))) / (1 + abs(bias))
            cast_bend[sl] += w * amp * env * sweep
            cast_speed[sl] += w * larva.speed * rng.uniform(0.0, 0.15)
        elif b == HUNCH:
            depth = rng.uniform(0.18, 0.3)
            tc = min(rng.uniform(0.25, 0.45), 0.6 * duration)
            profile = np.where(
                u < tc, _smoothstep(u / tc), 1.0 - _smoothstep((u - tc) / max(duration - tc, 1e-3))
            )
            hunch_dev[sl] -= w * depth * profile
            hunch_ant[sl] += w * profile
        elif b == ROLL:
            direction = rng.choice((-1.0, 1.0))
            amp = rng.uniform(1.4, 2.6)  # total body turning of the C shape, rad
            period = rng.uniform(1.0, 2.0)  # s between bend-sign flips (x2)
            flips = np.tanh(2.5 * np.cos(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)))
            env = _smoothstep(u / 0.2) * _smoothstep((duration - u) / 0.2)
            roll_bend[sl] += w * amp * env * flips
            roll_lateral[sl] += w * env * direction * rng.uniform(0.8, 1.6) * larva.length / 3.75
        elif b == SMALL:
            k = 1 + rng.poisson(1.5 * duration)
            centres = rng.uniform(0.05, max(duration - 0.05, 0.1), k)
            widths = rng.uniform(0.08, 0.2, k)
            pulses = np.exp(-0.5 * ((u[:, None] - centres) / widths) ** 2)
            small_bend[sl] += w * (pulses @ (rng.normal(0.0, 0.3, k)))
            small_dev[sl] += w * (pulses @ (rng.normal(0.0, 0.03, k)))
        # STOP contributes nothing: only the slow postural drift and tracker noise remain.

    run_phase = rng.uniform(0, 2 * np.pi) + np.cumsum(run_rate) * dt
    back_phase = rng.uniform(0, 2 * np.pi) + np.cumsum(back_rate) * dt

    # Length: stride oscillation (shortest when the wave is mid-body), hunches, twitches.
    rel_length = (
        1.0
        + larva.length_oscillation * (run_wave * np.cos(run_phase) + back_wave * np.cos(back_phase))
        + hunch_dev
        + small_dev
    )
    length = larva.length * rel_length
    # Forward speed of the middle point: pulsed, fastest while the posterior contracts.
    forward = (
        run_speed * (1.0 + 0.9 * np.sin(run_phase))
        - back_speed * (1.0 + 0.9 * np.sin(back_phase))
        + cast_speed
        # hunch: the tail stays, so the middle point moves with half the length change
        + 0.5 * larva.length * np.gradient(hunch_dev, dt)
    )
    head_bend = (
        cast_bend
        + small_bend
        + run_wave * larva.head_sway * np.sin(0.5 * run_phase)
        + _ou(rng, n, larva.posture_drift, 1.5)
    )
    c_bend = roll_bend + _ou(rng, n, larva.posture_drift, 3.0)
    # Heading: slow drift while crawling, the body following the head during casts,
    # a wobble during rolls.
    crawling = np.clip(run_wave + back_wave, 0.0, 1.0)
    turn = (
        crawling * _ou(rng, n, 0.25, 2.0)
        + larva.cast_follow * cast_bend
        + np.abs(roll_lateral) * _ou(rng, n, 0.3, 0.5)
    )
    heading = start_heading + np.cumsum(turn) * dt
    cos_h, sin_h = np.cos(heading), np.sin(heading)
    vx = forward * cos_h - roll_lateral * sin_h
    vy = forward * sin_h + roll_lateral * cos_h
    x = start_xy[0] + np.cumsum(vx) * dt
    y = start_xy[1] + np.cumsum(vy) * dt
    return _Posture(
        x=x,
        y=y,
        heading=heading,
        length=length,
        head_bend=head_bend,
        c_bend=c_bend,
        run_wave=np.clip(run_wave, 0, 1),
        run_phase=run_phase,
        back_wave=np.clip(back_wave, 0, 1),
        back_phase=back_phase,
        hunch=np.clip(hunch_ant, 0, 1),
        width_factor=1.0 / np.sqrt(np.clip(rel_length, 0.5, 2.0)),  # volume is conserved
    )


def _spine(
    posture: _Posture, n_points: int, wave_depth: float, bend_start: float = 0.4, bend_exponent: float = 1.5
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


def _outline(
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


# --------------------------------------------------------------------------------------
# Tracker effects


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


def _visible_frames(rng: np.random.Generator, config: SimulationConfig, n_frames: int, fps: float) -> np.ndarray:
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


# --------------------------------------------------------------------------------------
# Larvae and runs


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

    frames = _visible_frames(rng, config, times.size, fps)
    t = times[frames]
    larva = _Larva.draw(rng, config)
    behaviours, bounds = behaviour_bouts(rng, t[0], t[-1], duration_scale=config.bout_duration_scale)
    # The fine grid starts a little early so that the sampled signals are free of start-up.
    t_fine = np.arange(t[0] - 0.5, t[-1] + 0.5 + _FINE_DT, _FINE_DT)
    start_xy = rng.uniform(0.3 * arena_mm, 0.7 * arena_mm, 2)
    posture = _posture_signals(
        rng, larva, config, behaviours, bounds, t_fine, start_xy, rng.uniform(-np.pi, np.pi)
    ).at(t_fine, t)

    spine = _spine(posture, config.n_spine_points, larva.wave_depth, config.bend_start, config.bend_exponent)
    outline = None
    if outline_points:
        counts = outline_points - rng.integers(0, config.outline_points_jitter + 1, t.size)
        outline = _outline(spine, larva.width * posture.width_factor, counts, outline_points)
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


# --------------------------------------------------------------------------------------
# Files


SIMULATED_FORMATS = ("spine", "trx", "fimtrack")


def file_metadata(rng: np.random.Generator, index: int) -> dict[str, str]:
    """Metadata of simulated file `index`: a distinct date_time (one day per index, time of
    day from `rng`), tracker alternating t5/t15, genotype, effector and protocol."""
    start = _dt.datetime(2021, 1, 4) + _dt.timedelta(days=int(index), seconds=int(rng.integers(8 * 3600, 19 * 3600)))
    date_time = start.strftime("%Y%m%d_%H%M%S")
    return {
        "id": date_time,
        "tracker": TRACKERS[index % len(TRACKERS)],
        "genotype": str(rng.choice(GENOTYPES)),
        "effector": str(rng.choice(EFFECTORS)),
        "protocol": str(rng.choice(PROTOCOLS)),
        "date_time": date_time,
    }


def track_file_path(outdir: str | Path, fmt: str, metadata: dict[str, str]) -> Path:
    """Where a simulated track file of format `fmt` goes under `outdir` (see module doc)."""
    outdir = Path(outdir)
    m = metadata
    if fmt == "spine":
        stem = "@".join([m["date_time"], m["genotype"], m["effector"], m["tracker"], m["protocol"], "100"])
        return outdir / m["tracker"] / f"{stem}.spine"
    if fmt == "trx":
        return outdir / m["tracker"] / f"{m['genotype']}@{m['effector']}" / m["protocol"] / m["date_time"] / "trx.mat"
    if fmt == "fimtrack":
        return outdir / "fimtrack" / m["date_time"] / f"{m['date_time']}.csv"
    raise ValueError(f"unknown track format {fmt!r}; expected one of {', '.join(SIMULATED_FORMATS)}")


def label_file_path(track_path: str | Path) -> Path:
    """The ground-truth `.label` next to a simulated track file (`trx.mat` -> `trx.label`)."""
    return Path(track_path).with_suffix(".label")


def file_run(index: int, seed: int = 0, fmt: str = "spine", config: SimulationConfig | None = None) -> Run:
    """The labelled in-memory `Run` of simulated file `index` in format `fmt` (not written).

    Depends only on (seed, index, fmt, config): drawn from `np.random.default_rng([seed, index])`.
    FIMTrack runs have exact 30 fps times (`config.fimtrack_frame_rate_hz`), larva ids 0, 1, ...
    and no outline; their metadata is only what the file name carries (id, date_time).
    """
    config = config or SimulationConfig()
    if fmt not in SIMULATED_FORMATS:
        raise ValueError(f"unknown track format {fmt!r}; expected one of {', '.join(SIMULATED_FORMATS)}")
    rng = np.random.default_rng([seed, index])
    meta = file_metadata(rng, index)
    if fmt == "fimtrack":
        # FIMTrack writes frames, not times, and has no outline in its csv.
        meta = {"id": meta["id"], "date_time": meta["date_time"]}
        run = simulate_run(
            rng, config, meta, frame_rate_hz=config.fimtrack_frame_rate_hz,
            exact_times=True, outline=False, consecutive_ids=True,
        )
    else:
        run = simulate_run(rng, config, meta)
    run.format = fmt
    return run


def simulate_file(
    outdir: str | Path, index: int, seed: int = 0, fmt: str = "spine", config: SimulationConfig | None = None
) -> Path:
    """Simulate and write file `index` (format `fmt`) and its `.label`; return the track file.

    The content depends only on (seed, index, fmt, config); see `file_run`.
    """
    config = config or SimulationConfig()
    from maggotflow.formats import file_sha1
    from maggotflow.formats.label import label_file_for_run, write_label_file

    run = file_run(index, seed, fmt, config)
    meta = run.metadata
    names = list(config.label_names)
    path = track_file_path(outdir, fmt, meta)
    if fmt == "spine":
        from maggotflow.formats.spine import write_spine

        write_spine(run, path, spine_order="head_first", write_outline=True)
    elif fmt == "trx":  # flags inside, for every name of the label set
        from maggotflow.formats.trx import write_trx

        write_trx(run, path, label_names=names)
    elif fmt == "fimtrack":
        from maggotflow.formats.fimtrack import write_fimtrack

        write_fimtrack(run, path, framerate=config.fimtrack_frame_rate_hz, pixelsize_um=config.fimtrack_pixelsize_um)
    # The label file depends on the track file's exact bytes (LarvaTagger checks the sha1).
    run.metadata["filename"] = path.name
    run.source, run.format, run.sha1 = path, fmt, file_sha1(path)
    write_label_file(label_file_path(path), label_file_for_run(run, names=names))
    return path


def _is_simulator_readme(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith("Simulated larva experiments (maggotflow simulate)")
    except OSError:
        return False


_README = """Simulated larva experiments (maggotflow simulate)
=================================================

Synthetic data written by `maggotflow simulate` (seed {seed}, {n_files} files): Drosophila
larvae crawling on a plate, with the true behaviour of every time step. Label set "{label_set}":
  {names}
Each file: {larvae_lo}-{larvae_hi} larvae, up to {duration:g} s each (some tracks start late or end
early), {rate_lo:g}-{rate_hi:g} fps (FIMTrack files {fim_rate:g} fps), {n_points} spine points.
The same seed and file index always give the same file.

Layout
------
- Choreography: <tracker>/<date_time>@<genotype>@<effector>@<tracker>@<protocol>@100.spine
  (+ .outline; points head first, mm, times in s) and <same stem>.label.
- Janelia:      <tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat
  (behaviour flags 1/0 inside) and trx.label next to it.
- FIMTrack:     fimtrack/<date_time>/<date_time>.csv and <date_time>.label.
  FIMTrack csv files carry no times and are in pixels: read them with
  framerate = {fim_rate:g} fps and pixelsize_um = {fim_px:g} (um per pixel): in the workflow's
  config read.framerate and read.pixelsize_um, on the command line --framerate and --pixelsize.

Ground truth
------------
Each .label file (LarvaTagger JSON) holds exactly one behaviour per time step of each larva,
at the track file's own time steps (frames the tracker dropped have no label); its
dependencies name the track file and its sha1. The trx.mat flags hold the same labels.
Point the workflow at this folder with `inputs.track_dir` (training) or
`evaluation.track_dir` (held-out files); see maggotflow's config/README.md.
"""


def simulate(
    outdir: str | Path,
    n_files: int,
    seed: int = 0,
    formats: Sequence[str] = SIMULATED_FORMATS,
    config: SimulationConfig | None = None,
) -> list[Path]:
    """Write `n_files` simulated experiments with ground-truth labels under `outdir`.

    File i uses `formats[i % len(formats)]` and depends only on (seed, i): the first files of
    a larger simulation are identical to those of a smaller one. Existing files with the same
    names are replaced (atomically) only in a folder of an earlier simulation (its
    `README.txt` is the simulator's); any other non-empty folder is the user's and raises
    OutputExistsError before anything is written. Also writes
    `outdir/README.txt`.
    Returns the track files written (.spine, trx.mat, .csv), in file-index order.
    """
    config = config or SimulationConfig()
    formats = tuple(formats)
    if not formats:
        raise ValueError("no track format to simulate")
    for fmt in formats:
        if fmt not in SIMULATED_FORMATS:
            raise ValueError(f"unknown track format {fmt!r}; expected one of {', '.join(SIMULATED_FORMATS)}")
    if n_files < 0:
        raise ValueError(f"n_files must be >= 0, got {n_files}")
    outdir = Path(outdir)
    from maggotflow.atomic import OutputExistsError, refuse_foreign, write_text_atomic

    readme = outdir / "README.txt"
    refuse_foreign(readme, _is_simulator_readme)
    if not readme.exists() and outdir.is_dir() and any(outdir.iterdir()):
        # Not a folder of ours: its files (same names as ours, perhaps) are the user's.
        raise OutputExistsError(outdir, "is not empty and holds no earlier maggotflow simulation (README.txt); "
                                        "nothing is written there: choose an empty folder")
    paths = [simulate_file(outdir, i, seed, formats[i % len(formats)], config) for i in range(n_files)]

    write_text_atomic(
        outdir / "README.txt",
        _README.format(
            seed=seed, n_files=n_files, label_set=config.label_set, names=", ".join(config.label_names),
            fim_rate=config.fimtrack_frame_rate_hz, fim_px=config.fimtrack_pixelsize_um,
            larvae_lo=config.larvae[0], larvae_hi=config.larvae[1], duration=config.duration_s,
            rate_lo=config.frame_rate_hz[0], rate_hi=config.frame_rate_hz[1], n_points=config.n_spine_points,
        ),
    )
    log.info("wrote %d simulated track files (+ .label) to %s", len(paths), outdir)
    return paths
