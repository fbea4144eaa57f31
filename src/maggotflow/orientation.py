"""Which end of a spine is the head, from how the larvae move (one home for every reader).

First cue, the crawling direction. Larvae crawl forward most of the time, so over a file the body centre moves mostly towards
the head. For every larva the evidence is measured on ~0.5 s windows (frame-rate free: a
window runs from each frame to the first frame at least `WINDOW_S` later; windows that span
a tracking gap longer than `MAX_WINDOW_S` are not used):

- displacement d of the body centre (mean of the spine points, the same whichever end is
  the head) over the window;
- the body axis a (unit vector from the posterior half's mean point to the anterior half's,
  averaged over the window's two ends);
- the window is *moving* when |d| is at least `MOVING_BODY_LENGTHS` median body lengths
  (still larvae and tracker noise do not vote).

Over all moving windows of all larvae, `forward_fraction` = sum(max(d.a, 0)) / sum(|d.a|):
the speed-weighted share of the motion along the body axis that goes towards the supposed
head (1 = all forward, 0.5 = no evidence either way, 0 = all backward). Reversing the spine
turns f into 1 - f exactly, so one measurement serves both orders. `moving_steps` counts the
moving windows, `moving_s` their duration (s, the frame intervals they start on).

A second cue, independent of the crawling direction (`SweepEvidence`): larvae explore by
casting, sweeping the HEAD sideways while the tail stays comparatively still. Per frame, each
end point's sideways offset from the body centre, across the axis of the spine's central half
(points round(k/4) .. k-1-round(k/4), so the swept end does not tilt its own reference), in
median body lengths; over the same windows (still or moving), its change |dy|. Pooled over
all larvae, the median |dy| at the supposed head over that at the supposed tail is the
head-sweep ratio (medians: trackers' spine ends are noisy and glitch). Reversing the spine
inverts it exactly. Tracker noise is the same at both ends and pulls it towards 1: clean
simulated files give ~1.25-1.7, the same with 0.08 mm more noise ~1.15; a rigid kink at the
middle of the body is symmetric and gives 1.

Decision rule: the crawling cue is *decisive* when moving_s >= `MIN_MOVING_S` and
f >= `DECISIVE_FRACTION` (or <= 1 - it); a file whose larvae back up 30 % of the time at
crawling speed still has f ~ 0.7. The sweep cue is decisive when its windows cover
>= `MIN_SWEEP_S` and the ratio is >= `DECISIVE_SWEEP_RATIO` (or <= 1 / it): 1.3 is well
above what noise or a slightly asymmetric tracker gives, so on noisy files the cue turns
neutral rather than wrong. Combined (`decide_spine_order`, `check_named_head`): a decisive
cue decides when the other agrees or is neutral; when both are decisive and DISAGREE (e.g.
larvae backing up most of their moving time) nothing is guessed: auto falls back to head
first (the convention) with a warning naming the file and both figures. Forced orders and
files that name the head warn when the combined evidence decisively contradicts them. The
verdict on the order kept is recorded with the figures (`spine_order_evidence`: supports,
contradicts, disagree, or weak when neither cue is decisive), so the tables of a run
(`maggotflow.runend`) can count and name the files to check. Left out: a file of
straight-bodied larvae (no sweeps) backing up most of the time is still decided by the
crawling cue alone, the wrong way.

Cost: the body figures (centre, median length, mean points of the two halves) are
`maggotflow.plausibility.BodyMeasures`, numpy's figures bit for bit from one transposed copy
of the spine; a reader passes those that bridging already measured on the same spine
(`orientation_evidence`), so that the spine itself is only read for the four points of the
head-sweep cue. The work is done on coordinate rows (2, n), contiguous, in place where it
can be; whether a window is moving is decided on squared figures, with hypot (slow) called
only within 1e-9 of the threshold (`_at_least`), so every verdict and figure is the one of
the plain numpy formulas, bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from maggotflow.plausibility import BodyMeasures, body_measures

log = logging.getLogger(__name__)

WINDOW_S = 0.5  # s: long enough to span a peristaltic stride's pulse, short enough for turns
MAX_WINDOW_S = 2.0  # s: a window stretched over a longer gap is not used
MOVING_BODY_LENGTHS = 0.05  # a moving window displaces the centre by >= 5 % of the body length
MIN_MOVING_S = 5.0  # s of moving windows (all larvae together) needed for a decision
DECISIVE_FRACTION = 0.6  # forward fraction needed to call an order (or 1 - it to reject one)
MIN_SWEEP_S = 10.0  # s of observed windows (all larvae together) needed for a head-sweep verdict
DECISIVE_SWEEP_RATIO = 1.3  # head/tail lateral motion needed to call an order (or 1 / it to reject one)

ORDERS = ("head_first", "tail_first")


@dataclass(frozen=True)
class MotionEvidence:
    """Speed-weighted share of body-axis motion towards the supposed head (see module doc).

    forward_fraction: in [0, 1], NaN when no window is moving. moving_steps: number of moving
    windows. moving_s: their total duration in s.
    """

    forward_fraction: float
    moving_steps: int
    moving_s: float

    def reversed(self) -> "MotionEvidence":
        """The evidence for the opposite head/tail assignment."""
        return MotionEvidence(1.0 - self.forward_fraction, self.moving_steps, self.moving_s)

    @property
    def enough_motion(self) -> bool:
        return self.moving_s >= MIN_MOVING_S and np.isfinite(self.forward_fraction)

    @property
    def supports(self) -> bool:
        """Decisive evidence that the supposed head is the head."""
        return self.enough_motion and self.forward_fraction >= DECISIVE_FRACTION

    @property
    def contradicts(self) -> bool:
        """Decisive evidence that the supposed head is the tail."""
        return self.enough_motion and self.forward_fraction <= 1.0 - DECISIVE_FRACTION

    def describe(self) -> str:
        """'forward motion 91% over 812 moving steps (40.6 s)' for messages."""
        share = "n/a" if not np.isfinite(self.forward_fraction) else f"{100 * self.forward_fraction:.0f}%"
        return f"forward motion {share} over {self.moving_steps} moving steps ({self.moving_s:.1f} s)"

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable figures: forward fraction (None when undefined), moving steps and
        their duration (s, to 0.1 s)."""
        f = self.forward_fraction
        return {
            "spine_order_forward_fraction": round(float(f), 4) if np.isfinite(f) else None,
            "spine_order_moving_steps": int(self.moving_steps),
            "spine_order_moving_s": round(float(self.moving_s), 1),
        }


