"""What to simulate: `SimulationConfig` and the named regimes.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maggotflow.sim.behaviour import BEHAVIOURS_6, BEHAVIOURS_7, TO_6

# Label set name -> its behaviour names ("6": small motions count as stops, `TO_6`).
LABEL_SETS = {"6": BEHAVIOURS_6, "7": BEHAVIOURS_7}

FIMTRACK_FRAME_RATE_HZ = 30.0
FIMTRACK_PIXELSIZE_UM = 100.0


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
        if str(self.label_set) not in LABEL_SETS:
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
        return LABEL_SETS[self.label_set]

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

