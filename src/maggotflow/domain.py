"""Domain check: how unlike a tagger's training data each predicted file and each larva is.

A tagger is only as good as its training data are like the data it tags. A new tracker, body
shape, frame rate or lab can move the labels far from their validation figures without a
word; this check says so, per file and per larva, in every predicted `.label`
(`metadata.maggotflow.domain_check`, written by `maggotflow.prediction`).

The score (method `METHOD`)
    Per segment, the 36 windowed kinematic features (`maggotflow.kinematics.window_features`:
    body lengths/s and radians, from the normalised segments of the model's first segment
    spec) are each mapped to a standard normal score through the training segments'
    quantiles (`N_LEVELS` quantiles from 0.1 % to 99.9 %, linear in between; a value beyond
    them counts as the extreme quantile, so one tracking glitch moves a mean by a bounded
    amount). A larva's (a file's) *signature* is the mean of these scores over its segments
    (every time step of the larva; of all the file's larvae), and its score is the squared
    Mahalanobis distance of that signature from the training mean, per feature:

        score = (s - mu)' S^-1 (s - mu) / 36

    S is the covariance of the signatures of training larvae (larvae with at least
    `MIN_LARVA_SEGMENTS` sampled segments), its correlations shrunk towards the identity
    (Ledoit-Wolf) so that a few larvae still give a usable matrix. So a training larva
    scores about 1 on average; a file, whose mean averages its larvae, less (~0.05-0.25 for
    the simulator's in-domain files, 1.6-4 for other regimes').
    Why means rather than per-segment distances: behaviour varies far more between
    segments than labs do (a cast is unlike a run), so per-segment distances averaged over
    a file hardly move for another regime (measured: the simulator's regime B files
    scored inside regime A's range). A mean over a larva or a file averages behaviour out
    and keeps what is systematic (speeds, noise, body model, frame rate). The between-larva
    covariance weighs each direction by how much training larvae vary along it: many
    larvae estimate it, where a between-file covariance would need tens of files.

The thresholds (one-sided 95 % prediction bounds, `BOUND`: at most 5 % false alarms)
    File: `exp(mean + t(0.95, n-1) * sd * sqrt(1 + 1/n))` of the log scores of n files
    that the statistics did not see: the validation files (scored with the reference), and
    every training file scored by a reference fitted without it (`CROSS_FIT_FOLDS`-fold
    cross-fitting over the training files; over larvae, giving no file score, when a
    single labelled file was split by larva). Under normal log scores a new in-domain file
    then exceeds it with probability 5 % whatever n; a few files give a wide bound, not
    false alarms. Cross-fitting is there because the dataset's few validation files (5 of
    24 in the benchmark) made the bound erratic (between seeds 0.15 to 0.8, flagging 3 of
    8 in-domain files once); the training files' scores are out-of-sample like the
    validation files', from a reference fitted on less data (so, if anything, higher). With
    fewer than 2 such files the file threshold is the larva threshold at the median
    validation larva's duration (a file's mean varies less than one larva's: conservative).
    Larva: a larva's score falls with its duration T (its signature is a mean over T
    seconds: measured, larvae of 2 s score ~100 times those of 60 s), so the threshold of a
    larva tracked for T s is `larva_threshold + larva_threshold_s / T`: the typical score at
    duration T, `alpha + beta / T` (least squares on relative errors, alpha, beta >= 0),
    times the 95 % prediction bound of the log ratios `score / (alpha + beta / T)`, both
    fitted on the validation larvae and the cross-fitted training larvae together. Labels
    record a larva's *relative score*, its score over its threshold (above 1: unlike).
    Validation larvae are whole larvae drawn one per file in turn (seeded) up to
    `MAX_VALIDATION_SEGMENTS` segments, at most `MAX_LARVA_SEGMENTS` each (evenly spaced),
    so their scores are those prediction computes; they cover the labelled steps only.

Simulated training data
    A tagger trained on `maggotflow simulate` files only (every training source's track file
    lies under a folder holding the simulator's README, `maggotflow.report.is_simulated`;
    recorded as `training.simulated_files` of `training.files`) judges every file that is not
    simulated (the same test on its track file's path) `unlike_training`, whatever its
    score: it never saw a real larva. Simulated files copied out of their folder count as
    real (a warning too many rather than one too few).

What a label records (`DomainReference.check`; keys in this order)::

    "domain_check": {"verdict": "ok" | "unlike_training", "score": 0.211, "threshold": 0.6,
                     "reason": "...",              (only when unlike_training)
                     "larvae": {"checked": 12, "unlike_training": 1,
                                "relative_scores": {"<larva id>": 0.4, ...}},  (the
                                                    `MAX_LISTED` highest when more larvae)
                     "trained_on_simulated": false, "file_simulated": ... (when true),
                     "method": METHOD}

Scores are rounded to `DIGITS` significant digits and verdicts taken on the rounded values:
the features of a segment can differ in their last float32 bit with the batch it is computed
in (vectorised angle functions) or the segment builder, which moves unrounded scores by
~1e-10 relative (measured), so labels keep the same bytes whatever the batch size. A model
folder without a reference (made before this check, or trained without validation samples)
records `{"verdict": null, "reason": ...}` (`not_checked`): nothing is claimed.

Costs: `fit_reference` reads at most 50,000 training and 50,000 validation segments (a few
seconds on one CPU core); prediction adds the features and a quantile lookup per segment
(`segment_signatures`, on the segments' device), far less than the encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from maggotflow.kinematics import FEATURE_NAMES, window_features
from maggotflow.model import MAX_POINTS, MAX_WINDOW
from maggotflow.runtables import DOMAIN_CHECK_KEY, DOMAIN_VERDICTS
from maggotflow.segments import SegmentSpec

METHOD = "kinematic-feature-means/1"
N_FEATURES = len(FEATURE_NAMES)
N_LEVELS = 101
LEVELS = np.linspace(0.001, 0.999, N_LEVELS)  # quantile levels of the knots
BOUND = 0.95  # one-sided prediction bound: at most 5 % false alarms on in-domain data
MAX_TRAIN_SEGMENTS = 50_000
MAX_VALIDATION_SEGMENTS = 50_000
MAX_LARVA_SEGMENTS = 2_000  # segments of one validation larva (evenly spaced beyond)
MIN_LARVA_SEGMENTS = 20  # sampled segments of a training larva whose signature enters S
CROSS_FIT_FOLDS = 5
MAX_LISTED = 1_000  # larva scores listed in a label (the highest ones beyond)
DIGITS = 4  # significant digits of recorded scores and thresholds
MAX_COUNT = 2 ** 53  # bound of the counts a reference records
VERDICTS = DOMAIN_VERDICTS  # ok, unlike_training
RECORD_KEY = DOMAIN_CHECK_KEY  # the record's key in a label's metadata.maggotflow (and in config.json)


def _z_levels() -> np.ndarray:
    from statistics import NormalDist

    normal = NormalDist()
    return np.array([normal.inv_cdf(p) for p in LEVELS])


_Z = _z_levels()


def rounded(x: float) -> float:
    """`x` with DIGITS significant digits (what labels and config.json record)."""
    return float(f"{float(x):.{DIGITS}g}")


def prediction_bound(values: np.ndarray, level: float = BOUND) -> float:
    """One-sided `level` prediction bound for one more draw of a normal sample of n >= 2
    `values`: mean + t(level, n-1) * sd * sqrt(1 + 1/n)."""
    from scipy.special import stdtrit  # the t quantile

    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        raise ValueError(f"a prediction bound needs at least 2 values, got {n}")
    return float(x.mean() + stdtrit(n - 1, level) * x.std(ddof=1) * math.sqrt(1 + 1 / n))


def _log(score: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(score, 1e-12))


# --------------------------------------------------------------------------------------
# The reference


@dataclass(eq=False)
class DomainReference:
    """What a model folder keeps of its training data for the domain check (config.json
    "domain_check"; see the module docstring).

    spec: the SegmentSpec the statistics were computed on (the tagger's; the first member's
    for an ensemble). knots (F, N_LEVELS): feature values at `LEVELS`, non-decreasing per
    feature. centre (F,): mean normal score of the training segments. covariance (F, F):
    shrunk covariance of training larva signatures. file_threshold: a file scoring above it
    is `unlike_training`; a larva of duration T s is above `larva_threshold +
    larva_threshold_s / T`. training: {"files", "simulated_files", "segments", "larvae"};
    validation: {"files", "larvae", "segments", "cross_fitted_files", "cross_fitted_larvae"}
    (counts).
    """

    spec: SegmentSpec
    knots: np.ndarray
    centre: np.ndarray
    covariance: np.ndarray
    file_threshold: float = 1.0
    larva_threshold: float = 1.0
    larva_threshold_s: float = 0.0
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.knots = np.ascontiguousarray(self.knots, dtype=np.float64)
        self.centre = np.asarray(self.centre, dtype=np.float64)
        self.covariance = np.asarray(self.covariance, dtype=np.float64)
        if self.knots.shape != (N_FEATURES, N_LEVELS) or self.centre.shape != (N_FEATURES,) \
                or self.covariance.shape != (N_FEATURES, N_FEATURES):
            raise ValueError("domain reference arrays have the wrong shape")
        if not (np.all(np.isfinite(self.knots)) and np.all(np.isfinite(self.centre))
                and np.all(np.isfinite(self.covariance))):
            raise ValueError("domain reference holds values that are not finite numbers")
        if np.any(np.diff(self.knots, axis=1) < 0):
            raise ValueError("domain reference quantiles are not in increasing order")
        if not np.allclose(self.covariance, self.covariance.T):
            raise ValueError("domain reference covariance is not symmetric")
        try:
            chol = np.linalg.cholesky(self.covariance)
        except np.linalg.LinAlgError:
            raise ValueError("domain reference covariance is not positive definite") from None
        self._whitening = np.linalg.inv(chol)  # (F, F): |W d|^2 = d' S^-1 d
        for name in ("file_threshold", "larva_threshold", "larva_threshold_s"):
            value = getattr(self, name)
            positive = name != "larva_threshold_s"  # the per-second term may be 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not (value > 0 if positive else value >= 0):
                raise ValueError(f"domain reference {name} {value!r} is not a number {'>' if positive else '>='} 0")
        self._device_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def trained_on_simulated(self) -> bool:
        """True when every training file was simulated (`maggotflow simulate`)."""
        files = int(self.training.get("files", 0))
        return files > 0 and int(self.training.get("simulated_files", 0)) == files

    # ------------------------------------------------------------------ scoring
    def segment_signatures(self, segments: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normal scores (N, F) float32 of segments (N, 2, P, W) of the reference's spec,
        on the segments' device (a numpy array: on the CPU). Each row depends on its segment
        only (to float32 rounding: see the module docstring). A larva's signature is the mean
        of its rows."""
        if isinstance(segments, np.ndarray):
            segments = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32))
        with torch.no_grad():
            features = window_features(segments, self.spec.frame_interval)  # (N, F) float32
            return self._normal_scores(features)

    def _normal_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, F) -> normal scores (N, F) float32 through the quantile knots: the
        mean of the interpolations from the left and from the right, so that a value equal
        to tied knots gets their middle score; a non-finite value scores 0."""
        key = str(features.device)
        if key not in self._device_tables:
            self._device_tables[key] = (torch.as_tensor(self.knots, dtype=torch.float32, device=features.device),
                                        torch.as_tensor(_Z, dtype=torch.float32, device=features.device))
        knots, z = self._device_tables[key]
        x = features.to(torch.float32).T.contiguous()  # (F, N)
        last = knots.shape[1] - 1
        out = torch.zeros_like(x)
        for side in ("left", "right"):
            i = torch.searchsorted(knots, x, side=side)
            lo, hi = (i - 1).clamp(0, last), i.clamp(0, last)
            k_lo, k_hi = knots.gather(1, lo), knots.gather(1, hi)
            width = k_hi - k_lo
            t = torch.where(width > 0, (x - k_lo) / torch.where(width > 0, width, 1.0), 0.0).clamp(0.0, 1.0)
            out += z[lo] + t * (z[hi] - z[lo])
        return torch.nan_to_num(0.5 * out, nan=0.0).T  # (N, F)

    def scores(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Scores (U,) float64 of units (larvae or files) from their signature sums (U, F)
        and segment counts (U,): d' S^-1 d / F with d = sums / counts - centre."""
        sums = np.asarray(sums, dtype=np.float64).reshape(-1, N_FEATURES)
        counts = np.maximum(np.asarray(counts, dtype=np.float64).reshape(-1), 1.0)
        w = (sums / counts[:, None] - self.centre) @ self._whitening.T
        return (w * w).sum(axis=1) / N_FEATURES

    def larva_thresholds(self, durations_s: np.ndarray) -> np.ndarray:
        """The score threshold of larvae tracked for `durations_s` (s; floored at one
        frame interval): larva_threshold + larva_threshold_s / T."""
        t = np.maximum(np.asarray(durations_s, dtype=np.float64), self.spec.frame_interval)
        return self.larva_threshold + self.larva_threshold_s / t

    def check(self, larvae: Mapping[str, tuple[np.ndarray, int, float]], file_simulated: bool | None = None) -> dict:
        """The `domain_check` record of one file (see the module docstring).

        larvae: larva id -> (signature sum (F,), number of segments, duration in s) of every
        larva tagged. file_simulated: whether the file is simulated
        (`maggotflow.report.is_simulated`); looked at only when the tagger was trained on
        simulated data only.
        """
        ids = list(larvae)
        sums = np.array([np.asarray(larvae[i][0], dtype=np.float64) for i in ids]).reshape(-1, N_FEATURES)
        counts = np.array([larvae[i][1] for i in ids], dtype=np.float64)
        durations = np.array([larvae[i][2] for i in ids], dtype=np.float64)
        file_score = rounded(self.scores(sums.sum(axis=0), counts.sum())[0]) if ids else 0.0
        relative = [rounded(s) for s in self.scores(sums, counts) / self.larva_thresholds(durations)] if ids else []
        threshold = rounded(self.file_threshold)
        unlike = file_score > threshold
        reason = f"score {file_score:g} above the threshold {threshold:g}" if unlike else ""
        if self.trained_on_simulated and not file_simulated:
            unlike = True
            reason = "; ".join(r for r in (reason, "the tagger was trained on simulated larvae only "
                                                   "(maggotflow simulate) and this file is not simulated") if r)
        record: dict[str, Any] = {"verdict": VERDICTS[unlike], "score": file_score, "threshold": threshold}
        if reason:
            record["reason"] = reason
        listed = range(len(ids))
        if len(ids) > MAX_LISTED:
            listed = sorted(sorted(listed, key=lambda k: -relative[k])[:MAX_LISTED])
        record["larvae"] = {"checked": len(ids), "unlike_training": sum(r > 1 for r in relative),
                            "relative_scores": {ids[k]: relative[k] for k in listed}}
        record["trained_on_simulated"] = self.trained_on_simulated
        if self.trained_on_simulated:
            record["file_simulated"] = bool(file_simulated)
        record["method"] = METHOD
        return record

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        """JSON-ready (config.json "domain_check"); `from_dict` reads it back exactly."""
        return {
            "method": METHOD,
            "segment_spec": self.spec.to_dict(),
            "features": list(FEATURE_NAMES),
            "levels": [rounded(p) for p in LEVELS],
            "knots": [[_stored(v) for v in row] for row in self.knots],
            "centre": [_stored(v) for v in self.centre],
            "covariance": [[_stored(v) for v in row] for row in self.covariance],
            "thresholds": {"file": rounded(self.file_threshold), "larva": rounded(self.larva_threshold),
                           "larva_per_s": rounded(self.larva_threshold_s), "bound": BOUND},
            "training": {k: int(v) for k, v in self.training.items()},
            "validation": {k: int(v) for k, v in self.validation.items()},
        }

    @classmethod
    def from_dict(cls, d: Any) -> "DomainReference":
        """A reference from `to_dict`'s dict; ValueError (one line) for anything else. Every
        list must have its fixed size (36 features, N_LEVELS quantiles) before it is read."""
        if not isinstance(d, dict):
            raise ValueError("domain_check is not a JSON object")
        if d.get("method") != METHOD:
            raise ValueError(f"domain_check method {d.get('method')!r} is not one this maggotflow knows ({METHOD})")
        if d.get("features") != list(FEATURE_NAMES):
            raise ValueError("domain_check features are not maggotflow's 36 kinematic features")
        spec = d.get("segment_spec")
        if not isinstance(spec, dict) or set(spec) - {"window", "frame_interval", "n_points", "interpolate"} \
                or not isinstance(spec.get("interpolate", True), bool):
            raise ValueError("domain_check segment_spec is not a segment spec")
        spec = SegmentSpec(window=_whole(spec.get("window"), "segment window", 2, MAX_WINDOW),
                           frame_interval=_number(spec.get("frame_interval"), "segment frame_interval"),
                           n_points=_whole(spec.get("n_points"), "segment n_points", 3, MAX_POINTS),
                           interpolate=spec.get("interpolate", True))
        knots = _matrix(d.get("knots"), "knots", N_FEATURES, N_LEVELS)
        centre = _matrix([d.get("centre")], "centre", 1, N_FEATURES)[0]
        covariance = _matrix(d.get("covariance"), "covariance", N_FEATURES, N_FEATURES)
        thresholds = d.get("thresholds")
        if not isinstance(thresholds, dict):
            raise ValueError("domain_check thresholds is not a JSON object")
        counts = {}
        for section in ("training", "validation"):
            values = d.get(section, {})
            if not isinstance(values, dict) or len(values) > 8:
                raise ValueError(f"domain_check {section} is not a small JSON object")
            counts[section] = {str(k): _whole(v, f"{section} {k}", 0, MAX_COUNT) for k, v in values.items()}
        return cls(spec=spec, knots=knots, centre=centre, covariance=covariance,
                   file_threshold=_number(thresholds.get("file"), "file threshold"),
                   larva_threshold=_number(thresholds.get("larva"), "larva threshold"),
                   larva_threshold_s=_number(thresholds.get("larva_per_s"), "larva_per_s threshold", 0.0),
                   training=counts["training"], validation=counts["validation"])


