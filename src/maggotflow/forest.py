"""The 20220418 prototype: a random forest on the latents of a frozen pretrained encoder.

In: a labelled segment dataset (`maggotflow.dataset`) and a pretrained encoder instance.
Out: a `ModelInstance` of kind "tagger" whose classifier is a `ForestClassifier`
(`maggotflow.model`): the trees are stored as tensors in `classifier.pt`, so predicting
with it needs neither scikit-learn nor pickles, and runs on the GPU like any tagger.

Only the forest learns; the encoder is used as it is (the prototype did not retrain it).
Fitting uses scikit-learn's `RandomForestClassifier` (optional dependency:
`pip install 'maggotflow[forest]'`), with the dataset's class weights and a seed; the
fitted trees are then copied into arrays. Validation macro-F1 (`maggotflow.metrics`, as
reported by `maggotflow evaluate`) is computed on the dataset's validation files and
recorded in the provenance. `ForestConfig` holds every setting and its default (the
workflow's `train.forest` keys and the `maggotflow train-forest` options are named after its fields).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from maggotflow.dataset import Dataset
from maggotflow.domain import fit_reference
from maggotflow.instance import InstanceError, ModelInstance, check_target, created_by
from maggotflow.metrics import accuracy, confusion_matrix, macro_f1
from maggotflow.model import ClassifierConfig, ForestClassifier, select_device

logger = logging.getLogger(__name__)


@dataclass
class ForestConfig:
    """Size and randomness of the forest (a field's comment is its `train-forest --help` text)."""

    n_trees: int = 100  # trees in the forest
    max_depth: int | None = 20  # deepest level of a tree; None: grow until leaves are pure (large arrays)
    min_samples_leaf: int = 2  # fewest training segments in a leaf
    max_samples: int = 200_000  # at most this many training segments are encoded and fitted
    seed: int = 0  # seed of the subsample and the forest
    device: str = "auto"  # where the encoder computes the latents: auto, cpu, cuda or cuda:N
    n_jobs: int = 1  # scikit-learn threads for fitting

    def __post_init__(self) -> None:
        if self.n_trees < 1 or self.min_samples_leaf < 1 or self.max_samples < 2:
            raise ValueError(f"invalid forest settings {self}")
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"forest max_depth must be >= 1 or None, got {self.max_depth}")


def _sklearn_forest():
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:
        raise ImportError(
            "the random-forest tagger (preset 20220418) needs scikit-learn to train: "
            "pip install 'maggotflow[forest]' (prediction does not need it)"
        ) from None
    return RandomForestClassifier


def forest_to_module(forest, n_classes: int, latent_dim: int) -> ForestClassifier:
    """Copy a fitted scikit-learn forest into a `ForestClassifier` (columns = dataset classes)."""
    trees = [est.tree_ for est in forest.estimators_]
    n_nodes = max(t.node_count for t in trees)
    depth = max(int(t.max_depth) for t in trees)
    config = ClassifierConfig(latent_dim=latent_dim, n_classes=n_classes, kind="random_forest",
                              n_trees=len(trees), n_nodes=n_nodes, depth=depth)
    module = ForestClassifier(config)
    feature = np.zeros((len(trees), n_nodes), np.int64)
    threshold = np.zeros((len(trees), n_nodes), np.float32)
    left = np.tile(np.arange(n_nodes), (len(trees), 1))  # padding and leaves point to themselves
    right = left.copy()
    value = np.full((len(trees), n_nodes, n_classes), 1.0 / n_classes, np.float32)
    columns = np.asarray(forest.classes_, dtype=np.int64)  # classes seen in training
    for i, tree in enumerate(trees):
        m = tree.node_count
        inner = tree.children_left[:m] >= 0
        feature[i, :m] = np.where(inner, tree.feature[:m], 0)
        # scikit-learn sends x <= threshold left; float32 thresholds keep that for float32 latents
        threshold[i, :m] = np.where(inner, tree.threshold[:m], 0.0)
        left[i, :m] = np.where(inner, tree.children_left[:m], np.arange(m))
        right[i, :m] = np.where(inner, tree.children_right[:m], np.arange(m))
        counts = tree.value[:m, 0, :].astype(np.float64)  # (m, classes seen): weighted counts or fractions
        totals = counts.sum(axis=1, keepdims=True)
        fractions = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / counts.shape[1])
        value[i, :m] = 0.0
        value[i, :m][:, columns] = fractions
    with torch.no_grad():
        module.feature.copy_(torch.from_numpy(feature))
        module.threshold.copy_(torch.from_numpy(threshold))
        module.left.copy_(torch.from_numpy(left))
        module.right.copy_(torch.from_numpy(right))
        module.value.copy_(torch.from_numpy(value))
    return module


