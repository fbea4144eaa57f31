"""Reference baselines that give the tagger's macro-F1 a meaning.

- majority: every step gets the most frequent training label.
- kinematic thresholds: a fixed cascade of one-feature rules (hunch: body shortened; back:
  moving backwards; roll: moving sideways; cast: head bent; stop: still; small motion:
  nearly still; otherwise run), each threshold fitted on the training steps to maximise that
  behaviour's F1 among the steps the earlier rules left. Features come from the same
  normalised 2 s segments the tagger sees, so the comparison is about the model only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def fit(self, features: np.ndarray, truth: np.ndarray) -> "ThresholdTagger":
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