def _stored(v: float) -> float:
    return float(f"{float(v):.9g}")


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"domain_check {what} {value!r} is not a whole number in {low}..{high}")
    return value


def _number(value: Any, what: str, low: float | None = None) -> float:
    """A finite number > 0 (>= `low` when given); ValueError otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and (value > 0 if low is None else value >= low)
    if not ok:
        raise ValueError(f"domain_check {what} {value!r} is not a number {'> 0' if low is None else f'>= {low:g}'}")
    return float(value)


def _matrix(rows: Any, what: str, n_rows: int, n_columns: int) -> np.ndarray:
    """A list of `n_rows` lists of `n_columns` finite numbers -> array; ValueError otherwise
    (the lengths are checked before anything is converted)."""
    if not isinstance(rows, list) or len(rows) != n_rows \
            or not all(isinstance(r, list) and len(r) == n_columns for r in rows):
        raise ValueError(f"domain_check {what} is not a {n_rows} x {n_columns} table of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for r in rows for v in r):
        raise ValueError(f"domain_check {what} holds values that are not finite numbers")
    return np.array(rows, dtype=np.float64)


def not_checked(reason: str) -> dict:
    """The `domain_check` record of a file tagged by a model without a reference."""
    return {"verdict": None, "reason": reason}


def describe(record: Mapping[str, Any]) -> str:
    """One line for the console about a file judged `unlike_training` (empty otherwise)."""
    if record.get("verdict") != "unlike_training":
        return ""
    larvae = record.get("larvae") or {}
    return (f"unlike the tagger's training data ({record.get('reason', '')}; {larvae.get('unlike_training', 0)} of "
            f"{larvae.get('checked', 0)} larvae unlike): its labels may be unreliable "
            "(metadata.maggotflow.domain_check of its .label)")


def run_signatures(reference: DomainReference, run) -> dict[str, tuple[np.ndarray, int, float]]:
    """larva id -> (signature sum (F,), segments, duration s) of every larva of `run` (a
    `Run` in memory: a segment per time step, as prediction builds them); larvae that cannot
    be normalised are left out, as prediction leaves them out. For `check`."""
    from maggotflow.segments import build_segments, larva_length

    out = {}
    for track in run.tracks:
        length = larva_length(track)
        if np.isfinite(length) and length > 0:
            rows = reference.segment_signatures(build_segments(track, reference.spec, length=length))
            out[track.id] = (rows.double().sum(dim=0).numpy(), int(rows.shape[0]), float(track.t[-1] - track.t[0]))
    return out


# --------------------------------------------------------------------------------------
# Fitting on a dataset


def fit_reference(dataset, train_idx: np.ndarray, val_idx: np.ndarray, seed: int = 0,
                  log: Callable[[str], None] = print, cross_fit: bool = True) -> DomainReference | None:
    """The domain reference of a tagger trained on `dataset` (`maggotflow.dataset.Dataset`;
    `train_idx`, `val_idx`: its training and validation rows).

    Statistics (quantiles, centre, covariance) from at most MAX_TRAIN_SEGMENTS training
    segments (uniform seeded sample); thresholds from whole validation larvae and their
    files, and (`cross_fit`) from each training file (larva, with a single training file)
    scored by a reference fitted without it (see the module docstring). Returns None, and
    logs why, when there are no validation samples or fewer than 2 larvae to set thresholds
    on: the tagger's labels then record `not_checked`.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if val_idx.size == 0 or train_idx.size == 0:
        log("domain check: no validation samples, no threshold can be set; this tagger's labels will say "
            "'not checked'")
        return None
    rng = np.random.default_rng([int(seed), 21])
    spec = dataset.spec
    sample = np.sort(rng.choice(train_idx, min(train_idx.size, MAX_TRAIN_SEGMENTS), replace=False))
    features = window_features(dataset.read_segments(sample), spec.frame_interval)  # (n, F) float32
    larva, _ = _larvae(dataset, sample)
    reference, n_larvae = _fit(spec, features, larva)

    rows, unit, unit_file, durations = _validation_larvae(dataset, val_idx, rng)
    sums, counts = _unit_sums(reference.segment_signatures(dataset.read_segments(rows)).numpy(), unit)
    files = np.unique(unit_file)
    file_scores = [reference.scores(sums[unit_file == f].sum(axis=0), counts[unit_file == f].sum())[0]
                   for f in files]
    larva_scores, larva_durations = reference.scores(sums, counts).tolist(), durations.tolist()
    crossed = 0
    if cross_fit:
        crossed_files, crossed_larvae, crossed_durations = _cross_fitted_scores(
            spec, features, larva, np.asarray(dataset.file)[sample], np.asarray(dataset.t)[sample], rng)
        crossed = len(crossed_files)
        file_scores += crossed_files
        larva_scores += crossed_larvae
        larva_durations += crossed_durations
    if len(larva_scores) < 2:
        log(f"domain check: {len(larva_scores)} larva to set thresholds on, too few; this tagger's labels will "
            "say 'not checked'")
        return None
    larva_scores = np.array(larva_scores)
    larva_durations = np.maximum(np.array(larva_durations), spec.frame_interval)
    alpha, beta = _duration_model(larva_scores, larva_durations)
    reference.larva_threshold, reference.larva_threshold_s = alpha, beta
    ratio = math.exp(prediction_bound(_log(larva_scores / reference.larva_thresholds(larva_durations))))
    reference.larva_threshold, reference.larva_threshold_s = rounded(ratio * alpha), rounded(ratio * beta)
    if len(file_scores) >= 2:
        reference.file_threshold = rounded(math.exp(prediction_bound(_log(np.array(file_scores)))))
    else:
        reference.file_threshold = rounded(reference.larva_thresholds(np.median(durations))[()])
    reference.training = {"files": 0, "simulated_files": 0, "segments": int(sample.size), "larvae": n_larvae}
    reference.training.update(_simulated_sources(dataset))
    reference.validation = {"files": int(files.size), "larvae": int(unit_file.size), "segments": int(rows.size),
                            "cross_fitted_files": crossed, "cross_fitted_larvae": larva_scores.size - unit_file.size}
    reference = DomainReference.from_dict(reference.to_dict())  # exactly what a saved folder holds
    log(f"domain check: statistics of {sample.size} training segments; 95 % prediction bounds: file score "
        f"{reference.file_threshold:g} (from {files.size} validation + {crossed} cross-fitted training files), "
        f"larva score {reference.larva_threshold:g} + {reference.larva_threshold_s:g} / duration_s (from "
        f"{unit_file.size} validation + {larva_scores.size - unit_file.size} cross-fitted training larvae)"
        + ("; trained on simulated data only: files that are not simulated will be flagged"
           if reference.trained_on_simulated else ""))
    return reference


