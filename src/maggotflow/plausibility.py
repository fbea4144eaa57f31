"""Physically impossible frames: found, bridged like dropped frames, or refused (all readers).

A frame of a larva is *implausible* when

- a spine or outline value is beyond `MAX_ABS_COORDINATE` in the file's own units (mm, or
  pixels for FIMTrack): no arena or camera is that large (1e5 mm = 100 m; 1e5 px is ten
  times the widest sensor), so the value is a corrupted number (e.g. 1e300); or
- a spine point lies more than `MAX_JUMP_BODY_LENGTHS` median body lengths from the body
  centre expected at that frame (the running median, over `JUMP_WINDOW` frames, of the
  centre of the larva's other frames): the larva jumped there in one frame and came back.
  A crawling larva covers about 0.3 body lengths per second, so this never fires on real
  motion, not even across gaps of several seconds; a lasting jump (identity switch) moves
  the running median with it and is not flagged; or
- the spine has *collapsed*: its length is at most `COLLAPSED_FRACTION` of the larva's
  median spine length (all points equal: a tracker that lost the shape for a while writes
  that). No larva is that short (and a segment of it would divide by zero); one-point
  "spines" are not checked.

Recovery: the time step is kept (every time step of the track file still gets a label, and
times still match the track's `.label` file), its spine is replaced by linear interpolation
in time between the nearest plausible frames (the nearest one at the track ends), its outline
by the nearest plausible frame's outline (contour points are not matched between frames, so
they cannot be interpolated). One warning per larva names the file, the larva and the line
(text formats) or frame, with the reason (value, jump, collapse); consecutive collapsed
frames are named as one range ("line 12 to line 41 (30 frames, spine collapsed to one
point)"). When more than `MAX_IMPLAUSIBLE_FRACTION` of a larva's frames are implausible
the track is not data: `CorruptTrackError` (a TrackDataError) naming the file and the
larva. The readers call `bridge_or_leave_out`, which turns it into a warning and leaves
that larva out (`Run.left_out`: "mostly impossible frames", or "spine mostly collapsed to
one point"; as with larvae too short to tag): one tracker glitch never costs the other
larvae of the file. So a larva collapsed in every frame is left out, with that warning,
before `maggotflow.segments` could refuse it for having zero length.

Cost: a larva with nothing to bridge is returned as given (no copy). That is proven from
whole-larva figures on one transposed copy of its spine (`point_rows`: each point's x and y
contiguous over the frames), without a verdict per frame: the largest and smallest value,
the shortest spine against the median one, and a bound on how far any point can be from the
running median of the centre (`_cannot_jump`; only when the bound is not enough is every
point measured). The larva's `BodyMeasures` (centre, median length, mean points of the two
halves), which `maggotflow.orientation` needs too, come from the same copy. Anything else (a
value, collapse or jump found, or a spine not laid out frame after frame) goes the long way,
frame by frame. Every figure is numpy's own result bit for bit: `point_mean`,
`spine_lengths` and `running_median7` and the row-wise versions follow numpy's order of
additions, so the verdicts and messages are those of the plain numpy formulas.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from maggotflow.tracks import TrackDataError

log = logging.getLogger(__name__)

MAX_ABS_COORDINATE = 1e5  # file units (mm, or FIMTrack pixels)
MAX_JUMP_BODY_LENGTHS = 5.0
JUMP_WINDOW = 7  # frames of the running median: up to 3 consecutive bad frames are found (running_median7)
MAX_IMPLAUSIBLE_FRACTION = 0.2
# A spine shorter than this fraction of the larva's median spine length has collapsed (all
# points equal, or within 4 um for a 4 mm larva): no tracker resolves a body that small.
COLLAPSED_FRACTION = 1e-3
_SHOWN = 5  # frames listed in a warning


class CorruptTrackError(TrackDataError):
    """A larva whose frames are mostly impossible: left out of the run by the readers (warned).

    `reason`: what the reader records in `Run.left_out`."""

    def __init__(self, path: str | Path | None, problem: str, reason: str = "mostly impossible frames"):
        super().__init__(path, problem)
        self.reason = reason


def bridge_or_leave_out(
    left_out: dict[str, str],
    path: str | Path,
    larva: str,
    t: np.ndarray,
    spine: np.ndarray,
    outline: np.ndarray | None = None,
    where: Callable[[int], str] = lambda i: f"frame {i}",
    measures: list | None = None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """What every reader calls: `bridge_implausible_frames`, or None for a corrupt larva,
    which is then warned about and recorded in `left_out` (the reader's `Run.left_out`)."""
    try:
        return bridge_implausible_frames(path, larva, t, spine, outline, where, measures)
    except CorruptTrackError as err:
        log.warning("%s; this larva is left out", err)
        left_out[str(larva)] = err.reason
        return None


def point_mean(points: np.ndarray) -> np.ndarray:
    """Mean over the points of (n, j, 2) coordinates: (n, 2), bit for bit `points.mean(axis=1)`.

    numpy adds the points one after the other for this axis; so does this loop, over whole
    columns instead of element by element, which is about 3 times faster."""
    j = points.shape[1]
    total = points[:, 0].copy()
    for i in range(1, j):
        total += points[:, i]
    return total / j


def spine_lengths(spine: np.ndarray) -> np.ndarray:
    """Length of each spine (n,), bit for bit `Track.spine_lengths`: the same operations on
    x and y columns instead of a reduction over the 2-long last axis (much slower)."""
    dx = spine[:, 1:, 0] - spine[:, :-1, 0]
    dy = spine[:, 1:, 1] - spine[:, :-1, 1]
    dx *= dx  # in place: the same operations, fewer temporary arrays
    dy *= dy
    dx += dy
    return np.sqrt(dx, out=dx).sum(axis=1)


# An optimal sorting network for 7 values (16 compare-exchanges); element 3 is the median.
_SORT7 = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2), (4, 6), (2, 3), (4, 5),
          (1, 2), (3, 4), (5, 6))


