"""The post-prediction rule: its names (`normalise_post_rule`) and its effect (`apply_post_rule`).

A tagger instance records its rule in `config.json` (`post_rule`: null or "ABC->AAC");
training and ensemble assembly normalise what the user wrote, prediction applies it per
larva. This module is the rule's one home.
"""

from __future__ import annotations

import numpy as np

POST_RULES = (None, "ABC->AAC")


def normalise_post_rule(rule: str | None) -> str | None:
    """None, "none", "ABC->AAC", "ABC-AAC" (shell friendly), "abc->aac" -> None or "ABC->AAC"."""
    if rule is None:
        return None
    text = str(rule).strip().upper().replace(" ", "")
    if text in ("", "NONE", "NULL"):
        return None
    if text in ("ABC->AAC", "ABC-AAC", "ABC>AAC"):
        return "ABC->AAC"
    raise ValueError(f"unknown post rule {rule!r}: use ABC->AAC or none")


def apply_post_rule(labels: np.ndarray) -> np.ndarray:
    """Post-prediction rule "ABC -> AAC" on one larva's per-step labels; returns a new array.

    A label lasting a single time step between two other labels is replaced by the label
    before it. Precisely, going left to right over the already corrected sequence: step k
    (neither the first nor the last step) is replaced by the label of step k-1 when its
    label differs from both the (corrected) label of step k-1 and the label of step k+1.
    Consequences: `A B C` -> `A A C`; `A B A` -> `A A A`; a chain of single-step labels
    takes the label before the chain (`A B C D E E` -> `A A A A E E`); the first and the
    last step are never changed; runs of two or more steps are never changed.

    Equivalently (vectorised): the steps kept as they are ("anchors") are the first, the
    last, and every step whose label equals the next step's; every other step takes the
    label of the last anchor before it (an anchor's label propagates forward).
    In: (n,) array of labels (class indices or names). Out: (n,) array, same dtype.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n <= 2:
        return labels.copy()
    anchor = np.zeros(n, dtype=bool)
    anchor[0] = anchor[-1] = True
    anchor[:-1] |= labels[:-1] == labels[1:]
    source = np.where(anchor, np.arange(n), 0)
    np.maximum.accumulate(source, out=source)
    return labels[source]
