"""Two-stage fine-tuning of a tagger (domain.md section 2.6): encoder + dense classifier.

In: a labelled segment dataset (`maggotflow.dataset`, split into training and validation
files before any window was cut) and, normally, a pretrained encoder (`maggotflow.pretraining`).
Out: a `ModelInstance` of kind "tagger" (encoder, classifier, label names and colours,
post-rule, provenance, training curves).

The loop, top to bottom:
1. Stage 1 ("classifier"): the encoder is frozen, its BatchNorm layers in eval mode too
   (running statistics untouched), and only the classifier learns (Adam, `lr_stage1`).
2. Stage 2 ("fine-tune"): encoder and classifier learn together (Adam, `lr_stage2`,
   smaller: the pretrained features should be adapted, not forgotten at once).
3. Loss: cross-entropy weighted per class with the dataset's class weights (balancing
   "auto" gives inverse-frequency weights; see `maggotflow.dataset`), gradient-norm clip.
4. With `augment`, every training batch is augmented (`maggotflow.augmentation`). With
   `kinematic_features`, the classifier also sees the segment's windowed kinematic
   features (`maggotflow.kinematics`, standardised on a sample of training segments) beside
   the latent. With `lr_schedule` cosine, each stage's learning rate decays from its
   `lr_stage1` / `lr_stage2` to 0 over the stage.
   Budgets are optimisation steps of `batch_size` segments drawn in epochs of a seeded
   random permutation of the training samples. Validation (loss, accuracy, macro-F1)
   before training, every `eval_every` steps and at the end of each stage.
5. The best validated state over both stages is kept. "Best" is the highest validation
   macro-F1 (`maggotflow.metrics.macro_f1`: the mean per-behaviour F1 over the behaviours
   the validation samples hold, so a rare behaviour counts as much as runs; the number
   `maggotflow evaluate` reports), ties broken by the lower validation loss
   (`selection_key`); `select_by="loss"` uses the validation loss alone. The validation
   loss uses the same class weights as training.
   Without validation samples the final state is kept (a warning is logged).
6. The kept state's decision rule (`maggotflow.decoding`) is fitted on the validation
   samples: per-class logit offsets for macro-F1 (`calibrate`), and with `decoding` hmm or
   auto an HMM whose transitions come from the dataset's label sequences (auto keeps it
   only if it beats the calibrated per-step argmax on validation). It is stored in the
   instance (config.json "decision") and applied by prediction. The checkpoint is still
   chosen by the plain argmax's macro-F1.
7. Candidates (`candidates`): beside the network, gradient-boosted trees on the kinematic
   features ("boosting") and on the kinematic features plus the fine-tuned encoder's latent
   ("combined"), each with its own decision rule fitted on validation (`maggotflow.boosting`).
   The one with the best validation macro-F1 under its decision rule is kept (`choose`);
   provenance.json records every candidate's scores and training time ("candidates") and
   the choice ("chosen"). `candidates` = (boosting,) trains no network at all
   (`maggotflow.boosting.train_boosting`).
8. Domain reference (`maggotflow.domain.fit_reference`): statistics of the training
   segments' kinematic features and thresholds set on the validation files, saved in the
   instance (config.json "domain_check"), so that prediction can judge each file and larva
   against the training data. None (labels say "not checked") without validation samples.
   The boosting and forest trainers save one too.

Validation during training scores a fixed seeded subsample of `val_samples` validation
segments (checkpoint choice); the decision rules and the choice between candidates use
the whole validation split. The log says how many epochs of the training samples the
budget amounts to (provenance "epochs").

Without a pretrained instance the encoder starts from a random (Kaiming) initialisation:
allowed, but logged, as it needs far more labelled data. A pretrained instance may also be
a tagger: its encoder is reused and a new classifier is trained for the dataset's labels.
On CUDA the forward pass runs in float16 autocast with gradient scaling; on CPU the same
seed on the same machine and torch build gives identical weights (the skeleton shared with
pretraining: `maggotflow.loop`). `TrainConfig` holds every setting and its default (the
workflow's `train` keys and the `maggotflow train` options are named after its fields).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maggotflow.augmentation import augment, preset
from maggotflow.boosting import BoostingConfig, Candidate, fit_candidate, subsample, train_boosting
from maggotflow.dataset import Dataset, check_class_weights
from maggotflow.decoding import DECODERS, fit_split_decision, kept_score
from maggotflow.domain import fit_reference
from maggotflow.kinematics import FEATURE_NAMES
from maggotflow.instance import InstanceError, ModelInstance, check_target, created_by
from maggotflow.loop import (
    MixedPrecision,
    Progress,
    duration_text,
    evaluating,
    run_provenance,
    seeded,
    validation_due,
)
from maggotflow.metrics import accuracy, confusion_matrix, macro_f1
from maggotflow.model import (
    Classifier,
    ClassifierConfig,
    Encoder,
    EncoderConfig,
    count_macs,
    select_device,
)
from maggotflow.postrule import normalise_post_rule

logger = logging.getLogger(__name__)

STAGES = ("classifier", "fine-tune")
SELECT_BY = ("macro_f1", "loss")
LR_SCHEDULES = ("constant", "cosine")
# The classifiers a training fits and compares on validation (the best is kept): the
# network's dense classifier; boosted trees on the kinematic features alone; boosted trees
# on the kinematic features and the fine-tuned encoder's latent (`maggotflow.boosting`).
CANDIDATES = ("network", "boosting", "combined")
# Datasets up to this size are read into memory at once (fast random batches); larger ones
# are read batch by batch from the HDF5 file.
IN_MEMORY_BYTES = 8 * 1024**3


@dataclass
class TrainConfig:
    """Budgets, optimiser and classifier architecture of one tagger training.

    The comment beside a field is its `maggotflow train --help` text.
    """

    stage1_steps: int = 500  # classifier-only steps (encoder frozen)
    stage2_steps: int = 2000  # fine-tuning steps (encoder + classifier)
    batch_size: int = 128  # segments per step
    lr_stage1: float = 3e-3  # Adam learning rate, stage 1
    lr_stage2: float = 1e-3  # Adam learning rate, stage 2
    grad_clip: float = 100.0  # maximum global gradient norm
    eval_every: int = 100  # validate every N steps (also before training and at each stage end)
    seed: int = 0  # seed of the initialisation, the batch order and dropout
    device: str = "auto"  # auto (CUDA if available), cpu, cuda or cuda:N
    layers: tuple[int, ...] = (128,)  # widths of the classifier's hidden dense layers; none: a single dense layer
    dropout: float = 0.0  # dropout before every dense layer of the classifier
    latent_dim: int = EncoderConfig.latent_dim  # encoder latent size, only used without a pretrained encoder
    filters: tuple[int, ...] = EncoderConfig.filters  # encoder conv filters, only used without a pretrained encoder
    post_rule: str | None = None  # post-prediction rule stored in the tagger: None or ABC->AAC (or ABC-AAC)
    class_weights: tuple[float, ...] | None = None  # one per label, overriding the dataset's; None: the dataset's
    select_by: str = "macro_f1"  # best checkpoint by validation macro_f1 (ties: loss) or loss
    mixed_precision: bool = True  # float16 autocast + gradient scaling on CUDA (ignored on CPU)
    bootstrap: bool = False  # bagging: train on a seeded bootstrap resample of the training samples (ensembles)
    calibrate: bool = True  # fit per-class logit offsets for macro-F1 on the validation split
    decoding: str = "auto"  # argmax (per step), hmm (Viterbi over each larva) or auto (hmm if it wins on validation)
    augment: str = "noise"  # augment training batches: none, noise (mirror, size, point noise) or full (also speed, bend, rotation)
    kinematic_features: bool = True  # append the segment's windowed kinematic features to the latent
    lr_schedule: str = "cosine"  # constant, or cosine: each stage's rate decays from its lr to 0
    candidates: tuple[str, ...] = CANDIDATES  # classifiers fitted and compared on validation (network, boosting, combined); the best is kept
    val_samples: int = 10_000  # validation segments scored during training (a fixed seeded subsample; 0: all); the final choice uses all

    def __post_init__(self) -> None:
        self.layers = tuple(int(w) for w in self.layers)
        self.filters = tuple(int(f) for f in self.filters)
        if self.class_weights is not None:
            self.class_weights = tuple(float(w) for w in self.class_weights)
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ValueError(f"training steps must be >= 0, got {self.stage1_steps}, {self.stage2_steps}")
        if self.stage1_steps + self.stage2_steps < 1:
            raise ValueError("training needs at least one step (stage 1 or stage 2)")
        for name in ("batch_size", "eval_every", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"training {name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr_stage1 > 0 and self.lr_stage2 > 0 and self.grad_clip > 0):
            raise ValueError("learning rates and grad_clip must be > 0")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (BatchNorm needs several segments per batch)")
        self.post_rule = normalise_post_rule(self.post_rule)
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        preset(self.augment)  # validates the name
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.decoding not in DECODERS:
            raise ValueError(f"decoding must be one of {', '.join(DECODERS)}, got {self.decoding!r}")
        self.candidates = tuple(str(c) for c in self.candidates)
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates must be distinct names among {', '.join(CANDIDATES)}, "
                             f"got {', '.join(self.candidates) or 'none'}")
        if self.val_samples < 0:
            raise ValueError(f"val_samples must be >= 0, got {self.val_samples}")
        ClassifierConfig(latent_dim=1, n_classes=1, layers=self.layers, dropout=self.dropout)  # validates

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["filters"] = list(self.filters)
        d["class_weights"] = None if self.class_weights is None else list(self.class_weights)
        d["candidates"] = list(self.candidates)
        return d


# ---------------------------------------------------------------------------- batches
class _Batches:
    """Seeded epochs of a random permutation of `indices`, served `size` at a time.

    The last incomplete batch of an epoch is dropped (BatchNorm needs full batches; every
    sample is still seen over epochs as the permutation changes).
    """

    def __init__(self, indices: np.ndarray, size: int, generator: torch.Generator):
        self.indices = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        self.size = min(size, len(indices))
        self.generator = generator
        self.order = torch.empty(0, dtype=torch.int64)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.size > self.order.numel():
            self.order = self.indices[torch.randperm(self.indices.numel(), generator=self.generator)]
            self.pos = 0
        batch = self.order[self.pos:self.pos + self.size]
        self.pos += self.size
        return batch


# ---------------------------------------------------------------------------- training
def train_tagger(
    dataset_path: str | Path,
    out_instance: str | Path,
    pretrained: str | Path | None = None,
    config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> ModelInstance:
    """Train a tagger on `dataset_path`; save it to `out_instance` and return it.

    dataset_path: dataset HDF5 (`maggotflow dataset`); its labels, class weights, split and
    segment spec are used as they are. pretrained: a model instance folder ("pretrained" or
    "tagger") whose encoder is fine-tuned, or None for a random encoder; a tagger with the
    same labels and classifier shape also gives its classifier as the start (continued
    training, provenance "classifier_continued"). out_instance: the
    folder to write (an existing maggotflow instance there is replaced; anything else is
    refused before training). Progress lines go to `log`.
    Raises InstanceError for an unusable pretrained folder or a segment spec mismatch,
    TrackDataError for a bad dataset file, ValueError for inconsistent settings.
    """
    config = TrainConfig() if config is None else config
    dataset_path, out_instance = Path(dataset_path), Path(out_instance)
    if config.candidates == ("boosting",):  # no network to train: the boosting tagger kind
        return train_boosting(dataset_path, out_instance, BoostingConfig(seed=config.seed, device=config.device),
                              calibrate=config.calibrate, decoding=config.decoding, post_rule=config.post_rule,
                              log=log)
    check_target(out_instance)
    device = select_device(config.device)

    dataset = Dataset.load(dataset_path)
    try:
        return _train(dataset, out_instance, None if pretrained is None else Path(pretrained), config, device, log)
    finally:
        dataset.close()


def _train(
    dataset: Dataset,
    out_instance: Path,
    pretrained: Path | None,
    config: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
) -> ModelInstance:
    """The steps of `train_tagger` on an open dataset (module docstring, 1-8)."""
    train_idx, val_idx = _training_rows(dataset, config)
    start = _starting_point(dataset, pretrained, config, out_instance, log)
    classifier_config = ClassifierConfig(latent_dim=start.encoder_config.latent_dim, n_classes=len(dataset.labels),
                                         layers=config.layers, dropout=config.dropout,
                                         features=len(FEATURE_NAMES) if config.kinematic_features else 0,
                                         frame_interval=dataset.spec.frame_interval)
    weights = check_class_weights(dataset.class_weights if config.class_weights is None else config.class_weights,
                                  list(dataset.labels))
    data = _training_data(dataset, train_idx, val_idx, weights, config, device)
    precision = MixedPrecision(device, config.mixed_precision)
    _log_plan(data, start, config, precision, log)

    with seeded(device, config.seed):  # the caller's global RNG is restored afterwards
        net = _build_network(start, classifier_config, data, config, log)
        fit = _fit_network(net, data, config, precision, log)
    log(f"validation during training: {duration_text(fit.validation_seconds)} of {duration_text(fit.seconds)} "
        f"({100 * fit.validation_seconds / max(fit.seconds, 1e-9):.0f} %)")

    # the best validated state and the other candidates; the best of them on validation
    fit.progress.restore_best()
    net.encoder.eval(), net.classifier.eval()
    candidates = _fit_candidates(net, data, start, fit, config, precision, log)
    chosen = choose([c for c in candidates if c.name in config.candidates], log)

    from maggotflow.formats.label import default_colors

    provenance = _provenance(data, start, net, fit, candidates, chosen, config, precision)
    curves = {"training": fit.progress.curve}
    if start.base is not None:
        for name, rows in start.base.curves.items():
            curves.setdefault(name, rows)  # keep the pretraining curve next to the training one
    # the domain check's reference: the training data (each row once, bagged or not) and
    # the validation files set its statistics and thresholds (maggotflow.domain)
    domain = fit_reference(dataset, dataset.train_indices(), data.val_idx, config.seed, log)
    labels = list(dataset.labels)
    instance = ModelInstance(
        "tagger", dataset.spec, start.encoder_config, encoder=net.encoder, classifier_config=chosen.classifier.config,
        classifier=chosen.classifier, labels=labels, colors=default_colors(labels), post_rule=config.post_rule,
        provenance=provenance, curves=curves, decision=chosen.decision, domain=domain,
    )
    instance.save(out_instance)
    best, total = fit.progress.best, fit.progress.total_steps
    log(f"saved tagger {out_instance}: {chosen.name} (network best at step {best['step']}, {best['stage']}: "
        f"{_scores_text(best)}; {total} steps in {duration_text(fit.seconds)})")
    return instance


# ---------------------------------------------------------------------------- what the loop starts from
def _training_rows(dataset: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's training and validation rows; with `bootstrap` (bagging, ensemble
    members) the training rows are a seeded resample with replacement, as many as there are."""
    train_idx, val_idx = dataset.train_indices(), dataset.val_indices()
    if train_idx.size < 2:
        raise ValueError(f"{dataset.path}: {train_idx.size} training sample(s); training needs at least 2")
    if config.bootstrap:
        rng = np.random.default_rng([config.seed, 0xBA6])
        train_idx = np.sort(rng.choice(train_idx, size=train_idx.size, replace=True))
    return train_idx, val_idx