@dataclass(frozen=True)
class SweepEvidence:
    """Sideways motion of the two spine ends, whatever the crawling direction (see module doc).

    head_lateral / tail_lateral: median |change over a window| of the supposed head's / tail's
    sideways offset from the body centre, in body lengths (NaN without windows). windows:
    number of windows. seconds: their total duration in s.
    """

    head_lateral: float
    tail_lateral: float
    windows: int
    seconds: float

    def reversed(self) -> "SweepEvidence":
        """The evidence for the opposite head/tail assignment."""
        return SweepEvidence(self.tail_lateral, self.head_lateral, self.windows, self.seconds)

    @property
    def ratio(self) -> float:
        """head_lateral / tail_lateral, kept within [1e-3, 1e3] (JSON-safe); NaN when undefined."""
        if not (np.isfinite(self.head_lateral) and np.isfinite(self.tail_lateral)):
            return float("nan")
        if self.tail_lateral <= 0 or self.head_lateral <= 0:
            return float("nan") if self.head_lateral == self.tail_lateral else (1e3 if self.tail_lateral <= 0 else 1e-3)
        return float(np.clip(self.head_lateral / self.tail_lateral, 1e-3, 1e3))

    @property
    def enough_data(self) -> bool:
        return self.seconds >= MIN_SWEEP_S and np.isfinite(self.ratio)

    @property
    def supports(self) -> bool:
        """Decisive evidence that the supposed head is the head."""
        return self.enough_data and self.ratio >= DECISIVE_SWEEP_RATIO

    @property
    def contradicts(self) -> bool:
        """Decisive evidence that the supposed head is the tail."""
        return self.enough_data and self.ratio <= 1.0 / DECISIVE_SWEEP_RATIO

    def describe(self) -> str:
        """'head/tail lateral motion 1.62x over 6120 windows (204.0 s)' for messages."""
        ratio = "n/a" if not np.isfinite(self.ratio) else f"{self.ratio:.2f}x"
        return f"head/tail lateral motion {ratio} over {self.windows} windows ({self.seconds:.1f} s)"

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable figure: the head/tail ratio (None when undefined)."""
        r = self.ratio
        return {"spine_order_head_sweep_ratio": round(float(r), 4) if np.isfinite(r) else None}


def orientation_evidence(
    tracks: Iterable[tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, BodyMeasures | None]],
) -> tuple[MotionEvidence, SweepEvidence]:
    """Both cues (crawling direction, head sweeps) that the LAST point of each spine is the head.

    In: (t (n,) s, spine (n, k, 2)) per larva, any units (scale-free), points in the order
    to test (last point = supposed head); optionally a third item, the `BodyMeasures` of that
    spine as `maggotflow.plausibility` measured it (not computed twice).
    Out: (MotionEvidence, SweepEvidence) over all larvae, from one pass over the same ~0.5 s
    windows.
    """
    forward = backward = 0.0
    steps, seconds = 0, 0.0
    head_lateral, tail_lateral = [], []
    sweep_seconds = 0.0
    with np.errstate(all="ignore"):  # degenerate spines (zero length) must not warn
        for t, spine, *measured in tracks:
            t = np.asarray(t, dtype=np.float64)
            spine = np.asarray(spine, dtype=np.float64)
            n, k = spine.shape[0], spine.shape[1]
            if n < 2 or k < 2:
                continue
            body = measured[0] if measured and measured[0] is not None else body_measures(spine)
            if not body.length > 0:
                continue
            windows = _windows(t, n)
            if windows is None:
                continue
            start, end, frame_s = windows

            moving, along = _along_axis(body, start, end)
            forward += float(along[along > 0].sum())
            backward += float(-along[along < 0].sum())
            steps += int(moving.sum())
            seconds += float(frame_s[moving].sum())

            if k < 4:
                continue  # no central half distinct from the ends
            dh, dt = _end_sweeps(spine, body, start, end)
            ok = np.isfinite(dh) & np.isfinite(dt)
            head_lateral.append(dh[ok])
            tail_lateral.append(dt[ok])
            sweep_seconds += float(frame_s[ok].sum())
        total = forward + backward
        motion = MotionEvidence(forward / total if total > 0 else float("nan"), steps, seconds)
        if head_lateral and sum(x.size for x in head_lateral):
            # a concatenation is a new array: its median may reorder it in place (no copy)
            head = float(np.median(np.concatenate(head_lateral), overwrite_input=True))
            tail = float(np.median(np.concatenate(tail_lateral), overwrite_input=True))
        else:
            head = tail = float("nan")
        windows = int(sum(x.size for x in head_lateral))
    return motion, SweepEvidence(head, tail, windows, sweep_seconds)


def _windows(t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ~0.5 s windows of one larva's frames t (n,) s: (first frames, last frames, the
    duration in s of the frame interval each starts on), or None when there is none. A
    window runs from each frame to the first frame at least WINDOW_S later; one spanning
    more than MAX_WINDOW_S (a tracking gap) is not used."""
    end = np.searchsorted(t, t + WINDOW_S - 1e-9)
    start = np.flatnonzero(end < n)
    end = end[start]
    span = t[end] - t[start]
    start, end = start[span <= MAX_WINDOW_S], end[span <= MAX_WINDOW_S]
    if start.size == 0:
        return None
    return start, end, np.minimum(np.diff(t, append=t[-1])[start], MAX_WINDOW_S)


