"""Decision rules: from a tagger's per-step class scores to one label per time step.

A tagger's network gives K logits per time step. Two decisions are taken on top of them,
both fitted at the end of training (`maggotflow.training`) and stored in the tagger
instance (config.json "decision"), so that prediction applies exactly what was fitted:

1. Calibration offsets (logit adjustment). Class weights (balancing `auto`) make the
   network learn rare classes, but its argmax then over-predicts them (it approximates the
   balanced-error rule, not the macro-F1 rule). Per-class offsets `b` are added to the
   logits, `argmax(logits + b)`, and fitted on the validation split by coordinate ascent on
   macro-F1 (`maggotflow.metrics.macro_f1`, the number evaluation reports): each class's
   offset in turn takes the best of a grid of values, for a few rounds, starting from 0. A
   move must gain more than `MIN_GAIN` on validation, so noise does not move the offsets.

2. Temporal decoding (`decoder: hmm`). Behaviour comes in bouts; the per-step argmax
   ignores that. The decoder is a hidden Markov model over each larva's steps, decoded by
   Viterbi in log space (vectorised over larvae and classes, O(n K^2) per larva):
   - emissions: the calibrated log-probabilities `log_softmax(logits + b)`;
   - transitions, estimated from the dataset's label sequences (all its labelled steps,
     training and validation files alike: labels only, never test data; grouped by file and larva, split at gaps longer than `MAX_GAP_S`): each
     class's mean bout duration `tau_c` (s) and the jump probabilities `J[c, j]` between
     different classes (counts + 0.5, row-normalised). A larva whose median step is dt
     stays in c with probability `exp(-dt / tau_c)` and leaves to j with
     `(1 - exp(-dt / tau_c)) J[c, j]`, so one model serves every frame rate;
   - `strength` (a multiplier of the log transitions: 0 = per-step argmax, 1 = the
     estimated HMM) is chosen on the validation sequences among `STRENGTHS`, and with
     decoder `auto` the HMM is kept only if it beats the calibrated argmax there by
     `HMM_MIN_GAIN`.
   The offsets are fitted for the argmax first, then refitted for the chosen decoder
   (one round of steps of `REFIT_STEPS` around each offset), all on validation (at most
   `MAX_FIT_STEPS` steps of it, whole sequences, for the HMM). Bouts shorter than a step cannot be produced; there is
   no explicit minimum bout duration (the state-chain expansion is not implemented).

Without validation samples nothing is fitted (offsets 0, argmax). The per-step argmax with
zero offsets is exactly the decision of taggers made before decisions existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from maggotflow.metrics import confusion_matrix, macro_f1

DECODERS = ("argmax", "hmm", "auto")
MIN_GAIN = 1e-3  # macro-F1 an offset move must gain on validation (divided by K per class)
HMM_MIN_GAIN = 0.005  # macro-F1 the HMM must gain on validation over the calibrated argmax (auto)
OFFSET_GRID = np.round(np.arange(-3.0, 3.0001, 0.25), 2)  # candidate offsets (logit units)
STRENGTHS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # candidate multipliers of the log transitions
REFIT_STEPS = (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)  # offset changes tried for the HMM
MAX_FIT_STEPS = 200_000  # validation steps (whole sequences, seeded choice) used to fit the HMM
MAX_GAP_S = 1.0  # label sequences are split where consecutive steps are further apart
JUMP_PSEUDOCOUNT = 0.5


@dataclass
class Decision:
    """How a tagger turns logits into labels: offsets (K,), decoder and its HMM model.

    decoder: "argmax" or "hmm". mean_duration (K,) s and jump (K, K) (rows sum to 1,
    zero diagonal) are the HMM's transition model; strength scales its log transitions.
    """

    offsets: np.ndarray
    decoder: str = "argmax"
    mean_duration: np.ndarray | None = None
    jump: np.ndarray | None = None
    strength: float = 1.0
    fitted: dict = field(default_factory=dict)  # validation scores, for provenance

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.float64).reshape(-1)
        if self.decoder not in ("argmax", "hmm"):
            raise ValueError(f"decoder must be argmax or hmm, got {self.decoder!r}")
        if self.decoder == "hmm" and (self.mean_duration is None or self.jump is None):
            raise ValueError("an hmm decoder needs mean bout durations and jump probabilities")
        if self.mean_duration is not None:
            self.mean_duration = np.asarray(self.mean_duration, dtype=np.float64)
            self.jump = np.asarray(self.jump, dtype=np.float64)
            k = self.offsets.size
            if self.mean_duration.shape != (k,) or self.jump.shape != (k, k):
                raise ValueError(f"decision: {k} offsets but durations {self.mean_duration.shape} / "
                                 f"jumps {self.jump.shape}")
            if not (np.all(self.mean_duration > 0) and np.all(np.isfinite(self.jump)) and np.all(self.jump >= 0)):
                raise ValueError("decision: mean bout durations must be > 0 and jump probabilities >= 0")

    @classmethod
    def identity(cls, n_classes: int) -> "Decision":
        """Zero offsets, per-step argmax (the decision of an uncalibrated tagger)."""
        return cls(np.zeros(n_classes))

    @property
    def is_identity(self) -> bool:
        return self.decoder == "argmax" and not np.any(self.offsets)

    def to_dict(self) -> dict:
        d = {"offsets": [round(float(b), 6) for b in self.offsets], "decoder": self.decoder}
        if self.mean_duration is not None:
            d["mean_duration_s"] = [round(float(x), 6) for x in self.mean_duration]
            d["jump"] = [[round(float(x), 6) for x in row] for row in self.jump]
            d["strength"] = float(self.strength)
        if self.fitted:
            d["fitted"] = self.fitted
        return d

    @classmethod
    def from_dict(cls, d: dict | None, n_classes: int) -> "Decision":
        if not d:
            return cls.identity(n_classes)
        return cls(np.asarray(d["offsets"], dtype=np.float64), decoder=d.get("decoder", "argmax"),
                   mean_duration=d.get("mean_duration_s"), jump=d.get("jump"),
                   strength=float(d.get("strength", 1.0)), fitted=dict(d.get("fitted", {})))

    # -- applying it
    def log_transitions(self, dt: float) -> np.ndarray:
        """(K, K) log transition matrix for steps of `dt` s, scaled by `strength`."""
        return self.strength * log_transitions(self.mean_duration, self.jump, dt)

    def decode(self, logits: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
        """Class per step (n,) int64 of one larva from its logits (n, K) and times (n,) s."""
        return self.decode_many([logits], [t])[0]

    def decode_many(self, logits: Sequence[np.ndarray], times: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """`decode` for several larvae at once (Viterbi batched over larvae)."""
        scores = [np.asarray(x, dtype=np.float64) + self.offsets for x in logits]
        return self.smooth_many([s - _logsumexp(s) for s in scores], times)

    @property
    def temporal(self) -> bool:
        """Whether labels depend on neighbouring steps (an HMM with strength > 0)."""
        return self.decoder == "hmm" and self.strength > 0

    def smooth_many(self, log_probabilities: Sequence[np.ndarray],
                    times: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Classes per step from calibrated log-probabilities (offsets already applied):
        the argmax, or the HMM's Viterbi path per larva."""
        if not self.temporal:
            return [np.asarray(x).argmax(axis=1).astype(np.int64) for x in log_probabilities]
        # Larvae in groups of at most VITERBI_CELLS padded steps: a big file's larvae are
        # decoded a group at a time (each larva's path does not depend on the others).
        out: list[np.ndarray] = []
        group: list[int] = []
        longest = 0
        for i, x in enumerate(log_probabilities):
            n = len(x)
            if group and max(longest, n) * (len(group) + 1) > VITERBI_CELLS:
                out += self._viterbi_group(log_probabilities, times, group)
                group, longest = [], 0
            group.append(i)
            longest = max(longest, n)
        if group:
            out += self._viterbi_group(log_probabilities, times, group)
        return out

    def _viterbi_group(self, log_probabilities, times, group: list[int]) -> list[np.ndarray]:
        emissions = [np.asarray(log_probabilities[i], dtype=np.float64) for i in group]
        return viterbi_batch(emissions, [self.log_transitions(_median_step(times[i])) for i in group])