def _fit(spec: SegmentSpec, features: np.ndarray, larva: np.ndarray) -> tuple[DomainReference, int]:
    """Reference statistics (thresholds 1) of training features (n, F) whose rows belong to
    larvae `larva` (n,) (any integer labels); and the number of larvae in the covariance."""
    knots = np.quantile(features.astype(np.float64), LEVELS, axis=0).T  # (F, K), non-decreasing
    knots = np.maximum.accumulate(np.vectorize(_stored)(knots), axis=1)  # as config.json keeps them
    probe = DomainReference(spec, knots, np.zeros(N_FEATURES), np.eye(N_FEATURES))
    signatures = probe._normal_scores(torch.from_numpy(np.ascontiguousarray(features))).numpy()
    _, unit = np.unique(larva, return_inverse=True)
    sums, counts = _unit_sums(signatures, unit.reshape(-1))
    enough = counts >= MIN_LARVA_SEGMENTS
    if enough.sum() >= 3:
        covariance = shrunk_covariance(sums[enough] / counts[enough, None])
    else:  # too few larvae: the segments' own covariance (wider: a conservative metric)
        covariance = shrunk_covariance(signatures)
    centre = signatures.astype(np.float64).mean(axis=0)
    return DomainReference(spec, knots, np.vectorize(_stored)(centre), np.vectorize(_stored)(covariance)), \
        int(enough.sum())