def _along_axis(body: BodyMeasures, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crawling direction over the windows (start, end): whether each window is moving (the
    centre displaced by at least MOVING_BODY_LENGTHS bodies, and a finite figure), and for
    the moving ones the displacement along the body axis (rear half's mean point -> front
    half's, averaged over the window's two ends). Coordinates are rows (2, n): the same
    operations as on (n, 2) columns, on contiguous data; the displacement along the axis only
    for the windows where it counts."""
    centre = body.centre.T
    d = np.take(centre, end, axis=1) - np.take(centre, start, axis=1)
    moving = _at_least(d, MOVING_BODY_LENGTHS * body.length)
    used = np.flatnonzero(moving)
    axis = body.front.T - body.rear.T
    unit = axis / np.hypot(axis[0], axis[1])
    a = np.take(unit, start[used], axis=1) + np.take(unit, end[used], axis=1)
    a /= np.hypot(a[0], a[1])
    d = np.take(d, used, axis=1)
    along = d[0] * a[0] + d[1] * a[1]
    finite = np.isfinite(along)
    moving[used] = finite
    return moving, along[finite]


def _at_least(d: np.ndarray, threshold: float) -> np.ndarray:
    """np.hypot(d[0], d[1]) >= threshold for d (2, m), bit for bit, with hypot (slow) only
    near the threshold: d0 * d0 + d1 * d1 is within a few ulp of hypot's square (hypot itself
    within 1 ulp), so a margin of 1e-9 of the squared threshold decides the rest exactly;
    non-finite values, and thresholds whose square could under- or overflow, use hypot."""
    if not 1e-100 < threshold < 1e100:
        return np.hypot(d[0], d[1]) >= threshold
    square = d[0] * d[0]
    square += d[1] * d[1]
    limit = threshold * threshold
    reached = square >= limit
    square -= limit
    unsure = np.flatnonzero(~(np.abs(square, out=square) > 1e-9 * limit))
    if unsure.size:
        reached[unsure] = np.hypot(d[0, unsure], d[1, unsure]) >= threshold
    return reached


def _end_sweeps(spine: np.ndarray, body: BodyMeasures, start: np.ndarray,
                end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head sweeps over the windows (start, end): |change| of each end point's sideways
    offset from the centre, across the axis of the spine's central half (so a swept end does
    not tilt its own reference), in body lengths: (head end, tail end). The four points used
    are copied to rows (2, n), worked on in place."""
    k = spine.shape[1]
    q = max(1, int(round(k / 4)))
    points = np.take(spine, [0, q, k - 1 - q, k - 1], axis=1).transpose(1, 2, 0)
    tail, inner_rear, inner_front, head = np.ascontiguousarray(points)
    mid = inner_front - inner_rear
    scale = np.hypot(mid[0], mid[1])
    scale *= body.length
    normal_x = np.negative(mid[1])
    normal_x /= scale
    normal_y = mid[0]
    normal_y /= scale
    moved = []
    for end_point in (head, tail):
        end_point -= body.centre.T
        end_point[0] *= normal_x
        end_point[1] *= normal_y
        offset = end_point[0]
        offset += end_point[1]
        change = offset[end]
        change -= offset[start]
        moved.append(np.abs(change, out=change))
    return moved[0], moved[1]


