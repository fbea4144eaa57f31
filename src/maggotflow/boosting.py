"""Gradient-boosted trees on windowed kinematic features: the `boosting` tagger kind.

In: a labelled segment dataset (`maggotflow.dataset`) and, for the combined kind, a
trained encoder. Out: a `BoostedTrees` classifier (`maggotflow.model`) whose trees split on
the segment's 36 kinematic features (`maggotflow.kinematics`: speeds in body lengths/s,
angles, curvature, length; mean, spread and central value over the window), followed by
the encoder's latent vector when `use_latent` (the "combined" candidate of
`maggotflow.training`). `train_boosting` makes a whole tagger instance of the features
alone (preset `boosting`, `maggotflow train --candidates boosting`).

Library: scikit-learn's `HistGradientBoostingClassifier` (scikit-learn was already the forest
preset's; it is now a core dependency). Its fitted trees are copied into tensors
(`trees_to_module`), so a boosting tagger is stored like any tagger (state dicts read
with `weights_only`, no pickles), predicts without scikit-learn, and runs on the GPU with
the encoder when there is one. XGBoost and LightGBM were the alternatives: both store
their models as JSON or text and XGBoost trains on GPUs, but each is one more compiled
dependency, and fitting is not where the time goes (200,000 segments x 36 features x 7
classes fit in about a minute on one CPU core; prediction, which runs at scale on the GPU
nodes, is torch's either way). The copy reads scikit-learn's fitted predictors
(`_predictors`, `_baseline_prediction`: not public API); `trees_to_module` checks them and
tests compare its logits with scikit-learn's own `decision_function`.

Fitting: at most `max_samples` training segments (seeded uniform subsample), early stopping
on at most `max_val_samples` rows of the dataset's validation split (whole files, never
the training ones; `n_iter_no_change` rounds without gain), trees of `max_leaf_nodes`
leaves. Class weights are not used by default (`class_weights`): the decision rule fitted
afterwards on validation (`maggotflow.decoding`, calibration offsets for macro-F1 and the
HMM) takes care of rare classes, as for the network.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from maggotflow.dataset import Dataset
from maggotflow.decoding import fit_split_decision, kept_score
from maggotflow.domain import fit_reference
from maggotflow.instance import ModelInstance, check_target, created_by
from maggotflow.kinematics import FEATURE_NAMES, window_features
from maggotflow.metrics import accuracy, confusion_matrix, macro_f1
from maggotflow.model import BoostedTrees, ClassifierConfig, EncoderConfig, select_device

ABSENT_CLASS_LOGIT = -1e4  # logit of a class the training data lacked: never predicted
CHUNK = 4096  # segments per block when computing columns


@dataclass
class BoostingConfig:
    """Size, stopping and randomness of the boosted trees (a field's comment is its help text)."""

    max_iter: int = 250  # boosting rounds at most (one tree per class each)
    learning_rate: float = 0.1  # shrinkage of each tree
    max_leaf_nodes: int = 31  # leaves per tree
    min_samples_leaf: int = 40  # fewest training segments in a leaf
    l2_regularization: float = 1e-3  # L2 penalty on leaf values
    n_iter_no_change: int = 15  # stop when the validation loss has not improved for this many rounds
    max_samples: int = 200_000  # training segments fitted at most (seeded subsample)
    max_val_samples: int = 50_000  # validation segments used for early stopping at most
    class_weights: bool = False  # weight training segments with the dataset's class weights
    seed: int = 0  # seed of the subsamples and the trees
    device: str = "auto"  # where features (and latents) are computed: auto, cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        if self.max_iter < 1 or self.max_leaf_nodes < 2 or self.min_samples_leaf < 1 or self.max_samples < 2:
            raise ValueError(f"invalid boosting settings {self}")
        if not (self.learning_rate > 0 and self.l2_regularization >= 0 and self.n_iter_no_change >= 1
                and self.max_val_samples >= 1):
            raise ValueError(f"invalid boosting settings {self}")


def _histogram_boosting():
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        raise ImportError("gradient boosting needs scikit-learn to train: pip install scikit-learn "
                          "(prediction does not need it)") from None
    return HistGradientBoostingClassifier


def trees_to_module(model, n_classes: int, latent_dim: int, use_latent: bool,
                    frame_interval: float) -> BoostedTrees:
    """Copy a fitted `HistGradientBoostingClassifier` into a `BoostedTrees` module.

    model.classes_ are class indices of the dataset (0..n_classes-1, possibly a subset); the
    module's logits have one column per dataset class, those never seen at ABSENT_CLASS_LOGIT.
    """
    predictors, baseline = getattr(model, "_predictors", None), getattr(model, "_baseline_prediction", None)
    if predictors is None or baseline is None or not predictors or not hasattr(predictors[0][0], "nodes"):
        raise RuntimeError("this scikit-learn version stores its boosted trees differently; "
                           "maggotflow cannot copy them (tested with scikit-learn 1.9)")
    columns = np.asarray(model.classes_, dtype=np.int64)
    binary = len(columns) == 2 and len(predictors[0]) == 1  # one tree per round: the logit of classes_[1]
    trees = [(tree.nodes, columns[1] if binary else columns[j])
             for round_ in predictors for j, tree in enumerate(round_)]
    n_nodes = max(len(nodes) for nodes, _ in trees)
    depth = max(int(nodes["depth"].max()) for nodes, _ in trees)
    config = ClassifierConfig(latent_dim=latent_dim, n_classes=n_classes, kind="boosting", n_trees=len(trees),
                              n_nodes=n_nodes, depth=depth, features=len(FEATURE_NAMES),
                              frame_interval=frame_interval, use_latent=use_latent)
    module = BoostedTrees(config)
    t = len(trees)
    feature = np.zeros((t, n_nodes), np.int64)
    threshold = np.zeros((t, n_nodes), np.float64)
    left = np.tile(np.arange(n_nodes), (t, 1))  # leaves and padding point to themselves
    right = left.copy()
    value = np.zeros((t, n_nodes), np.float32)
    tree_class = np.zeros(t, np.int64)
    for i, (nodes, cls) in enumerate(trees):
        if np.any(nodes["is_categorical"]):
            raise RuntimeError("categorical splits are not supported")
        m = len(nodes)
        inner = nodes["is_leaf"] == 0
        feature[i, :m] = np.where(inner, nodes["feature_idx"], 0)
        threshold[i, :m] = np.where(inner, nodes["num_threshold"], 0.0)
        left[i, :m] = np.where(inner, nodes["left"], np.arange(m))
        right[i, :m] = np.where(inner, nodes["right"], np.arange(m))
        value[i, :m] = np.where(inner, 0.0, nodes["value"])
        tree_class[i] = cls
    start = np.full(n_classes, ABSENT_CLASS_LOGIT, np.float32)
    base = np.asarray(baseline, dtype=np.float64).reshape(-1)
    if binary:
        start[columns[0]], start[columns[1]] = 0.0, base[0]
    else:
        start[columns] = base
    with torch.no_grad():
        for name, array in (("feature", feature), ("threshold", threshold), ("left", left), ("right", right),
                            ("value", value), ("tree_class", tree_class), ("baseline", start)):
            getattr(module, name).copy_(torch.from_numpy(array))
    return module


def fit_trees(columns: np.ndarray, truth: np.ndarray, val_columns: np.ndarray, val_truth: np.ndarray,
              n_classes: int, config: BoostingConfig, *, latent_dim: int, use_latent: bool, frame_interval: float,
              sample_weight: np.ndarray | None = None) -> BoostedTrees:
    """Fit boosted trees on (columns, truth), early-stopped on (val_columns, val_truth)."""
    HistGradientBoostingClassifier = _histogram_boosting()
    stop = len(val_truth) > 0 and len(np.unique(val_truth)) > 1
    model = HistGradientBoostingClassifier(
        max_iter=config.max_iter, learning_rate=config.learning_rate, max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf, l2_regularization=config.l2_regularization,
        early_stopping=stop, n_iter_no_change=config.n_iter_no_change, random_state=config.seed,
    )
    validation = {"X_val": val_columns, "y_val": val_truth} if stop else {}
    model.fit(columns, truth, sample_weight=sample_weight, **validation)
    return trees_to_module(model, n_classes, latent_dim, use_latent, frame_interval)


def segment_columns(dataset: Dataset, indices: np.ndarray, device: torch.device,
                    encoder: torch.nn.Module | None = None) -> np.ndarray:
    """(N, F [+ L]) float32 columns of the dataset's segments `indices`: their kinematic
    features, followed by the encoder's latent vectors when an encoder is given."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(indices), CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(dataset.read_segments(indices[i:i + CHUNK]))).to(device)
            parts = [window_features(x, dataset.spec.frame_interval)]
            if encoder is not None:
                parts.append(encoder(x).float())
            out.append(torch.cat(parts, dim=1).cpu().numpy())
    width = len(FEATURE_NAMES) + (0 if encoder is None else encoder.config.latent_dim)
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


def subsample(indices: np.ndarray, n: int, seed: int, salt: int) -> np.ndarray:
    """At most `n` of `indices`, drawn uniformly without replacement (seeded), in order."""
    if indices.size <= n:
        return indices
    return np.sort(np.random.default_rng([seed, salt]).choice(indices, n, replace=False))


@dataclass
class Candidate:
    """One fitted classifier and how it did on validation (`maggotflow.training` chooses)."""

    name: str  # "network", "boosting" or "combined"
    classifier: torch.nn.Module
    decision: object  # maggotflow.decoding.Decision fitted on validation
    scores: dict  # val_accuracy, val_macro_f1 (argmax), val_macro_f1_kept (with its decision)
    seconds: float  # training wall time

    def summary(self) -> dict:
        return {"val_macro_f1": self.scores.get("val_macro_f1_kept"),
                "val_macro_f1_argmax": self.scores.get("val_macro_f1"),
                "val_accuracy": self.scores.get("val_accuracy"), "decoder": self.decision.decoder,
                "seconds": round(self.seconds, 1)}


def fit_candidate(name: str, dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray, config: BoostingConfig,
                  device: torch.device, *, encoder: torch.nn.Module | None, latent_dim: int, calibrate: bool,
                  decoding: str, weights: np.ndarray | None, log: Callable[[str], None]) -> Candidate:
    """Fit boosted trees on the kinematic features (+ the encoder's latent when `encoder`
    is given), early-stopped on validation, and their decision rule; score them there."""
    t0 = time.perf_counter()
    n_classes = len(dataset.labels)
    fit_idx = subsample(train_idx, config.max_samples, config.seed, 0xB0057)
    stop_idx = subsample(val_idx, config.max_val_samples, config.seed, 0x570B)
    use_latent = encoder is not None
    log(f"{name}: boosted trees on {len(FEATURE_NAMES)} kinematic features"
        + (f" + the {latent_dim}-dimensional latent" if use_latent else "")
        + f" of {fit_idx.size} training segments (early stopping on {stop_idx.size} validation segments)")
    columns = segment_columns(dataset, fit_idx, device, encoder)
    truth = dataset.label[fit_idx].astype(np.int64)
    weight = None if weights is None or not config.class_weights else np.asarray(weights, np.float64)[truth]
    trees = fit_trees(columns, truth, segment_columns(dataset, stop_idx, device, encoder),
                      dataset.label[stop_idx].astype(np.int64), n_classes, config, latent_dim=latent_dim,
                      use_latent=use_latent, frame_interval=dataset.spec.frame_interval, sample_weight=weight)
    del columns
    logits = np.zeros((0, n_classes))
    if val_idx.size:
        val_columns = torch.from_numpy(segment_columns(dataset, val_idx, device, encoder))
        with torch.inference_mode():
            logits = np.concatenate([
                trees.logits(val_columns[i:i + CHUNK]).cpu().numpy()
                for i in range(0, val_columns.shape[0], CHUNK)]).astype(np.float64)
    decision = fit_split_decision(logits, dataset.label, dataset.t, dataset.larva_keys(), val_idx,
                                  calibrate, decoding, log=lambda line: log(f"{name}: {line}"))
    scores = {"val_accuracy": None, "val_macro_f1": None, "val_macro_f1_kept": None}
    if val_idx.size:
        cm = confusion_matrix(dataset.label[val_idx], logits.argmax(axis=1), n_classes)
        scores = {"val_accuracy": accuracy(cm), "val_macro_f1": macro_f1(cm)}
        kept = kept_score(decision)
        scores["val_macro_f1_kept"] = scores["val_macro_f1"] if kept is None else kept
    return Candidate(name, trees, decision, scores, time.perf_counter() - t0)


def train_boosting(
    dataset_path: str | Path,
    out_instance: str | Path,
    config: BoostingConfig | None = None,
    calibrate: bool = True,
    decoding: str = "auto",
    post_rule: str | None = None,
    log: Callable[[str], None] = print,
) -> ModelInstance:
    """A tagger of boosted trees on kinematic features alone; save and return it.

    No encoder is trained or run: the instance holds a one-filter placeholder encoder
    (the model-folder format has one) that prediction skips.
    """
    from maggotflow.formats.label import default_colors

    config = BoostingConfig() if config is None else config
    out_instance = Path(out_instance)
    check_target(out_instance)
    device = select_device(config.device)
    with Dataset.load(dataset_path) as dataset:
        train_idx, val_idx = dataset.train_indices(), dataset.val_indices()
        if train_idx.size < 2:
            raise ValueError(f"{dataset.path}: {train_idx.size} training sample(s); boosting needs at least 2")
        spec, labels = dataset.spec, list(dataset.labels)
        candidate = fit_candidate("boosting", dataset, train_idx, val_idx, config, device, encoder=None, latent_dim=1,
                                  calibrate=calibrate, decoding=decoding, weights=dataset.class_weights, log=log)
        provenance = {
            "created_by": created_by(), "command": "train-boosting",
            "dataset": str(Path(dataset.path).resolve()), "dataset_sources": dataset.sources,
            "balancing": dataset.balancing, "split_by": dataset.split_by, "labels": labels,
            "config": asdict(config), "candidates": {"boosting": candidate.summary()}, "chosen": "boosting",
            "best": {"step": 0, "stage": "boosting", **candidate.scores}, "decision": candidate.decision.to_dict(),
            "device": str(device), "seconds": round(candidate.seconds, 1),
        }
        domain = fit_reference(dataset, train_idx, val_idx, config.seed, log)
    encoder_config = EncoderConfig(window=spec.window, n_points=spec.n_points, latent_dim=1, filters=(1,))
    instance = ModelInstance("tagger", spec, encoder_config, classifier_config=candidate.classifier.config,
                             classifier=candidate.classifier, labels=labels, colors=default_colors(labels),
                             post_rule=post_rule, provenance=provenance, decision=candidate.decision,
                             domain=domain)
    instance.save(out_instance)
    log(f"saved boosting tagger {out_instance} (validation macro-F1 {candidate.scores['val_macro_f1_kept']}; "
        f"{candidate.seconds:.1f} s)")
    return instance
