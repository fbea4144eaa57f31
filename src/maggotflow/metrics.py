"""Classification metrics: the one confusion matrix, per-class scores, macro-F1 and accuracy.

Everything that scores a tagger goes through here: validation during training (the metric
that picks the kept checkpoint) and `maggotflow evaluate` (the metric that is reported), so
the two are the same number.

A confusion matrix is (K, K + E) counts: rows = true class, the first K columns = the
predicted class; E >= 0 further columns hold predictions outside the K classes (in
evaluation: "(other)" and "(missing)"). They count as wrong: they lower the recall of their
row's class and the accuracy, and no class's precision.

Scores are sklearn-like with zero_division=0: precision_k = C[k, k] / (column k sum),
recall_k = C[k, k] / (row k sum), F1_k = 2 P R / (P + R), any 0/0 is 0; support_k = row k
sum. Macro-F1 is the unweighted mean of F1 over the classes with support > 0: a class the
truth never holds has nothing to recall, so it stays out of the mean (its wrong predictions
already lower the recall of the true classes). (sklearn's default would average it in as 0.)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ClassScores(NamedTuple):
    """Per-class scores, each a (K,) array: precision, recall, F1 (float64), support (int64)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts of class indices in [0, K): rows = true class, columns = predicted."""
    flat = np.asarray(truth, np.int64) * n_classes + np.asarray(predicted, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(confusion: np.ndarray) -> ClassScores:
    """Precision, recall, F1 and support of each of the K classes of a (K, K + E) matrix."""
    confusion = np.asarray(confusion)
    k = confusion.shape[0]
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    predicted = confusion[:, :k].sum(axis=0)
    support = confusion.sum(axis=1).astype(np.int64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)
    return ClassScores(precision, recall, f1, support)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes with support > 0 (see the module docstring); 0.0 when none."""
    scores = per_class_scores(confusion)
    supported = scores.support > 0
    return float(scores.f1[supported].mean()) if supported.any() else 0.0


def accuracy(confusion: np.ndarray) -> float:
    """Share of the counted cases predicted as their true class; 0.0 for an empty matrix."""
    confusion = np.asarray(confusion)
    total = int(confusion.sum())
    return float(np.trace(confusion[:, :confusion.shape[0]])) / total if total else 0.0