def _verdict(motion: MotionEvidence, sweeps: SweepEvidence) -> str:
    """Combined verdict on the supposed head: "supports", "contradicts", "disagree" or "weak".

    Each cue is decisive one way or neutral; a decisive cue decides unless the other is
    decisive the other way ("disagree": no guess).
    """
    votes = {("supports" if c.supports else "contradicts") for c in (motion, sweeps) if c.supports or c.contradicts}
    if not votes:
        return "weak"
    return votes.pop() if len(votes) == 1 else "disagree"


def _contradiction(motion: MotionEvidence, sweeps: SweepEvidence) -> str:
    """In words, which cues contradict the supposed head, with their figures (for messages)."""
    parts = []
    if motion.contradicts:
        parts.append(f"the larvae move backwards ({motion.describe()})")
    if sweeps.contradicts:
        parts.append(f"their tail end sweeps sideways more than their head end ({sweeps.describe()})")
    return " and ".join(parts)


def decide_spine_order(
    path: str | Path, file_order_spines: list[tuple], configured: str
) -> tuple[str, dict[str, Any]]:
    """The point order of a file whose points run one end to the other (`.spine`, `.outline`).

    In: the file, its larvae as (t s, spine (n, k, 2) in FILE order[, measures]: see
    `orientation_evidence`), the configured order ("auto", "head_first" or "tail_first").
    Out: (order used, metadata) where metadata = spine_order, spine_order_decided_by
    ("motion": auto and decided by the larvae's motion, crawling direction and/or head sweeps;
    "convention": auto, weak or conflicting evidence, head_first assumed; "configured": forced
    by the user), spine_order_evidence (the combined verdict of the two cues on the order used:
    "supports", "contradicts", "disagree" or "weak"), spine_order_forward_fraction,
    spine_order_moving_steps, spine_order_moving_s and spine_order_head_sweep_ratio (under
    the order used). Logs a warning naming the file and the figures when auto falls back, or
    when a forced order is decisively contradicted (the forced order is kept).
    """
    # File order read as-is = tail first: the last point of each line is the head.
    motion, sweeps = orientation_evidence(file_order_spines)
    evidence = {"tail_first": (motion, sweeps), "head_first": (motion.reversed(), sweeps.reversed())}
    verdict = {order: _verdict(*evidence[order]) for order in ORDERS}
    if configured == "auto":
        if verdict["head_first"] == "supports":
            order, how = "head_first", "motion"
        elif verdict["tail_first"] == "supports":
            order, how = "tail_first", "motion"
        elif verdict["head_first"] == "disagree":
            order, how = "head_first", "convention"
            m, w = evidence["head_first"]
            log.warning(
                "%s: the motion says %s (read head first: %s) but the head sweeps say %s (read head first: %s); "
                "cannot tell head from tail; reading the points head first (the convention): check the file",
                path, "head_first" if m.supports else "tail_first", m.describe(),
                "head_first" if w.supports else "tail_first", w.describe(),
            )
        else:
            order, how = "head_first", "convention"
            m, w = evidence["head_first"]
            log.warning(
                "%s: cannot tell head from tail from the larvae's motion (read head first: %s; %s; a decision "
                "needs >= %.0f s of motion and >= %.0f%% of it one way, or >= %.0f s of frames and one end "
                "sweeping sideways >= %.1fx the other); reading the points head first (the convention)",
                path, m.describe(), w.describe(), MIN_MOVING_S, 100 * DECISIVE_FRACTION, MIN_SWEEP_S,
                DECISIVE_SWEEP_RATIO,
            )
    elif configured in ORDERS:
        order, how = configured, "configured"
        if verdict[order] == "contradicts":
            other = ORDERS[1 - ORDERS.index(order)]
            log.warning(
                "%s: spine_order is set to %s but under it %s; the file is probably %s (spine_order auto would "
                "read it so); keeping %s as configured",
                path, order, _contradiction(*evidence[order]), other, order,
            )
    else:
        raise ValueError(f"spine_order must be auto, head_first or tail_first, got {configured!r}")
    m, w = evidence[order]
    return order, {"spine_order": order, "spine_order_decided_by": how, "spine_order_evidence": verdict[order],
                   **m.metadata(), **w.metadata()}


def check_named_head(
    path: str | Path, tracks: list[tuple[np.ndarray, np.ndarray]], decided_by: str, named_by: str
) -> dict[str, Any]:
    """Motion check for files that say which end is the head (trx.mat x_head, FIMTrack head_x).

    In: larvae as (t s, spine (n, k, 2) tail -> head as read); `decided_by` is the metadata
    value ("file", or "convention" where the file could not tell); `named_by` says in words
    what named the head (for the message). Out: metadata spine_order_decided_by,
    spine_order_evidence (the combined verdict on the head as read, as in
    `decide_spine_order`) plus the figures. The head/tail as read is kept; a warning names
    the file and the figures when the combined evidence (crawling direction, head sweeps)
    decisively contradicts it.
    """
    motion, sweeps = orientation_evidence(tracks)
    verdict = _verdict(motion, sweeps)
    if verdict == "contradicts":
        log.warning(
            "%s: relative to the head given by %s, %s; head and tail may be swapped in this file: "
            "check the tracker's output (kept as read)",
            path, named_by, _contradiction(motion, sweeps),
        )
    return {"spine_order_decided_by": decided_by, "spine_order_evidence": verdict, **motion.metadata(),
            **sweeps.metadata()}