VITERBI_CELLS = 1 << 21  # padded (step, larva) cells decoded at once: ~100 MB of float64 scores for 6 classes


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _median_step(t: np.ndarray | None) -> float:
    if t is None or len(t) < 2:
        return 0.1
    dt = float(np.median(np.diff(np.asarray(t, dtype=np.float64))))
    return dt if dt > 0 else 0.1


def log_transitions(mean_duration: np.ndarray, jump: np.ndarray, dt: float) -> np.ndarray:
    """(K, K) log P(next class | class) over a step of `dt` s (see the module docstring)."""
    stay = np.exp(-dt / np.asarray(mean_duration, dtype=np.float64))
    a = (1.0 - stay)[:, None] * np.asarray(jump, dtype=np.float64)
    np.fill_diagonal(a, stay)
    with np.errstate(divide="ignore"):
        return np.log(a / a.sum(axis=1, keepdims=True))


def viterbi_batch(emissions: Sequence[np.ndarray], transitions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Most likely class sequences of several larvae (uniform start).

    emissions: per larva (n_i, K) log scores; transitions: per larva (K, K) log matrix.
    The time loop runs once over the longest larva, vectorised over larvae and classes.
    """
    if not emissions:
        return []
    k = emissions[0].shape[1]
    lengths = np.array([e.shape[0] for e in emissions])
    n_max, n_larvae = int(lengths.max()), len(emissions)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_larvae
    if n_max == 0:
        return out
    trans = np.stack(transitions)  # (L, K, K) from -> to
    em = np.zeros((n_max, n_larvae, k))
    for i, e in enumerate(emissions):
        em[: e.shape[0], i] = e
    back = np.zeros((n_max, n_larvae, k), dtype=np.int8 if k < 128 else np.int16)
    score = em[0].copy()
    for step in range(1, n_max):
        cand = score[:, :, None] + trans  # (L, from, to)
        best = cand.argmax(axis=1)  # (L, to)
        new = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0, :] + em[step]
        active = lengths > step
        score = np.where(active[:, None], new, score)
        back[step] = best
    # Backtrack all larvae together: a larva joins at its own last step.
    paths = np.zeros((n_max, n_larvae), dtype=np.int64)
    final = score.argmax(axis=1)
    cur = np.zeros(n_larvae, dtype=np.int64)
    rows = np.arange(n_larvae)
    for step in range(n_max - 1, -1, -1):
        cur = np.where(lengths - 1 == step, final, cur)
        paths[step] = cur
        if step:
            cur = np.where(lengths > step, back[step, rows, cur], cur)
    for i, n in enumerate(lengths):
        out[i] = paths[:n, i].copy()
    return out


# --------------------------------------------------------------------------------------
# Fitting


def sequences(groups: np.ndarray, t: np.ndarray, max_gap: float = MAX_GAP_S) -> list[np.ndarray]:
    """Row indices of each label sequence: rows grouped by `groups`, sorted by time, split
    where consecutive steps are more than `max_gap` s apart."""
    groups, t = np.asarray(groups), np.asarray(t, dtype=np.float64)
    order = np.lexsort((t, groups))
    g, tt = groups[order], t[order]
    cut = np.flatnonzero((g[1:] != g[:-1]) | (np.diff(tt) > max_gap)) + 1
    return [s for s in np.split(order, cut) if s.size]


def estimate_transitions(labels: np.ndarray, t: np.ndarray, seqs: Sequence[np.ndarray],
                         n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean bout duration (K,) s and jump matrix (K, K) from label sequences, or None when
    the sequences hold no bout of some class (e.g. a dataset of scattered samples).

    A bout's duration is its number of steps times the sequence's median step; bouts cut by
    a sequence end count too (they are at worst shorter than the truth)."""
    durations = [[] for _ in range(n_classes)]
    jumps = np.full((n_classes, n_classes), JUMP_PSEUDOCOUNT)
    np.fill_diagonal(jumps, 0.0)
    for rows in seqs:
        if rows.size < 2:
            continue
        lab = np.asarray(labels)[rows].astype(np.int64)
        dt = _median_step(np.asarray(t)[rows])
        change = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [lab.size]])
        for a, b in zip(starts, ends):
            durations[lab[a]].append((b - a) * dt)
        np.add.at(jumps, (lab[change - 1], lab[change]), 1.0)
    if any(not d for d in durations):
        return None
    mean = np.array([float(np.mean(d)) for d in durations])
    return mean, jumps / jumps.sum(axis=1, keepdims=True)