def running_median7(padded: np.ndarray) -> np.ndarray:
    """Median of every 7 consecutive rows of `padded` (m + 6, ...) -> (m, ...): exactly
    np.median over a sliding window (the median of 7 values is one of them), with
    element-wise min/max instead of a partition per window."""
    m = padded.shape[0] - 6
    v = [padded[i : i + m] for i in range(7)]
    for a, b in _SORT7:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    return v[3]


class BodyMeasures(NamedTuple):
    """Figures of one larva's spine (n, k, 2), k >= 2, in its given point order: what bridging
    measures and `maggotflow.orientation` uses, numpy's own results bit for bit."""

    centre: np.ndarray  # (n, 2): mean of the k points, = point_mean(spine)
    length: float  # median spine length, = float(np.median(spine_lengths(spine)))
    rear: np.ndarray  # (n, 2): mean of the first k // 2 points, = point_mean(spine[:, : k // 2])
    front: np.ndarray  # (n, 2): mean of the last k // 2 points, = point_mean(spine[:, k - k // 2 :])


def point_rows(spine: np.ndarray) -> np.ndarray:
    """Copy of spine (n, k, 2) as (k, 2, n): row [i, 0] holds the x of point i in every frame.

    A point's column of a spine is strided (every 2k-th value); these rows are contiguous, so
    the same element-wise operations on them run several times faster, with the same results."""
    return np.ascontiguousarray(spine.transpose(1, 2, 0))


def body_measures(spine: np.ndarray) -> BodyMeasures:
    """BodyMeasures of spine (n, k, 2), k >= 2, n >= 1, from one copy of it (`point_rows`)."""
    rows = point_rows(spine)
    centre, rear, front = _row_means(rows)
    length = _row_lengths(rows) if _frames_side_by_side(spine) else spine_lengths(spine)
    return BodyMeasures(centre.T, float(np.median(length, overwrite_input=True)), rear.T, front.T)