def _cross_fitted_scores(spec: SegmentSpec, features: np.ndarray, larva: np.ndarray, file: np.ndarray,
                         times: np.ndarray, rng: np.random.Generator) -> tuple[list[float], list[float], list[float]]:
    """Scores of the training files and larvae (their sampled segments) under references
    fitted on the other folds (CROSS_FIT_FOLDS folds of whole files; of whole larvae, and no
    file score, when there is a single training file): (file scores, larva scores, larva
    durations in s); all empty with a single training larva."""
    by_file = np.unique(file).size >= 2
    units = rng.permutation(np.unique(file if by_file else larva))
    if units.size < 2:
        return [], [], []
    file_scores, larva_scores, durations = [], [], []
    for fold in np.array_split(units, min(CROSS_FIT_FOLDS, units.size)):
        held = np.isin(file if by_file else larva, fold)
        reference, _ = _fit(spec, features[~held], larva[~held])
        signatures = reference._normal_scores(torch.from_numpy(np.ascontiguousarray(features[held]))).numpy()
        if by_file:
            _, unit = np.unique(file[held], return_inverse=True)
            sums, counts = _unit_sums(signatures, unit.reshape(-1))
            file_scores += reference.scores(sums, counts).tolist()
        _, unit = np.unique(larva[held], return_inverse=True)
        unit = unit.reshape(-1)
        sums, counts = _unit_sums(signatures, unit)
        larva_scores += reference.scores(sums, counts).tolist()
        t = times[held]
        durations += (_unit_max(t, unit) + _unit_max(-t, unit)).tolist()  # span: max - min
    return file_scores, larva_scores, durations