@dataclass
class _Start:
    """What the network starts from: a pretrained instance's encoder, or random weights."""

    pretrained: Path | None  # the pretrained instance folder ("pretrained" or "tagger"), None: random
    base: ModelInstance | None  # that instance, loaded
    encoder_config: EncoderConfig


def _starting_point(dataset: Dataset, pretrained: Path | None, config: TrainConfig, out_instance: Path,
                    log: Callable[[str], None]) -> _Start:
    """Load the pretrained instance (InstanceError unless its segments are the dataset's), or
    without one an encoder of the config's size from random weights (logged: it needs far
    more labelled data)."""
    if pretrained is None:
        log("no pretrained encoder given: the encoder starts from random weights "
            "(fine-tuning then needs much more labelled data)")
        logger.warning("%s: training without a pretrained encoder", out_instance)
        spec = dataset.spec
        return _Start(None, None, EncoderConfig(window=spec.window, n_points=spec.n_points,
                                                latent_dim=config.latent_dim, filters=config.filters))
    base = ModelInstance.load(pretrained)
    if not base.segment_spec.compatible_with(dataset.spec):
        raise InstanceError(
            pretrained,
            f"the encoder was pretrained on segments of {base.segment_spec.describe()} but the dataset "
            f"{dataset.path} has segments of {dataset.spec.describe()}: rebuild the dataset with the encoder's "
            "--window, --frame-interval and --n-points",
        )
    return _Start(pretrained, base, base.encoder_config)