def _frames_side_by_side(spine: np.ndarray) -> bool:
    """Whether spine (n, k, 2) float64 holds each frame's points side by side, frames one
    after the other (as a reader's table rows do). Then numpy adds a frame's segments in
    `spine_lengths` in its pairwise order, which `_row_lengths` follows; in other layouts
    (e.g. Fortran order) numpy adds them one after the other, and only `spine_lengths` gives
    its bits."""
    size = spine.itemsize
    return (spine.dtype == np.float64 and spine.strides[2] == size and spine.strides[1] == 2 * size
            and spine.strides[0] >= 2 * spine.shape[1] * size)


def _row_means(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, rear, front), each (2, n), from point rows (k, 2, n): as `point_mean`, the points
    added one after the other (the rear half's sum is the start of the centre's)."""
    k, half = rows.shape[0], rows.shape[0] // 2
    total = rows[0].copy()
    rear = total / 1 if half == 1 else None  # point_mean of one point: its values / 1
    for i in range(1, k):
        total += rows[i]
        if i == half - 1:
            rear = total / half
    front = rows[k - half].copy()
    for i in range(k - half + 1, k):
        front += rows[i]
    front /= half
    return total / k, rear, front


def _row_lengths(rows: np.ndarray) -> np.ndarray:
    """Spine lengths (n,) from point rows (k, 2, n), k >= 2: bit for bit `spine_lengths`."""
    step = rows[1:] - rows[:-1]  # (k - 1, 2, n)
    step *= step
    segment = step[:, 0]
    segment += step[:, 1]
    np.sqrt(segment, out=segment)
    return _pairwise_sum(segment)


def _pairwise_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the first axis of (m, n), m >= 1, element-wise over n, in the order numpy's
    `sum(axis=1)` adds the m values of each row of a contiguous (n, m) array: 0.0 plus their
    pairwise sum (8 running sums, combined in pairs, then the rest; halves above 128 values;
    fewer than 8 values one after the other). Works in place: `values` is overwritten."""
    total = _pairwise(values)
    total += 0.0  # numpy starts from 0.0: a sum of -0.0s is 0.0
    return total


def _pairwise(values: np.ndarray) -> np.ndarray:
    """numpy's pairwise sum over the first axis of (m, n), m >= 1 (see `_pairwise_sum`),
    accumulated in values[0] (returned)."""
    m = values.shape[0]
    if m > 128:
        cut = m // 2 - (m // 2) % 8
        total = _pairwise(values[:cut])
        total += _pairwise(values[cut:])
        return total
    if m < 8:
        for i in range(1, m):
            values[0] += values[i]
        return values[0]
    r = values[:8]  # the 8 running sums
    i = 8
    while i < m - m % 8:
        r += values[i : i + 8]
        i += 8
    for a, b in ((0, 1), (2, 3), (0, 2), (4, 5), (6, 7), (4, 6), (0, 4)):  # ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))
        r[a] += r[b]
    for j in range(i, m):
        r[0] += values[j]
    return r[0]


