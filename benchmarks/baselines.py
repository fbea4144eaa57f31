"""Reference baselines that give the tagger's macro-F1 a meaning.

- majority: every step gets the most frequent training label.
- kinematic thresholds: a fixed cascade of one-feature rules (hunch: body shortened; back:
  moving backwards; roll: moving sideways; cast: head bent; stop: still; small motion:
  nearly still; otherwise run), each threshold fitted on the training steps to maximise that
  behaviour's F1 among the steps the earlier rules left. Features come from the same
  normalised 2 s segments the tagger sees, so the comparison is about the model only.
- gradient boosting (`BoostingTagger`): the strong non-deep baseline, what an experienced
  analyst would build in an afternoon: the windowed kinematic features of
  `maggotflow.kinematics.window_features` (speeds in body lengths/s, head/tail/body angles,
  curvature, length; mean, spread and central value over the same 2 s segments) fed to
  scikit-learn's histogram gradient boosting. If the tagger does not beat it clearly, the
  network is not earning its cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Rule order and the feature each rule thresholds: (behaviour prefix, feature, direction).
# direction "<" means the behaviour is claimed when feature < threshold.
RULES = (
    ("hunch", "length_ratio", "<"),
    ("back", "forward_speed", "<"),
    ("roll", "lateral_speed", ">"),
    ("cast", "head_angle", ">"),
    ("stop", "head_speed", "<"),
    ("small_motion", "forward_speed", "<"),
)
FEATURES = ("forward_speed", "lateral_speed", "length_ratio", "head_angle", "head_speed")


def kinematic_features(segments: np.ndarray, frame_interval: float = 0.1) -> np.ndarray:
    """Per-segment features (N, 5) from normalised segments (N, 2, P, W).

    forward_speed / lateral_speed: middle-point velocity along / across the body axis over
    the central 0.4 s (larva lengths per s); length_ratio: spine length at the centre step
    (1 = median length); head_angle: |angle| between the head segment and the body axis at
    the centre (rad); head_speed: mean head-point speed relative to the middle point (lengths/s).
    """
    w = segments.shape[-1]
    c = w // 2
    lo, hi = max(c - 2, 0), min(c + 2, w - 1)
    dt = (hi - lo) * frame_interval
    mid = segments[:, :, segments.shape[2] // 2, :]  # (N, 2, W)
    forward = (mid[:, 0, hi] - mid[:, 0, lo]) / dt
    lateral = np.abs(mid[:, 1, hi] - mid[:, 1, lo]) / dt
    centre = segments[..., c]  # (N, 2, P)
    length = np.sqrt((np.diff(centre, axis=2) ** 2).sum(axis=1)).sum(axis=1)
    head = centre[:, :, -1] - centre[:, :, -2]
    body = centre[:, :, -2] - centre[:, :, 0]
    angle = np.abs(np.arctan2(head[:, 0] * body[:, 1] - head[:, 1] * body[:, 0],
                              (head * body).sum(axis=1)))
    rel = segments[:, :, -1, :] - mid  # head relative to middle (N, 2, W)
    head_speed = np.sqrt((np.diff(rel, axis=2) ** 2).sum(axis=1)).mean(axis=1) / frame_interval
    return np.stack([forward, lateral, length, angle, head_speed], axis=1)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(pred & truth)
    if tp == 0:
        return 0.0
    return 2 * tp / (pred.sum() + truth.sum())


@dataclass
class ThresholdTagger:
    """The kinematic-threshold cascade; `fit` then `predict` on feature arrays."""

    labels: list[str]
    rules: list[tuple[int, int, str, float]] = field(default_factory=list)  # (label, feature, dir, threshold)
    default: int = 0

    def fit(self, features: np.ndarray, truth: np.ndarray) -> ThresholdTagger:
        open_ = np.ones(len(truth), dtype=bool)
        self.rules = []
        for prefix, feature, direction in RULES:
            label = next((i for i, n in enumerate(self.labels) if n.startswith(prefix)), None)
            if label is None:
                continue
            values = features[open_, FEATURES.index(feature)]
            target = truth[open_] == label
            candidates = np.quantile(values, np.linspace(0.005, 0.995, 199))
            scores = [_f1(values < th if direction == "<" else values > th, target) for th in candidates]
            best = float(candidates[int(np.argmax(scores))])
            self.rules.append((label, FEATURES.index(feature), direction, best))
            hit = features[:, FEATURES.index(feature)]
            hit = hit < best if direction == "<" else hit > best
            open_ &= ~hit
        run = next((i for i, n in enumerate(self.labels) if n.startswith("run")), 0)
        self.default = run
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = np.full(len(features), -1)
        for label, feature, direction, threshold in self.rules:
            values = features[:, feature]
            hit = (values < threshold) if direction == "<" else (values > threshold)
            out[(out < 0) & hit] = label
        out[out < 0] = self.default
        return out


@dataclass
class BoostingTagger:
    """Histogram gradient boosting on windowed kinematic features; `fit` then `predict`.

    Features are rows of `maggotflow.kinematics.window_features`; truth and predictions are
    class indices. Needs scikit-learn (the project's `forest` extra), imported by `fit`.
    `fit` trains on at most `max_samples` training steps, drawn uniformly at random without
    replacement with the seed: 200k steps x 36 features x 7 classes take 60-70 s on one CPU
    thread at the full 250 rounds (all of 300k steps would take up to ~2.5 min). Early
    stopping holds out `validation_fraction` of those steps at random (steps of one larva
    are correlated, so it stops a little late; it never sees the test files).
    """

    max_iter: int = 250  # boosting rounds (one tree per class each), at most
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 1e-3
    validation_fraction: float = 0.1  # held out of the training steps for early stopping
    n_iter_no_change: int = 15  # stop when the validation loss has not improved for this many rounds
    class_weight: str | None = None  # None or "balanced" (weights 1/class frequency)
    max_samples: int | None = 200_000  # training steps used at most (None: all)
    model: Any = field(default=None, repr=False)  # the fitted HistGradientBoostingClassifier

    def fit(self, features: np.ndarray, truth: np.ndarray, seed: int = 0) -> BoostingTagger:
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier
        except ImportError:
            raise ImportError("the gradient-boosting baseline needs scikit-learn: "
                              "pip install 'maggotflow[forest]'") from None
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        features, truth = np.asarray(features, dtype=np.float32), np.asarray(truth)
        if self.max_samples is not None and len(truth) > self.max_samples:
            keep = np.random.default_rng(seed).choice(len(truth), self.max_samples, replace=False)
            features, truth = features[keep], truth[keep]
        self.model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=True, validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change, class_weight=self.class_weight, random_state=seed,
        ).fit(features, truth)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("BoostingTagger.predict before fit")
        return np.asarray(self.model.predict(np.asarray(features, dtype=np.float32)), dtype=np.int64)
