"""Which end of a spine is the head, from how the larvae move (one home for every reader).

Larvae crawl forward most of the time, so over a file the body centre moves mostly towards
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

Decision rule (`decide`): the evidence is *decisive* when moving_s >= `MIN_MOVING_S` and
f >= `DECISIVE_FRACTION` (or <= 1 - it). A file whose larvae back up 30 % of the time at
crawling speed still has f ~ 0.7.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

log = logging.getLogger(__name__)

WINDOW_S = 0.5  # s: long enough to span a peristaltic stride's pulse, short enough for turns
MAX_WINDOW_S = 2.0  # s: a window stretched over a longer gap is not used
MOVING_BODY_LENGTHS = 0.05  # a moving window displaces the centre by >= 5 % of the body length
MIN_MOVING_S = 5.0  # s of moving windows (all larvae together) needed for a decision
DECISIVE_FRACTION = 0.6  # forward fraction needed to call an order (or 1 - it to reject one)

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
        """JSON-serialisable figures: forward fraction (None when undefined) and moving steps."""
        f = self.forward_fraction
        return {
            "spine_order_forward_fraction": round(float(f), 4) if np.isfinite(f) else None,
            "spine_order_moving_steps": int(self.moving_steps),
        }


def motion_evidence(tracks: Iterable[tuple[np.ndarray, np.ndarray]]) -> MotionEvidence:
    """Evidence that the LAST point of each spine is the head.

    In: (t (n,) s, spine (n, k, 2)) per larva, any units (scale-free), points in the order
    to test (last point = supposed head). Out: MotionEvidence summed over all larvae.
    """
    forward = backward = 0.0
    steps, seconds = 0, 0.0
    with np.errstate(all="ignore"):  # degenerate spines (zero length) must not warn
        for t, spine in tracks:
            t = np.asarray(t, dtype=np.float64)
            spine = np.asarray(spine, dtype=np.float64)
            n, k = spine.shape[0], spine.shape[1]
            if n < 2 or k < 2:
                continue
            centre = spine.mean(axis=1)  # (n, 2), independent of the point order
            half = k // 2
            axis = spine[:, k - half :].mean(axis=1) - spine[:, :half].mean(axis=1)
            axis_norm = np.hypot(axis[:, 0], axis[:, 1])
            lengths = np.sqrt((np.diff(spine, axis=1) ** 2).sum(axis=2)).sum(axis=1)
            body = float(np.median(lengths))
            if not body > 0:
                continue
            end = np.searchsorted(t, t + WINDOW_S - 1e-9)
            start = np.flatnonzero(end < n)
            end = end[start]
            span = t[end] - t[start]
            start, end = start[span <= MAX_WINDOW_S], end[span <= MAX_WINDOW_S]
            if start.size == 0:
                continue
            d = centre[end] - centre[start]
            a = axis[start] / axis_norm[start, None] + axis[end] / axis_norm[end, None]
            a /= np.hypot(a[:, 0], a[:, 1])[:, None]
            along = (d * a).sum(axis=1)
            moving = (np.hypot(d[:, 0], d[:, 1]) >= MOVING_BODY_LENGTHS * body) & np.isfinite(along)
            along = along[moving]
            forward += float(along[along > 0].sum())
            backward += float(-along[along < 0].sum())
            steps += int(moving.sum())
            frame_s = np.diff(t, append=t[-1])[start]
            seconds += float(np.minimum(frame_s, MAX_WINDOW_S)[moving].sum())
    total = forward + backward
    return MotionEvidence(forward / total if total > 0 else float("nan"), steps, seconds)


def decide_spine_order(
    path: str | Path, file_order_spines: list[tuple[np.ndarray, np.ndarray]], configured: str
) -> tuple[str, dict[str, Any]]:
    """The point order of a file whose points run one end to the other (`.spine`, `.outline`).

    In: the file, its larvae as (t s, spine (n, k, 2) in FILE order), the configured order
    ("auto", "head_first" or "tail_first").
    Out: (order used, metadata) where metadata = spine_order, spine_order_decided_by
    ("motion": auto and decisive; "convention": auto, weak evidence, head_first assumed;
    "configured": forced by the user), spine_order_forward_fraction (under the order used),
    spine_order_moving_steps. Logs a warning naming the file and the figure when auto falls
    back, or when a forced order is decisively contradicted (the forced order is kept).
    """
    # File order read as-is = tail first: the last point of each line is the head.
    as_tail_first = motion_evidence(file_order_spines)
    evidence = {"tail_first": as_tail_first, "head_first": as_tail_first.reversed()}
    if configured == "auto":
        if evidence["head_first"].supports:
            order, how = "head_first", "motion"
        elif evidence["tail_first"].supports:
            order, how = "tail_first", "motion"
        else:
            order, how = "head_first", "convention"
            log.warning(
                "%s: cannot tell head from tail from the larvae's motion (read head first: %s; a decision "
                "needs >= %.0f s of motion and >= %.0f%% of it one way); reading the points head first (the convention)",
                path, evidence["head_first"].describe(), MIN_MOVING_S, 100 * DECISIVE_FRACTION,
            )
    elif configured in ORDERS:
        order, how = configured, "configured"
        if evidence[order].contradicts:
            other = ORDERS[1 - ORDERS.index(order)]
            log.warning(
                "%s: spine_order is set to %s but the larvae move backwards under it (%s); the file is "
                "probably %s (spine_order auto would read it so); keeping %s as configured",
                path, order, evidence[order].describe(), other, order,
            )
    else:
        raise ValueError(f"spine_order must be auto, head_first or tail_first, got {configured!r}")
    return order, {"spine_order": order, "spine_order_decided_by": how, **evidence[order].metadata()}


def check_named_head(
    path: str | Path, tracks: list[tuple[np.ndarray, np.ndarray]], decided_by: str, named_by: str
) -> dict[str, Any]:
    """Motion check for files that say which end is the head (trx.mat x_head, FIMTrack head_x).

    In: larvae as (t s, spine (n, k, 2) tail -> head as read); `decided_by` is the metadata
    value ("file", or "convention" where the file could not tell); `named_by` says in words
    what named the head (for the message). Out: metadata spine_order_decided_by plus the
    figures. The head/tail as read is kept; a warning names the file and the figure when the
    motion decisively contradicts it.
    """
    evidence = motion_evidence(tracks)
    if evidence.contradicts:
        log.warning(
            "%s: the larvae move backwards relative to the head given by %s (%s); head and tail may be "
            "swapped in this file: check the tracker's output (kept as read)",
            path, named_by, evidence.describe(),
        )
    return {"spine_order_decided_by": decided_by, **evidence.metadata()}