def _unit_max(values: np.ndarray, unit: np.ndarray) -> np.ndarray:
    out = np.full(int(unit.max(initial=-1)) + 1, -np.inf)
    np.maximum.at(out, unit, values)
    return out


def _duration_model(scores: np.ndarray, durations: np.ndarray) -> tuple[float, float]:
    """alpha, beta >= 0 of the typical score alpha + beta / T of larvae of duration T (s):
    least squares on relative errors (reweighted 5 times), so long and short larvae count
    alike."""
    x = np.stack([np.ones_like(durations), 1.0 / durations], axis=1)
    weights = np.ones_like(scores)
    coef = np.array([max(float(np.median(scores)), 1e-6), 0.0])
    for _ in range(5):
        root = np.sqrt(weights)
        fitted_coef = np.linalg.lstsq(x * root[:, None], scores * root, rcond=None)[0]
        if not np.all(np.isfinite(fitted_coef)):
            break
        coef = np.maximum(fitted_coef, [1e-6, 0.0])
        weights = 1.0 / (x @ coef) ** 2
    return float(coef[0]), float(coef[1])


def shrunk_covariance(x: np.ndarray) -> np.ndarray:
    """Covariance (F, F) of rows `x` (n, F), its correlations shrunk towards the identity by
    the Ledoit-Wolf intensity (2004); standard deviations floored at 1e-3 of their mean."""
    x = np.asarray(x, dtype=np.float64)
    n, f = x.shape
    centred = x - x.mean(axis=0)
    sd = centred.std(axis=0)
    sd = np.maximum(sd, 1e-3 * max(float(sd.mean()), 1e-6))
    y = centred / sd
    s = y.T @ y / n
    delta = ((s - np.eye(f)) ** 2).sum() / f
    beta = max(((y * y).sum(axis=1) ** 2).mean() - (s ** 2).sum(), 0.0) / (n * f)
    shrink = 1.0 if delta <= 0 else min(beta, delta) / delta
    correlation = shrink * np.eye(f) + (1 - shrink) * s
    np.fill_diagonal(correlation, 1.0)
    return correlation * np.outer(sd, sd)