@dataclass
class _TrainingData:
    """The dataset as the loop reads it: rows (indices into the dataset), their labels and
    the class weights of the loss; `read` gives segments on the device."""

    dataset: Dataset
    train_idx: np.ndarray  # rows trained on (a bootstrap resample when bagging)
    val_idx: np.ndarray  # every validation row (decision rules, candidates, domain thresholds)
    monitored: np.ndarray  # the validation rows scored during training (checkpoint choice)
    weights: list[float]  # class weights of the loss, one per label
    device: torch.device
    segments: np.ndarray | None  # every segment in memory, or None: read batch by batch from the file
    labels_t: torch.Tensor  # (N,) int64 label of every row, on the CPU
    weight_t: torch.Tensor  # (K,) the class weights, on the device

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The segments (B, 2, P, W) of the rows `indices`, on the device."""
        idx = indices.numpy()
        x = self.segments[idx] if self.segments is not None else self.dataset.read_segments(idx)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """Samples per class among `rows`."""
        return np.bincount(self.dataset.label[rows], minlength=len(self.dataset.labels))


def _training_data(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray, weights: list[float],
                   config: TrainConfig, device: torch.device) -> _TrainingData:
    """All segments in memory when they fit in `IN_MEMORY_BYTES` (random batches are then
    fancy indexing); the validation rows monitored during training: a fixed seeded
    subsample of `val_samples` (0: all)."""
    n_bytes = int(np.prod(dataset.segments.shape)) * 4
    if isinstance(dataset.segments, np.ndarray):
        segments = dataset.segments
    elif n_bytes <= IN_MEMORY_BYTES:
        segments = dataset.segments[()]
    else:
        segments = None  # read batch by batch
    monitored = val_idx if config.val_samples == 0 else subsample(val_idx, config.val_samples, config.seed, 0x7A1)
    return _TrainingData(dataset, train_idx, val_idx, monitored, weights, device, segments,
                         labels_t=torch.from_numpy(dataset.label.astype(np.int64)),
                         weight_t=torch.tensor(weights, dtype=torch.float32, device=device))


def _log_plan(data: _TrainingData, start: _Start, config: TrainConfig, precision: MixedPrecision,
              log: Callable[[str], None]) -> None:
    """The lines before training: device and model size, classes with their counts and
    weights, the budget in epochs and the validation during training."""
    dataset, train_idx, val_idx = data.dataset, data.train_idx, data.val_idx
    log(f"training a {len(dataset.labels)}-class tagger on {precision.describe()}: "
        f"{train_idx.size} training / {val_idx.size} validation segments (split by {dataset.split_by}); "
        f"encoder {count_macs(start.encoder_config) / 1e6:.1f} M multiply-adds per segment")
    log("classes: " + ", ".join(f"{n} {a}/{b} (weight {w:.3g})" for n, a, b, w in zip(
        dataset.labels, data.counts(train_idx), data.counts(val_idx), data.weights)))
    total, monitored = config.stage1_steps + config.stage2_steps, data.monitored
    log(f"budget: {total} steps of {config.batch_size} segments = {total * config.batch_size / train_idx.size:.2f} "
        f"epochs of the {train_idx.size} training segments; validation every {config.eval_every} steps on "
        + (f"all {val_idx.size}" if monitored.size == val_idx.size else f"a fixed sample of {monitored.size} of the "
           f"{val_idx.size}") + " validation segments (the final choice uses all)")
    if val_idx.size == 0:
        log("no validation samples: the final state is kept")
        logger.warning("%s: no validation samples; keeping the final state, not the best validated one",
                       dataset.path)


# ---------------------------------------------------------------------------- the network and its loop
@dataclass
class _Network:
    """The network being trained: encoder + dense classifier."""

    encoder: Encoder
    classifier: Classifier
    continued: bool  # the classifier starts from the pretrained tagger's (provenance "classifier_continued")

    def start_stage(self, frozen: bool) -> list[torch.nn.Parameter]:
        """Set up a stage and return the parameters its optimiser steps: with the encoder
        `frozen` (stage 1) only the classifier's, the encoder in eval mode too (its BatchNorm
        running statistics untouched); else (stage 2) both modules' parameters."""
        self.encoder.requires_grad_(not frozen)
        self.encoder.train(not frozen)
        self.classifier.train()
        return list(self.classifier.parameters()) + ([] if frozen else list(self.encoder.parameters()))

    def logits(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, K) class logits of segments (B, 2, P, W); `frozen`: no graph through the encoder."""
        if frozen:
            with torch.no_grad():
                z = self.encoder(x)  # (B, L)
        else:
            z = self.encoder(x)
        return self.classifier(z, x)


def _build_network(start: _Start, classifier_config: ClassifierConfig, data: _TrainingData, config: TrainConfig,
                   log: Callable[[str], None]) -> _Network:
    """The encoder (the pretrained one's weights, else random) and the classifier on the
    device. Continuing a tagger (tagging-backend finetune): with the same labels and
    classifier shape its classifier (and feature scaling) is the start too; else a new one
    is trained, its kinematic features standardised on training segments."""
    encoder = Encoder(start.encoder_config)
    base = start.base
    if base is not None:
        encoder.load_state_dict(base.encoder.state_dict())
    classifier = Classifier(classifier_config)
    continued = (base is not None and base.kind == "tagger" and list(base.labels) == list(data.dataset.labels)
                 and base.classifier_config == classifier_config)
    if continued:
        classifier.load_state_dict(base.classifier.state_dict())
        log(f"continuing the tagger {start.pretrained}: its encoder and classifier are the start")
    elif classifier_config.features:
        _fit_feature_scaling(classifier, data.read, data.train_idx, config.seed)
    encoder.to(data.device), classifier.to(data.device)
    return _Network(encoder, classifier, continued)


def learning_rate(schedule: str, base_lr: float, i: int, n_steps: int) -> float:
    """The learning rate of step `i` (from 0) of a stage of `n_steps`: `base_lr` throughout
    (constant) or decaying from it to 0 over the stage (cosine)."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * i / n_steps))
    return base_lr


def _validate(net: _Network, data: _TrainingData, rows: np.ndarray, precision: MixedPrecision, batch_size: int,
              keep: list | None = None) -> dict:
    """Validation loss (class-weighted mean, the training loss's weights), accuracy and
    macro-F1 (`maggotflow.metrics`) of the network on `rows`; `keep` receives their logits
    (one array per chunk). None scores without rows."""
    if rows.size == 0:
        return {"val_loss": None, "val_accuracy": None, "val_macro_f1": None}
    loss_sum, weight_sum = 0.0, 0.0
    predicted = []
    chunk = max(4 * batch_size, 1024)
    with evaluating(net.encoder, net.classifier), torch.inference_mode():
        for i in range(0, rows.size, chunk):
            idx = torch.from_numpy(rows[i:i + chunk])
            with precision.autocast():
                logits = net.logits(data.read(idx))
            logits = logits.float()
            target = data.labels_t[idx].to(data.device)
            loss_sum += float(F.cross_entropy(logits, target, weight=data.weight_t, reduction="sum"))
            weight_sum += float(data.weight_t[target].sum())
            predicted.append(logits.argmax(dim=1).cpu().numpy())
            if keep is not None:
                keep.append(logits.cpu().numpy())
    cm = confusion_matrix(data.dataset.label[rows], np.concatenate(predicted), len(data.dataset.labels))
    return {
        "val_loss": loss_sum / weight_sum if weight_sum > 0 else float("nan"),
        "val_accuracy": accuracy(cm),
        "val_macro_f1": macro_f1(cm),
    }


@dataclass
class _Monitor:
    """Validation during training: `_validate` on the monitored rows, its time counted."""

    net: _Network
    data: _TrainingData
    precision: MixedPrecision
    batch_size: int
    seconds: float = 0.0  # spent validating (provenance "validation_seconds")

    def scores(self) -> dict:
        t0 = time.perf_counter()
        scores = _validate(self.net, self.data, self.data.monitored, self.precision, self.batch_size)
        self.seconds += time.perf_counter() - t0
        return scores


def _is_better(scores: dict, best: dict, select_by: str, validated: bool) -> bool:
    """Whether validation `scores` beat the `best` so far (`selection_key`); without
    validation samples (`validated` False) every state is, so the final one is kept."""
    return not validated or selection_key(scores, select_by) > selection_key(best, select_by)


@dataclass
class _Fit:
    """How the two stages went: curve and best state (`progress`), wall time and the part
    of it spent validating, in s."""

    progress: Progress
    seconds: float
    validation_seconds: float


def _fit_network(net: _Network, data: _TrainingData, config: TrainConfig, precision: MixedPrecision,
                 log: Callable[[str], None]) -> _Fit:
    """Stage 1 (classifier only), then stage 2 (fine-tuning): seeded batches (augmented with
    `augment`), class-weighted cross-entropy, a step per batch, validation before training,
    every `eval_every` steps and at each stage's end."""
    total = config.stage1_steps + config.stage2_steps
    progress = Progress((net.encoder, net.classifier), total, describe=_scores_text, log=log,
                        better=partial(_is_better, select_by=config.select_by, validated=data.val_idx.size > 0))
    monitor = _Monitor(net, data, precision, config.batch_size)
    loss_fn = torch.nn.CrossEntropyLoss(weight=data.weight_t)
    batches = _Batches(data.train_idx, config.batch_size, torch.Generator().manual_seed(config.seed))
    aug = preset(config.augment)
    augmentation = torch.Generator().manual_seed(config.seed + 1) if aug is not None else None

    progress.start(monitor.scores(), stage=STAGES[0])
    step = 0
    for stage, n_steps, lr in ((STAGES[0], config.stage1_steps, config.lr_stage1),
                               (STAGES[1], config.stage2_steps, config.lr_stage2)):
        if n_steps == 0:
            continue
        frozen = stage == STAGES[0]
        params = net.start_stage(frozen)
        optimiser = torch.optim.Adam(params, lr=lr)
        for i in range(n_steps):
            step += 1
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(config.lr_schedule, lr, i, n_steps)
            idx = batches.next()
            x, target = data.read(idx), data.labels_t[idx].to(data.device)
            if augmentation is not None:
                x = augment(x, augmentation, aug=aug)
            with precision.autocast():
                logits = net.logits(x, frozen)  # (B, K)
            loss = loss_fn(logits.float(), target)
            progress.train_step(loss, precision.step(optimiser, loss, params, config.grad_clip))
            if validation_due(step, config.eval_every, last=i == n_steps - 1):
                progress.validated(step, monitor.scores(), stage=stage)
    elapsed = progress.elapsed
    net.encoder.requires_grad_(True)
    return _Fit(progress, elapsed, monitor.seconds)


# ---------------------------------------------------------------------------- after the loop
FEATURE_SCALING_SAMPLES = 20_000  # training segments the kinematic features' mean and SD come from


def _fit_feature_scaling(classifier: Classifier, read: Callable, train_idx: np.ndarray, seed: int) -> None:
    """Set the classifier's feature standardisation from a seeded sample of training segments."""
    rng = np.random.default_rng([seed, 0xFEA7])
    n = min(train_idx.size, FEATURE_SCALING_SAMPLES)
    sample = np.sort(rng.choice(train_idx, size=n, replace=False))
    with torch.no_grad():
        feats = torch.cat([classifier.kinematics(read(torch.from_numpy(sample[i:i + 4096])).float()).cpu()
                           for i in range(0, n, 4096)])
        classifier.feature_mean.copy_(feats.mean(dim=0))
        classifier.feature_scale.copy_(feats.std(dim=0).clamp_min(1e-3))


def _network_candidate(net: _Network, data: _TrainingData, precision: MixedPrecision, config: TrainConfig,
                       seconds: float, log: Callable[[str], None]) -> Candidate:
    """The kept network state as a candidate: its decision rule (`maggotflow.decoding.
    fit_split_decision`) and scores on all the validation samples."""
    t0 = time.perf_counter()
    dataset, val_idx = data.dataset, data.val_idx
    chunks: list[np.ndarray] = []
    scores = _validate(net, data, val_idx, precision, config.batch_size, keep=chunks)
    logits = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, len(dataset.labels)))
    decision = fit_split_decision(logits, dataset.label, dataset.t, dataset.larva_keys(), val_idx,
                                  config.calibrate, config.decoding, log)
    kept = kept_score(decision)
    scores = {"val_accuracy": scores["val_accuracy"], "val_macro_f1": scores["val_macro_f1"],
              "val_macro_f1_kept": scores["val_macro_f1"] if kept is None else kept}
    return Candidate("network", net.classifier, decision, scores, seconds + time.perf_counter() - t0)