def bridge_implausible_frames(
    path: str | Path,
    larva: str,
    t: np.ndarray,
    spine: np.ndarray,
    outline: np.ndarray | None = None,
    where: Callable[[int], str] = lambda i: f"frame {i}",
    measures: list | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Find and bridge a larva's implausible frames (see module doc).

    In: t (n,) s, spine (n, k, 2) and outline (n, m, 2) NaN-padded, both in the file's own
    units and any point order; `where(i)` names frame i for messages ("line 17", "frame 3").
    Out: (spine, outline), new arrays when a frame was bridged, else the inputs themselves
    (no copy). With a `measures` list, when every frame is plausible and the body has a
    length, the spine's `BodyMeasures` are appended to it: the figures
    `maggotflow.orientation.orientation_evidence` needs too, so a reader can pass them on.
    Raises CorruptTrackError when more than MAX_IMPLAUSIBLE_FRACTION of the frames are bad.
    """
    n = spine.shape[0]
    if n == 0:
        return spine, outline
    measured = _measure_if_plausible(spine, outline)
    if measured is not None:  # the common case, proven without looking frame by frame
        if measures is not None:
            measures.append(measured)
        return spine, outline
    found = _find_implausible(spine, outline)
    bad = found.absurd | found.jump | found.collapsed
    n_bad = int(bad.sum())
    if n_bad == 0:
        if measures is not None and found.measured is not None:
            measures.append(found.measured)
        return spine, outline
    _refuse_mostly_implausible(path, larva, found, bad, where)
    spine, outline = _bridge(t, spine, outline, bad)
    log.warning(
        "%s: larva %s: %d impossible frame(s) bridged by interpolating between the nearest plausible frames "
        "(time steps kept): %s",
        path, larva, n_bad, _bridged_frames_text(found, bad, where),
    )
    return spine, outline


@dataclass
class _Findings:
    """Per frame (n,) of one larva: which frames are implausible and why, with the figures
    its warning quotes."""

    absurd: np.ndarray  # bool: a value beyond MAX_ABS_COORDINATE
    peak: np.ndarray  # largest |value| of the frame (non-finite values counted as 0)
    jump: np.ndarray  # bool: a point beyond MAX_JUMP_BODY_LENGTHS from the expected centre
    jump_size: np.ndarray  # body lengths from the expected centre
    collapsed: np.ndarray  # bool: spine at most COLLAPSED_FRACTION of the median length
    lengths: np.ndarray  # spine lengths, filled where a collapse was looked for and found
    median_length: float = 0.0  # of the frames with plausible values
    measured: BodyMeasures | None = None  # when every frame was used


def _measure_if_plausible(spine: np.ndarray, outline: np.ndarray | None) -> BodyMeasures | None:
    """The BodyMeasures of a larva when no frame can be implausible, else None (then
    `_find_implausible` looks frame by frame): the same verdict, from whole-larva figures.

    No value is beyond MAX_ABS_COORDINATE (nor non-finite) when the largest and smallest are
    not; no spine is collapsed when the shortest is not; no point jumped when `_cannot_jump`
    proves it (else the exact test of `_mark_jumps` runs on the point rows)."""
    n, k = spine.shape[0], spine.shape[1]
    if n < 3 or k < 2 or not _frames_side_by_side(spine):
        return None
    with np.errstate(all="ignore"):
        rows = point_rows(spine)
        high, low = rows.max(), rows.min()
        if not (high <= MAX_ABS_COORDINATE and -low <= MAX_ABS_COORDINATE):
            return None
        if outline is not None and outline.shape[1]:
            # per frame NaN padding is ignored; an all-NaN or infinite outline goes the long way
            if not (np.fmax.reduce(outline, axis=None) <= MAX_ABS_COORDINATE
                    and -np.fmin.reduce(outline, axis=None) <= MAX_ABS_COORDINATE):
                return None
        length = _row_lengths(rows)
        body = float(np.median(length, overwrite_input=True))  # reorders length: only its extremes are used below
        if not length.min() > COLLAPSED_FRACTION * body:
            return None
        centre, rear, front = _row_means(rows)
        if not _cannot_jump(centre, length, body, max(high, -low)):
            found = _Findings(np.zeros(n, bool), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool),
                              np.zeros(n))
            _mark_jumps(found, rows, slice(None), body, centre)
            if found.jump.any():
                return None
    return BodyMeasures(centre.T, body, rear.T, front.T)


def _cannot_jump(centre: np.ndarray, length: np.ndarray, body: float, scale: float) -> bool:
    """True when no point of any frame can lie MAX_JUMP_BODY_LENGTHS bodies from the running
    median of the centre (2, n): a point lies within its spine's length of the frame's centre
    (a mean of the points), and the median of JUMP_WINDOW centres within JUMP_WINDOW // 2
    times the largest frame-to-frame step (per coordinate) of the centre it replaces. The
    margin covers rounding many times over (values up to `scale`), so the exact test could
    not fire either."""
    step = np.abs(np.diff(centre, axis=1)).max(axis=1)
    reach = float(length.max()) + (JUMP_WINDOW // 2) * math.hypot(float(step[0]), float(step[1]))
    return reach * (1 + 1e-6) + 1e-9 * scale < MAX_JUMP_BODY_LENGTHS * body


def _find_implausible(spine: np.ndarray, outline: np.ndarray | None) -> _Findings:
    """Absurd values first; then, among the other frames, collapsed spines; then, among the
    rest, jumps away from the running median of the body centre (needs 3 frames and a body
    length)."""
    n = spine.shape[0]
    with np.errstate(all="ignore"):  # 1e300 squared overflows: that is what we are looking for
        peak, finite = _peak_values(spine, outline)
        absurd = ~(peak <= MAX_ABS_COORDINATE)
        found = _Findings(absurd, peak, np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n))
        good_frames = ~absurd & finite
        good: slice | np.ndarray = slice(None) if good_frames.all() else np.flatnonzero(good_frames)
        s = spine[good]  # the frames still in the running
        body = 0.0
        if s.shape[0] and spine.shape[1] >= 2:  # a one-point "spine" has no length to lose
            good, s, body = _mark_collapsed(found, s, good, good_frames)
        if s.shape[0] >= 3 and body > 0:
            _mark_jumps(found, point_rows(s), good, body)
    return found


def _peak_values(spine: np.ndarray, outline: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Largest |value| per frame over spine and outline, non-finite values counted as 0, and
    whether the spine's values are all finite. Non-finite values are not ours to mend: the
    Track check refuses them, naming the time."""
    n = spine.shape[0]
    flat = spine.reshape(n, -1)
    peak = np.abs(flat).max(axis=1)  # NaN or inf where a value is not finite
    finite = np.isfinite(peak)
    if not finite.all():
        odd = ~finite
        peak[odd] = np.where(np.isfinite(flat[odd]), np.abs(flat[odd]), 0.0).max(axis=1)
    if outline is not None and outline.shape[1]:
        contour = outline.reshape(n, -1)
        outline_peak = np.fmax.reduce(np.abs(contour), axis=1)  # ignores the NaN padding
        odd = ~np.isfinite(outline_peak)  # all padding, or an infinite value: count those as 0
        if odd.any():
            outline_peak[odd] = np.where(np.isfinite(contour[odd]), np.abs(contour[odd]), 0.0).max(axis=1)
        peak = np.maximum(peak, outline_peak)
    return peak, finite


def _mark_collapsed(found: _Findings, s: np.ndarray, good: slice | np.ndarray,
                    good_frames: np.ndarray) -> tuple[slice | np.ndarray, np.ndarray, float]:
    """Mark the collapsed frames among `s` (the spines of frames `good`) and take them out:
    returns the frames left, their spines and their median length (the body length)."""
    length = spine_lengths(s)
    body = found.median_length = float(np.median(length))
    short = length <= COLLAPSED_FRACTION * found.median_length
    if not short.any():
        return good, s, body
    # collapsed frames: left out of the body length and the jump check
    found.collapsed[good] = short
    found.lengths[good] = length
    good = np.flatnonzero(good_frames)[~short]
    body = float(np.median(length[~short])) if good.size else 0.0
    return good, s[~short], body


def _mark_jumps(found: _Findings, rows: np.ndarray, good: slice | np.ndarray, body: float,
                centre: np.ndarray | None = None) -> None:
    """Mark the frames among `good` (point rows (k, 2, m), see `point_rows`) with a point more
    than MAX_JUMP_BODY_LENGTHS bodies from the running median of the centre (2, m), computed
    here unless given; keep the BodyMeasures as `measured` when `good` is every frame."""
    if centre is None:
        centre, rear, front = _row_means(rows)
        if isinstance(good, slice):
            found.measured = BodyMeasures(centre.T, body, rear.T, front.T)
    half = JUMP_WINDOW // 2
    # reflect, not edge: an edge-padded first frame would outvote its neighbours
    expected = running_median7(np.pad(centre.T, ((half, half), (0, 0)), mode="reflect"))
    dx = rows[:, 0] - expected[:, 0]  # (k, m)
    dy = rows[:, 1] - expected[:, 1]
    dx *= dx
    dy *= dy
    dx += dy
    reach = np.sqrt(dx.max(axis=0)) / body  # sqrt is monotonic: max first, exactly
    found.jump[good] = reach > MAX_JUMP_BODY_LENGTHS
    found.jump_size[good] = reach


def _refuse_mostly_implausible(path: str | Path, larva: str, found: _Findings, bad: np.ndarray,
                               where: Callable[[int], str]) -> None:
    """CorruptTrackError when more than MAX_IMPLAUSIBLE_FRACTION (or all) of the frames are
    bad, its reason saying whether the spine mostly collapsed."""
    n, n_bad = bad.size, int(bad.sum())
    if n_bad <= MAX_IMPLAUSIBLE_FRACTION * n and n_bad != n:
        return
    if not found.collapsed.any():
        what, reason_out = "have impossible coordinates", "mostly impossible frames"
    elif found.collapsed[bad].all():
        what, reason_out = "have a spine collapsed to one point", "spine mostly collapsed to one point"
    else:
        what, reason_out = "have impossible coordinates or a spine collapsed to one point", "mostly impossible frames"
    raise CorruptTrackError(
        path,
        f"larva {larva}: {n_bad} of {n} frames ({100 * n_bad / n:.0f}%) {what} "
        f"(first at {where(int(np.argmax(bad)))}); more than {100 * MAX_IMPLAUSIBLE_FRACTION:.0f}% is corrupt data, "
        "not a track",
        reason_out,
    )


def _bridge(t: np.ndarray, spine: np.ndarray, outline: np.ndarray | None,
            bad: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Copies of spine and outline with the `bad` frames replaced: the spine interpolated
    linearly in time between the nearest good frames, the outline by the nearest good one."""
    n = spine.shape[0]
    ok = np.flatnonzero(~bad)
    spine = spine.copy()
    flat = spine.reshape(n, -1)
    for c in range(flat.shape[1]):  # k * 2 columns: cheap, and only for larvae with bad frames
        flat[bad, c] = np.interp(t[bad], t[ok], flat[ok, c])
    if outline is not None:
        outline = outline.copy()
        after = np.clip(np.searchsorted(ok, np.flatnonzero(bad)), 0, ok.size - 1)
        before = np.clip(after - 1, 0, ok.size - 1)
        bad_t = t[bad]
        nearest = np.where(np.abs(t[ok[before]] - bad_t) <= np.abs(t[ok[after]] - bad_t), ok[before], ok[after])
        outline[bad] = outline[nearest]
    return spine, outline


def _frame_reason(found: _Findings, i: int, last: int) -> str:
    """Why frames i..last (one frame, or a run of collapsed ones) are implausible."""
    if found.absurd[i]:
        return f"value {found.peak[i]:.3g}"
    if found.collapsed[i]:
        longest = float(found.lengths[i : last + 1].max())
        if longest == 0:
            return "spine collapsed to one point"
        return f"spine collapsed to length {longest:.2g}, median {found.median_length:.3g}"
    return f"jump of {found.jump_size[i]:.0f} body lengths"


def _bridged_frames_text(found: _Findings, bad: np.ndarray, where: Callable[[int], str]) -> str:
    """Up to _SHOWN items, then 'and N more': single frames, or runs of consecutive collapsed
    frames (a tracker that lost the shape loses it for a while) shown as one range."""
    frames = np.flatnonzero(bad)
    items, p = [], 0
    while p < frames.size and len(items) < _SHOWN:
        i = q = int(frames[p])
        end = p
        if found.collapsed[i]:
            while end + 1 < frames.size and frames[end + 1] == q + 1 and found.collapsed[q + 1]:
                end, q = end + 1, q + 1
        if q > i:
            items.append(f"{where(i)} to {where(q)} ({q - i + 1} frames, {_frame_reason(found, i, q)})")
        else:
            items.append(f"{where(i)} ({_frame_reason(found, i, i)})")
        p = end + 1
    more = f" and {frames.size - p} more" if frames.size > p else ""
    return ", ".join(items) + more