def _larvae(dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `rows` its larva's index among the larvae present (a larva: file and
    larva id), and per larva its file index."""
    files = np.asarray(dataset.file)[rows].astype(np.int64)
    _, ids = np.unique(np.asarray(dataset.larva)[rows].astype(str), return_inverse=True)
    n_ids = int(ids.max(initial=0)) + 1
    unique, unit = np.unique(files * n_ids + ids.reshape(-1), return_inverse=True)
    return unit.reshape(-1), unique // n_ids


def _unit_sums(signatures: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (larva or file) the sum (U, F) float64 of its rows' signatures, and their count (U,)."""
    n_units = int(unit.max(initial=-1)) + 1
    sums = np.zeros((n_units, signatures.shape[1]))
    np.add.at(sums, unit, signatures.astype(np.float64))
    return sums, np.bincount(unit, minlength=n_units).astype(np.float64)


def _validation_larvae(dataset, val_idx: np.ndarray, rng: np.random.Generator):
    """Whole validation larvae (at most MAX_LARVA_SEGMENTS rows each, evenly spaced), one
    per file in turn (the first round always complete) until MAX_VALIDATION_SEGMENTS rows.
    Returns rows (sorted), the larva of each row, each larva's file and duration (s: the
    span of its centre times)."""
    unit, unit_file = _larvae(dataset, val_idx)
    order = np.argsort(unit, kind="stable")
    bounds = np.searchsorted(unit[order], np.arange(unit_file.size + 1))
    by_file: dict[int, list[int]] = {}
    for u in rng.permutation(unit_file.size):
        by_file.setdefault(int(unit_file[u]), []).append(int(u))
    queues = [by_file[f] for f in sorted(by_file)]
    times = np.asarray(dataset.t)
    chosen, total, first = [], 0, True
    while any(queues) and (first or total < MAX_VALIDATION_SEGMENTS):
        for queue in queues:
            if queue and (first or total < MAX_VALIDATION_SEGMENTS):
                u = queue.pop(0)
                rows = val_idx[order[bounds[u]:bounds[u + 1]]]
                span = float(times[rows].max() - times[rows].min())
                if rows.size > MAX_LARVA_SEGMENTS:
                    rows = rows[np.linspace(0, rows.size - 1, MAX_LARVA_SEGMENTS).round().astype(np.int64)]
                chosen.append((u, rows, span))
                total += rows.size
        first = False
    chosen.sort(key=lambda item: item[0])
    rows = np.concatenate([r for _, r, _ in chosen])
    larva = np.repeat(np.arange(len(chosen)), [r.size for _, r, _ in chosen])
    order = np.argsort(rows, kind="stable")  # sorted rows read faster
    return (rows[order], larva[order], np.array([unit_file[u] for u, _, _ in chosen], dtype=np.int64),
            np.array([span for _, _, span in chosen]))


def _simulated_sources(dataset) -> dict[str, int]:
    """{"files": training files, "simulated_files": those under a `maggotflow simulate` folder}."""
    from maggotflow.report import is_simulated

    files = simulated = 0
    for source in dataset.sources:
        if source.get("split") not in ("train", "train+validation"):
            continue
        files += 1
        path = source.get("source_path") or source.get("path")
        simulated += bool(path) and is_simulated([Path(path)])
    return {"files": files, "simulated_files": simulated}