def _fit_candidates(net: _Network, data: _TrainingData, start: _Start, fit: _Fit, config: TrainConfig,
                    precision: MixedPrecision, log: Callable[[str], None]) -> list[Candidate]:
    """The kept network state as a candidate and, as `candidates` asks, boosted trees on
    the kinematic features ("boosting") and on those and the encoder's latent ("combined"),
    each with its decision rule fitted on all validation samples."""
    candidates = [_network_candidate(net, data, precision, config, fit.seconds, log)]
    for name in ("boosting", "combined"):
        if name in config.candidates:
            trees = BoostingConfig(seed=config.seed, device=str(data.device))
            candidates.append(fit_candidate(
                name, data.dataset, data.train_idx, data.val_idx, trees, data.device,
                encoder=net.encoder if name == "combined" else None, latent_dim=start.encoder_config.latent_dim,
                calibrate=config.calibrate, decoding=config.decoding, weights=np.asarray(data.weights), log=log))
    return candidates


def _provenance(data: _TrainingData, start: _Start, net: _Network, fit: _Fit, candidates: list[Candidate],
                chosen: Candidate, config: TrainConfig, precision: MixedPrecision) -> dict:
    """provenance.json of the tagger: the dataset and its split, the starting instance,
    class weights and counts, budgets, the best validated step, every candidate's scores
    and the one chosen, the settings and how the loop ran."""
    dataset, pretrained, base = data.dataset, start.pretrained, start.base
    total = config.stage1_steps + config.stage2_steps
    return {
        "created_by": created_by(),
        "command": "train",
        "dataset": str(Path(dataset.path).resolve()),
        "dataset_sources": dataset.sources,
        "dataset_seed": dataset.seed,
        "balancing": dataset.balancing,
        "split_by": dataset.split_by,
        "synonyms": dataset.synonyms,
        "target": dataset.target,
        "pretrained": None if pretrained is None else str(Path(pretrained).resolve()),
        "classifier_continued": net.continued,
        "pretrained_provenance": None if base is None else _summary(base.provenance),
        "labels": list(dataset.labels),
        "class_weights": [float(w) for w in data.weights],
        "train_counts": data.counts(data.train_idx).tolist(),
        "val_counts": data.counts(data.val_idx).tolist(),
        "seed": config.seed,
        "stage1_steps": config.stage1_steps,
        "stage2_steps": config.stage2_steps,
        "select_by": config.select_by,
        "best": fit.progress.best,
        "epochs": round(total * config.batch_size / data.train_idx.size, 3),
        "validation_seconds": round(fit.validation_seconds, 1),
        "candidates": {c.name: c.summary() for c in candidates},
        "chosen": chosen.name,
        "decision": chosen.decision.to_dict(),
        "config": config.to_dict(),
        **run_provenance(data.device, precision, fit.progress),
        "seconds": round(fit.seconds, 1),
    }


