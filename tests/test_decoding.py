"""Decision rules (maggotflow.decoding): calibration offsets, the HMM decoder, their storage
in a tagger instance and their use by prediction."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from maggotflow.decoding import (
    Decision,
    estimate_transitions,
    fit_decision,
    fit_offsets,
    log_transitions,
    sequences,
    viterbi_batch,
)
from maggotflow.metrics import confusion_matrix, macro_f1


def _brute_force(em: np.ndarray, tr: np.ndarray) -> tuple[int, ...]:
    k = em.shape[1]

    def score(path):
        return sum(em[i, c] for i, c in enumerate(path)) + sum(tr[a, b] for a, b in zip(path, path[1:]))

    return max(itertools.product(range(k), repeat=em.shape[0]), key=score)


def test_viterbi_batch_finds_the_best_path_of_every_larva():
    rng = np.random.default_rng(0)
    for _ in range(10):
        ems = [np.log(rng.dirichlet(np.ones(3), size=n)) for n in (1, 4, 6, 2)]
        trs = [np.log(rng.dirichlet(np.ones(3), size=3)) for _ in ems]
        for em, tr, got in zip(ems, trs, viterbi_batch(ems, trs)):
            assert tuple(got) == _brute_force(em, tr)


def test_many_larvae_are_decoded_in_groups_with_the_same_paths(monkeypatch):
    """smooth_many decodes a big file's larvae a group at a time (bounded memory): the
    paths are those of decoding them all at once."""
    import maggotflow.decoding as decoding

    rng = np.random.default_rng(1)
    k = 4
    decision = Decision(np.zeros(k), decoder="hmm", mean_duration=np.full(k, 0.5),
                        jump=(np.ones((k, k)) - np.eye(k)) / (k - 1))
    scores = [np.log(rng.dirichlet(np.ones(k), size=n)).astype(np.float32) for n in (50, 3, 120, 1, 77, 64)]
    times = [np.arange(len(x)) * 0.1 for x in scores]
    together = decision.smooth_many(scores, times)
    monkeypatch.setattr(decoding, "VITERBI_CELLS", 130)  # groups of one to two larvae
    grouped = decision.smooth_many(scores, times)
    assert [len(p) for p in grouped] == [len(x) for x in scores]
    for a, b in zip(together, grouped):
        np.testing.assert_array_equal(a, b)
    assert any(len(set(p.tolist())) > 1 for p in grouped)  # real paths, not one class throughout


def test_transitions_come_from_bout_durations_and_jumps():
    # one larva at 0.1 s steps: run 2 s, cast 1 s, run 2 s, cast 1 s
    labels = np.array([0] * 20 + [1] * 10 + [0] * 20 + [1] * 10)
    t = np.arange(labels.size) * 0.1
    seqs = sequences(np.zeros(labels.size, dtype=int), t)
    mean, jump = estimate_transitions(labels, t, seqs, 2)
    np.testing.assert_allclose(mean, [2.0, 1.0])
    np.testing.assert_allclose(jump, [[0, 1], [1, 0]])
    stay = np.exp(log_transitions(mean, jump, 0.1).diagonal())
    np.testing.assert_allclose(stay, np.exp(-0.1 / mean))
    # a class never seen in a sequence: no model
    assert estimate_transitions(labels, t, seqs, 3) is None


def test_sequences_split_at_gaps_and_larvae():
    t = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 0.0, 0.1])
    groups = np.array(["a"] * 5 + ["b"] * 2)
    assert [s.tolist() for s in sequences(groups, t)] == [[0, 1, 2], [3, 4], [5, 6]]


def test_offsets_undo_a_bias_towards_a_rare_class():
    rng = np.random.default_rng(1)
    truth = (rng.random(4000) < 0.1).astype(int)  # class 1 is rare
    logits = np.stack([np.zeros(truth.size), 1.5 * (truth - 0.5) + rng.normal(0, 1, truth.size) + 1.0], axis=1)
    before = macro_f1(confusion_matrix(truth, logits.argmax(1), 2))
    b = fit_offsets(logits, truth)
    after = macro_f1(confusion_matrix(truth, (logits + b).argmax(1), 2))
    assert b[1] - b[0] < 0  # the over-predicted class is pushed down
    assert after > before + 0.05


def test_hmm_decoder_is_kept_only_when_it_wins_on_validation():
    rng = np.random.default_rng(2)
    # long bouts, noisy per-step evidence: smoothing must help
    truth = np.repeat(rng.integers(0, 3, 40), 25)
    logits = 2.0 * np.eye(3)[truth] + rng.normal(0, 1.5, (truth.size, 3))
    t = np.arange(truth.size) * 0.1
    seqs = [np.arange(truth.size)]
    trans = estimate_transitions(truth, t, seqs, 3)
    d = fit_decision(logits, truth, seqs, t, trans, decoder="auto")
    assert d.decoder == "hmm"
    assert d.fitted["val_macro_f1_hmm"] > d.fitted["val_macro_f1_calibrated"] + 0.1
    # independent per-step labels: nothing to smooth, the argmax stays
    truth2 = rng.integers(0, 3, 1000)
    logits2 = 3.0 * np.eye(3)[truth2] + rng.normal(0, 1.0, (truth2.size, 3))
    t2 = np.arange(truth2.size) * 0.1
    trans2 = estimate_transitions(truth2, t2, [np.arange(truth2.size)], 3)
    d2 = fit_decision(logits2, truth2, [np.arange(truth2.size)], t2, trans2, decoder="auto")
    assert d2.decoder == "argmax"


def test_decision_round_trips_through_a_tagger_folder_and_changes_predictions(tmp_path):
    import torch

    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec

    enc = EncoderConfig(filters=(8, 8), latent_dim=4)
    labels = ["run", "cast", "stop"]
    inst = ModelInstance("tagger", SegmentSpec(), enc, classifier_config=ClassifierConfig(4, 3), labels=labels)
    x = torch.randn(64, 2, 5, 20)
    plain, _ = inst.predict([x])
    assert not bool((plain == 1).all())  # the untrained tagger says more than one thing
    decision = Decision(np.array([0.0, 50.0, 0.0]), "hmm", np.array([2.0, 1.0, 1.5]),
                        np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]), 0.5)
    inst.decision = decision
    forced, _ = inst.predict([x])
    assert bool((forced == 1).all())  # the offset of class 1 decides every step
    inst.save(tmp_path / "tagger")
    back = ModelInstance.load(tmp_path / "tagger")
    assert back.decision.decoder == "hmm" and back.decision.strength == 0.5
    np.testing.assert_allclose(back.decision.offsets, decision.offsets)
    np.testing.assert_allclose(back.decision.jump, decision.jump)
    loaded, _ = back.predict([x])
    assert torch.equal(loaded, forced)
    # an uncalibrated tagger writes no decision and loads the identity
    inst.decision = Decision.identity(3)
    inst.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["decision"] is None
    assert ModelInstance.load(tmp_path / "plain").decision.is_identity


def test_predictor_decodes_whole_larvae_with_the_hmm(tmp_path):
    import torch

    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.prediction import Predictor
    from maggotflow.segments import SegmentSpec
    from maggotflow.simulation import SimulationConfig, simulate_run

    torch.manual_seed(0)
    enc = EncoderConfig(filters=(8, 8), latent_dim=4)
    labels = ["a", "b", "c"]
    inst = ModelInstance("tagger", SegmentSpec(), enc, classifier_config=ClassifierConfig(4, 3), labels=labels)
    run = simulate_run(np.random.default_rng(3), SimulationConfig(duration_s=20, larvae=(2, 2)), {"id": "x"})
    per_step = Predictor(inst, device="cpu").predict_run(run)
    # very sticky transitions: each larva's whole sequence becomes one label
    inst.decision = Decision(np.zeros(3), "hmm", np.full(3, 1e6), np.full((3, 3), 0.5) - 0.5 * np.eye(3), 50.0)
    sticky = Predictor(inst, device="cpu").predict_run(run)
    assert set(sticky) == set(per_step)
    for larva, steps in sticky.items():
        assert len(steps) == len(per_step[larva])
        assert len(set(steps)) == 1


def test_decision_checks_its_shape():
    with pytest.raises(ValueError, match="needs mean bout durations"):
        Decision(np.zeros(2), "hmm")
    with pytest.raises(ValueError, match="2 offsets"):
        Decision(np.zeros(2), "hmm", np.ones(3), np.ones((3, 3)))
