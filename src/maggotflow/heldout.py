"""The held-out split: which labelled files of a manifest are set apart to evaluate a tagger.

Decided per file by a hash of its manifest id (`hash_split`), so adding or removing other
files never moves a file between training and evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from maggotflow.names import text_sha1
from maggotflow.tracks import TrackDataError

if TYPE_CHECKING:
    from maggotflow.manifest import Manifest


def hash_fraction(ident: str, seed: int, salt: str) -> float:
    """A number in [0, 1) fixed by (seed, salt, id): splits that never move a file."""
    return int(text_sha1(f"{seed}\0{salt}\0{ident}")[:15], 16) / 16**15


def hash_split(ids: Sequence[str], fraction: float, seed: int = 0, salt: str = "heldout") -> set[str]:
    """The ids set apart with probability `fraction`, decided per file by a hash.

    Adding or removing other files never moves a file between sides. With fraction > 0 and
    at least two files, at least one file is set apart and at least one is kept.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or len(ids) < 2:
        return set()
    score = {i: hash_fraction(i, seed, salt) for i in ids}
    chosen = {i for i, u in score.items() if u < fraction}
    ranked = sorted(ids, key=lambda i: score[i])
    if not chosen:
        chosen = {ranked[0]}
    if len(chosen) == len(ids):
        chosen.discard(ranked[-1])
    return chosen


def check_heldout(heldout: Manifest, training: Manifest | None = None) -> None:
    """Held-out files must be labelled, there must be some, and (`training` given, a separate
    held-out folder) none may be a training file. TrackDataError (one line) otherwise."""
    if training is not None:
        overlap = sorted({r["path"] for r in heldout} & {r["path"] for r in training})
        if overlap:
            raise TrackDataError(overlap[0], f"listed both for training and for evaluation ({len(overlap)} "
                                             "file(s)); the tagger must not be evaluated on its training data")
    unlabelled = [r["relpath"] for r in heldout if not r["label"]]
    if unlabelled:
        raise TrackDataError(unlabelled[0], f"held-out file without a .label file to compare with "
                                            f"({len(unlabelled)} such file(s)); evaluation needs reference labels")
    if not len(heldout):
        raise TrackDataError(None, "evaluation: no labelled file to hold out; add labelled files, give "
                                   "evaluation.track_dir or set evaluation.heldout_fraction: 0")


def heldout_subset(inputs: Manifest, fraction: float, seed: int = 0) -> Manifest:
    """The labelled files of `inputs` held out for evaluation (`hash_split` by file)."""
    return inputs.subset(hash_split([r["id"] for r in inputs if r["label"]], fraction, seed))