def choose(candidates: list[Candidate], log: Callable[[str], None]) -> Candidate:
    """The candidate with the best validation macro-F1 under its own decision rule (the
    first listed on a tie or without validation); logs them all with their training time."""
    def key(c: Candidate) -> float:
        value = c.scores.get("val_macro_f1_kept")
        return -math.inf if value is None or math.isnan(value) else value

    chosen = candidates[0]
    for c in candidates[1:]:
        if key(c) > key(chosen):
            chosen = c
    if len(candidates) > 1:
        log("candidates on validation (macro-F1 with each one's decision rule; training time): " + ", ".join(
            f"{c.name} {key(c):.3f} ({duration_text(c.seconds)})" for c in candidates) + f"; kept {chosen.name}")
    return chosen


def selection_key(scores: dict, select_by: str) -> tuple:
    """Sort key of validation scores, larger is better: (macro-F1, -loss) or (-loss,).

    A missing or NaN score ranks lowest."""
    loss = scores["val_loss"]
    loss = math.inf if loss is None or math.isnan(loss) else loss
    if select_by == "loss":
        return (-loss,)
    f1 = scores["val_macro_f1"]
    f1 = -math.inf if f1 is None or math.isnan(f1) else f1
    return (f1, -loss)


def _scores_text(scores: dict) -> str:
    if scores.get("val_loss") is None:
        return "(no validation)"
    return (f"val loss {scores['val_loss']:.4g} accuracy {scores['val_accuracy']:.3f} "
            f"macro-F1 {scores['val_macro_f1']:.3f}")


def _summary(provenance: dict) -> dict:
    """The pretrained instance's provenance without bulky per-file lists."""
    keep = ("created_by", "command", "steps", "seed", "best_step", "best_val_loss", "validation",
            "train_segments", "val_segments")
    out = {k: provenance[k] for k in keep if k in provenance}
    for key in ("train_files", "val_files"):
        files = provenance.get(key)
        if isinstance(files, list):
            out[key] = [{k: f.get(k) for k in ("source", "sha1")} for f in files if isinstance(f, dict)]
    return out