def _f1(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    return macro_f1(confusion_matrix(truth, predicted, k))


def fit_offsets(logits: np.ndarray, truth: np.ndarray, start: np.ndarray | None = None,
                rounds: int = 3) -> np.ndarray:
    """Per-class logit offsets maximising macro-F1 of `argmax(logits + b)` on (logits, truth),
    by coordinate ascent over OFFSET_GRID (see the module docstring)."""
    logits = np.asarray(logits, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    n, k = logits.shape
    b = np.zeros(k) if start is None else np.asarray(start, dtype=np.float64).copy()
    best = _f1(truth, (logits + b).argmax(axis=1), k)
    for _ in range(rounds):
        moved = False
        for c in range(k):
            s = logits + b
            others = s.copy()
            others[:, c] = -np.inf
            other_best = others.argmax(axis=1)
            other_score = others[np.arange(n), other_best]
            own = logits[:, c]
            scores = []
            for value in OFFSET_GRID:
                predicted = np.where(own + value > other_score, c, other_best)
                scores.append(_f1(truth, predicted, k))
            scores = np.asarray(scores)
            i = int(np.argmax(scores - 1e-9 * np.abs(OFFSET_GRID)))  # ties: the smallest offset
            if scores[i] > best + MIN_GAIN / k:
                best, b[c], moved = float(scores[i]), float(OFFSET_GRID[i]), True
        if not moved:
            break
    return b


def fit_decision(
    val_logits: np.ndarray,
    val_truth: np.ndarray,
    val_sequences: Sequence[np.ndarray],
    val_t: np.ndarray,
    transitions: tuple[np.ndarray, np.ndarray] | None,
    calibrate: bool = True,
    decoder: str = "auto",
) -> Decision:
    """Fit offsets and choose the decoder on validation (module docstring).

    val_sequences: row indices (into the validation arrays) of each larva's sequence, in
    time order; val_t: their times (s). transitions: (mean durations, jumps) from the
    dataset's label sequences, or None (then the decoder is argmax)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    logits = np.asarray(val_logits, dtype=np.float64)
    truth = np.asarray(val_truth, dtype=np.int64)
    k = logits.shape[1]
    plain = _f1(truth, logits.argmax(axis=1), k)
    offsets = fit_offsets(logits, truth) if calibrate else np.zeros(k)
    decision = Decision(offsets)
    fitted = {"val_macro_f1_argmax": round(plain, 4),
              "val_macro_f1_calibrated": round(_f1(truth, (logits + offsets).argmax(axis=1), k), 4)}
    if decoder == "argmax" or transitions is None:
        decision.fitted = fitted
        return decision
    seqs = [np.asarray(s) for s in val_sequences if len(s)]
    if sum(s.size for s in seqs) > MAX_FIT_STEPS:  # bound the fitting time on big validation sets
        order = np.random.default_rng(0).permutation(len(seqs))
        keep = np.cumsum([seqs[i].size for i in order]) <= MAX_FIT_STEPS
        seqs = [seqs[i] for i in np.sort(order[keep | (np.arange(len(order)) == 0)])]
    seq_truth = np.concatenate([truth[s] for s in seqs])

    def score(d: Decision) -> float:
        decoded = d.decode_many([logits[s] for s in seqs], [val_t[s] for s in seqs])
        return _f1(seq_truth, np.concatenate(decoded), k)

    base = score(decision)
    best, best_decision = -math.inf, None
    for strength in STRENGTHS:
        d = Decision(offsets, "hmm", transitions[0], transitions[1], strength)
        f = score(d)
        if f > best:
            best, best_decision = f, d
    if calibrate:  # refit the offsets for the decoder: one round, steps around each offset
        d = best_decision
        for c in range(k):
            for delta in REFIT_STEPS:
                trial = d.offsets.copy()
                trial[c] += delta
                cand = Decision(trial, "hmm", d.mean_duration, d.jump, d.strength)
                f = score(cand)
                if f > best + MIN_GAIN / k:
                    best, best_decision = f, cand
            d = best_decision
    fitted["val_macro_f1_hmm"] = round(best, 4)
    if decoder == "auto" and best < base + HMM_MIN_GAIN:
        decision.fitted = fitted
        return decision
    best_decision.fitted = fitted
    return best_decision


def kept_score(decision: Decision) -> float | None:
    """The validation macro-F1 of the rule `decision` keeps (its `fitted` scores): the
    HMM's if it decodes with one, else the calibrated (or plain) argmax's; None if unfitted."""
    fitted = decision.fitted
    key = "val_macro_f1_hmm" if decision.temporal else "val_macro_f1_calibrated"
    value = fitted.get(key, fitted.get("val_macro_f1_argmax"))
    return None if value is None else float(value)


def fit_split_decision(
    val_logits: np.ndarray,
    labels: np.ndarray,
    t: np.ndarray,
    groups: np.ndarray,
    val_idx: np.ndarray,
    calibrate: bool = True,
    decoder: str = "auto",
    log=print,
) -> Decision:
    """A tagger's decision rule fitted on the validation rows of a labelled dataset.

    val_logits: (V, K) scores of the rows `val_idx`; labels, t, groups: class, time (s) and
    larva key (e.g. "file/larva") of every row of the dataset, whose label sequences give
    the HMM's transitions. Offsets and decoder come from `fit_decision` on the validation
    rows; the result is logged in one line. Without validation rows, or with neither
    calibration nor a temporal decoder asked for, the identity decision.
    """
    k = np.asarray(val_logits).shape[1] if np.ndim(val_logits) == 2 else 0
    if len(val_idx) == 0 or (not calibrate and decoder == "argmax"):
        return Decision.identity(k)
    transitions = None
    if decoder != "argmax":
        transitions = estimate_transitions(labels, t, sequences(groups, t), k)
        if transitions is None:
            log("no label sequence holds every behaviour (scattered samples?): decoding per step")
    val_seqs = sequences(groups[val_idx], t[val_idx])
    decision = fit_decision(val_logits, labels[val_idx], val_seqs, t[val_idx], transitions,
                            calibrate=calibrate, decoder=decoder)
    log("decision on validation: macro-F1 " + ", ".join(f"{name.removeprefix('val_macro_f1_')} {v:.3f}"
                                                        for name, v in decision.fitted.items())
        + f"; kept {decision.decoder}" + (f" (strength {decision.strength:g})" if decision.temporal else "")
        + ", offsets " + " ".join(f"{b:+.2f}" for b in decision.offsets))
    return decision
