"""Bouts: runs of one behaviour in a larva's labelled time steps.

The one definition that the evaluation (behaviour.tsv), the screen summary (per_larva.tsv,
transitions.tsv) and the ethograms use, so they measure the same larva the same way:

- A step's behaviour is the first name of its label, in the order the file lists them, that
  is one of the behaviours measured (`step_codes`): a step labelled ["run", "hunch"] counts
  as run (LarvaTagger lists the primary label first, secondary ones after it). The screen
  summary and the ethograms measure every name; the evaluation its label set, after
  synonyms, so a name outside the set is passed over. An untagged step (`[]`), or one with
  no measured name, has no behaviour and belongs to no bout.
- A step lasts until the next step, at most `GAP_FACTOR` usual intervals
  (`maggotflow.tracks.usual_interval`: the median positive interval of the larva); the last
  step of a track lasts one usual interval (`step_durations`). So missing frames do not
  lengthen the behaviour before them.
- A bout is a maximal run of consecutive steps of one behaviour: a step of another
  behaviour, an untagged step or a time gap (`maggotflow.tracks.is_time_gap`: missing
  frames, an interval over `GAP_FACTOR` usual intervals) ends it. Its duration is the sum of
  its steps' durations (s). The first and last bouts of a track are cut by its ends and are
  counted as they are.
- A transition is a bout followed directly by a bout of another behaviour: the next step,
  with no untagged step and no time gap between (so none across either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from maggotflow.tracks import GAP_FACTOR, LabelStep, is_time_gap, usual_interval

NO_BEHAVIOUR = -1  # the code of a step without a measured behaviour (untagged, or no measured name)


@dataclass
class Bouts:
    """The bouts of one larva, in time order (see the module doc).

    code: (B,) int, the behaviour code of each bout (>= 0); start_s: (B,) time of its first
    step (s); duration_s: (B,) s; transitions: (from code, to code) of each bout followed
    directly by a bout of another behaviour.
    """

    code: np.ndarray
    start_s: np.ndarray
    duration_s: np.ndarray
    transitions: list[tuple[int, int]] = field(default_factory=list)


def step_codes(steps: Sequence[LabelStep], code_of: Callable[[str], int | None]) -> np.ndarray:
    """Per step, the code of its behaviour: `code_of` of its first name (file order) for which
    `code_of` gives a code >= 0; NO_BEHAVIOUR for an untagged step or one without such a name.
    `code_of` is asked once per distinct step value, names in order, until one is measured."""
    code_of_step: dict[LabelStep, int] = {}
    for step in dict.fromkeys(steps):
        code = NO_BEHAVIOUR
        for name in step:
            found = code_of(name)
            if found is not None and found >= 0:
                code = found
                break
        code_of_step[step] = code
    return np.fromiter(map(code_of_step.__getitem__, steps), dtype=np.int64, count=len(steps))


def step_durations(t: np.ndarray) -> np.ndarray:
    """(n,) s: each step lasts until the next one, at most GAP_FACTOR usual intervals; the last
    one a usual interval (0 for a track of one step, which has no interval)."""
    t = np.asarray(t, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0)
    usual = usual_interval(t)
    return np.clip(np.append(np.diff(t), usual), 0.0, GAP_FACTOR * usual)


def find_bouts(t: np.ndarray, codes: np.ndarray) -> Bouts:
    """The bouts of one larva: `t` (n,) times in s, `codes` (n,) the behaviour code of each
    step (`step_codes`; NO_BEHAVIOUR where none)."""
    t = np.asarray(t, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    if t.size == 0:
        return Bouts(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    gap = is_time_gap(np.diff(t), usual_interval(t))  # (n - 1,): a gap after step i
    starts = np.flatnonzero(np.r_[True, (codes[1:] != codes[:-1]) | gap])
    code = codes[starts]
    duration = np.add.reduceat(step_durations(t), starts)
    # A boundary that is neither a gap nor next to a step without behaviour is a transition.
    joined = ~gap[starts[1:] - 1] & (code[1:] >= 0) & (code[:-1] >= 0) & (code[1:] != code[:-1])
    transitions = list(zip(code[:-1][joined].tolist(), code[1:][joined].tolist()))
    keep = code >= 0
    return Bouts(code[keep], t[starts[keep]], duration[keep], transitions)