def _latents(encoder: torch.nn.Module, dataset: Dataset, indices: np.ndarray, device: torch.device,
             chunk: int = 2048) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, indices.size, chunk):
            x = torch.from_numpy(np.ascontiguousarray(dataset.read_segments(indices[i:i + chunk])))
            out.append(encoder(x.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.latent_dim), np.float32)


def train_forest(
    dataset_path: str | Path,
    out_instance: str | Path,
    pretrained: str | Path,
    config: ForestConfig | None = None,
    log: Callable[[str], None] = print,
) -> ModelInstance:
    """Fit a random forest on the frozen encoder's latents; save and return the tagger instance."""
    from maggotflow.formats.label import default_colors

    config = ForestConfig() if config is None else config
    out_instance = Path(out_instance)
    check_target(out_instance)
    RandomForestClassifier = _sklearn_forest()
    device = select_device(config.device)
    base = ModelInstance.load(pretrained, device=device)
    encoder = base.encoder.eval()
    t0 = time.perf_counter()
    with Dataset.load(dataset_path) as dataset:
        if not base.segment_spec.compatible_with(dataset.spec):
            raise InstanceError(pretrained, f"the encoder was pretrained on segments of {base.segment_spec.describe()} "
                                            f"but the dataset {dataset.path} has segments of {dataset.spec.describe()}")
        labels, n_classes = list(dataset.labels), len(dataset.labels)
        train_idx, val_idx = dataset.train_indices(), dataset.val_indices()
        rng = np.random.default_rng(config.seed)
        if train_idx.size > config.max_samples:
            train_idx = np.sort(rng.choice(train_idx, config.max_samples, replace=False))
        if train_idx.size < 2:
            raise ValueError(f"{dataset.path}: {train_idx.size} training sample(s); a forest needs at least 2")
        log(f"encoding {train_idx.size} training / {val_idx.size} validation segments on {device}")
        z_train, y_train = _latents(encoder, dataset, train_idx, device), dataset.label[train_idx].astype(np.int64)
        z_val, y_val = _latents(encoder, dataset, val_idx, device), dataset.label[val_idx].astype(np.int64)
        weights = {int(k): float(w) for k, w in enumerate(dataset.class_weights)}
        provenance_data = {"dataset": str(Path(dataset.path).resolve()), "dataset_sources": dataset.sources,
                           "balancing": dataset.balancing, "split_by": dataset.split_by,
                           "class_weights": [float(w) for w in dataset.class_weights]}
        spec = dataset.spec
        domain = fit_reference(dataset, dataset.train_indices(), val_idx, config.seed, log)  # every training row
    log(f"fitting {config.n_trees} trees (max depth {config.max_depth}) on {n_classes} classes")
    forest = RandomForestClassifier(
        n_estimators=config.n_trees, max_depth=config.max_depth, min_samples_leaf=config.min_samples_leaf,
        class_weight=weights, random_state=config.seed, n_jobs=config.n_jobs,
    ).fit(z_train, y_train)
    classifier = forest_to_module(forest, n_classes, base.encoder_config.latent_dim).to(device)
    scores = {"val_accuracy": None, "val_macro_f1": None}
    if val_idx.size:
        with torch.inference_mode():
            predicted = classifier(torch.from_numpy(z_val).to(device)).argmax(1).cpu().numpy()
        cm = confusion_matrix(y_val, predicted, n_classes)
        scores = {"val_accuracy": accuracy(cm), "val_macro_f1": macro_f1(cm)}
    elapsed = time.perf_counter() - t0
    provenance = {
        "created_by": created_by(), "command": "train-forest", **provenance_data,
        "pretrained": str(Path(pretrained).resolve()), "labels": labels, "config": asdict(config),
        "best": {"step": 0, "stage": "forest", **scores}, "device": str(device), "seconds": round(elapsed, 1),
    }
    instance = ModelInstance(
        "tagger", spec, base.encoder_config, encoder=encoder, classifier_config=classifier.config,
        classifier=classifier, labels=labels, colors=default_colors(labels), provenance=provenance,
        curves=dict(base.curves), domain=domain,
    )
    instance.save(out_instance)
    log(f"saved random-forest tagger {out_instance} (validation macro-F1 {scores['val_macro_f1']}; "
        f"{elapsed:.1f} s)")
    return instance
