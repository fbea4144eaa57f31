"""The MaggotUBA tagger as `nn.Module`s: encoder, decoder (pretraining), classifier.

A segment is a tensor `(2, P, W)` = (x/y, body point tail -> head, time step), see
`maggotflow.segments`. Shapes in comments: B batch, C channels, P body points, W window
steps, L latent dimension, K classes.

- `Encoder`: six conv blocks `zero-pad(same) -> Conv2d(bias=False) -> ReLU -> BatchNorm2d`
  without pooling, kernels alternating along the body `(body_kernel, 1)` and along time
  `(1, time_kernel)`, then flatten -> Linear -> BatchNorm1d to the latent vector
  (domain.md section 2.4). With the defaults this costs ~21 million multiply-adds per
  segment, most of it in the (1, W) convolution after the 128-filter block (`count_macs`).
- `Decoder`: the encoder mirrored; from the latent of the present window it reconstructs
  the present and predicts `context` windows before and after it (self-supervised
  pretraining, `maggotflow.pretraining`).
- `Classifier`: dense layers on the latent; `ForestClassifier`: a random forest on the
  latent stored as tensors (the 20220418 prototype); `BoostedTrees`: gradient-boosted
  trees on the segment's kinematic features (and, optionally, the latent) stored as
  tensors (`maggotflow.boosting`); `Tagger` = encoder + classifier.

All weights of convolutions and dense layers are Kaiming-initialised (normal, fan-in, ReLU
gain), biases zero.

Every size of a config is bounded (`MAX_WINDOW` ... `MAX_WEIGHTS`, checked by the config
dataclasses, and by `count_weights` for their product): a model folder's config.json is
read before anything is allocated (`maggotflow.instance.check_model_folder`), so a crafted
or mistyped size fails in one line instead of asking torch for hundreds of gigabytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

# Bounds of the sizes a model config may hold. Each is far above any tagger maggotflow
# trains (presets: windows of 15-30 steps, 5 body points, latent 25-100, 6 blocks of <= 128
# filters, hidden layers of 100-128, 6-7 behaviours, forests of 100 trees) and low enough
# that a crafted or mistyped config.json fails in one line, before allocating anything.
MAX_WINDOW = 1000  # time steps W of a segment: 100 s at 10 Hz (behaviours last seconds; a (1, W) kernel costs W^2)
MAX_POINTS = 100  # body points P (spines have 5 to 11)
MAX_LATENT = 1024  # latent dimension L (10 in the paper, 25 or 100 in the published taggers)
MAX_CHANNELS = 1024  # filters of one conv block, width of one dense layer (MaggotUBA: 128 at most)
MAX_LAYERS = 32  # conv blocks of the encoder (MaggotUBA: 6), hidden dense layers of a classifier
MAX_CONTEXT = 10  # windows the decoder predicts on each side of the present one (pretraining uses 1)
MAX_CLASSES = 256  # behaviours K (LarvaTagger's taggers have 6 or 7)
MAX_FEATURES = 1024  # kinematic features beside the latent (`maggotflow.kinematics` gives 36)
MAX_TREES = 10_000  # trees of a random forest (the 20220418 prototype: 100)
MAX_NODES = 10_000_000  # nodes per tree (a tree fitted on 200,000 segments has < 200,000)
# Numbers stored in all networks of a model together (weights, biases, BatchNorm statistics,
# forest arrays), `count_weights`: sizes legal one by one can still multiply into terabytes.
# 400 million is 1.6 GB as float32, ~1000x the default tagger (0.3 million) and room for a
# 100-tree forest grown without depth limit on maggotflow's 200,000-segment cap.
MAX_WEIGHTS = 400_000_000


def check_size(what: str, value: int, low: int, high: int) -> None:
    """ValueError '<what> <value> is out of range (<low>..<high>)' unless low <= value <= high."""
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range ({low}..{high})")


@dataclass(frozen=True)
class EncoderConfig:
    """MaggotUBA encoder hyper-parameters (domain.md section 2.4)."""

    window: int = 20  # time steps W per segment (20 x 0.1 s = 2 s)
    n_points: int = 5  # body points P (tail -> head)
    latent_dim: int = 25  # L: 10 in the paper, 25 or 100 in the published taggers
    filters: tuple[int, ...] = (128, 64, 32, 32, 32, 16)  # output channels of each conv block
    body_kernel: int = 5  # kernels alternate (body_kernel, 1) and (1, time_kernel), body first
    time_kernel: int | None = None  # None -> window (the kernel spans the whole segment)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        check_size("encoder window", self.window, 1, MAX_WINDOW)
        check_size("encoder n_points", self.n_points, 1, MAX_POINTS)
        check_size("encoder latent_dim", self.latent_dim, 1, MAX_LATENT)
        check_size("encoder body_kernel", self.body_kernel, 1, MAX_POINTS)
        if self.time_kernel is not None:
            check_size("encoder time_kernel", self.time_kernel, 1, MAX_WINDOW)
        check_size("encoder blocks", len(self.filters), 1, MAX_LAYERS)
        for f in self.filters:
            check_size("encoder filters", f, 1, MAX_CHANNELS)

    @property
    def kernels(self) -> list[tuple[int, int]]:
        """Kernel (body, time) of each conv block: body first, then alternating."""
        tk = self.window if self.time_kernel is None else self.time_kernel
        return [(self.body_kernel, 1) if i % 2 == 0 else (1, tk) for i in range(len(self.filters))]

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        """Inverse of `to_dict`; unknown keys raise ValueError (a config from elsewhere)."""
        return _from_known_keys(cls, d, "encoder")


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier on the latent vector: dense layers (default), a random forest or boosted trees.

    kind "dense": `layers` and `dropout` apply. kind "random_forest" (the 20220418
    prototype): `n_trees` trees stored as arrays of `n_nodes` nodes each (padded), walked
    `depth` levels deep; the arrays are filled by `maggotflow.forest.train_forest`. kind
    "boosting": the same tree arrays, gradient-boosted on the segment's `features`
    kinematic features, followed by the latent when `use_latent` (filled by
    `maggotflow.boosting`); without the latent the encoder is not run at all.
    """

    latent_dim: int  # L, equal to the encoder's
    n_classes: int  # K, number of behaviours
    layers: tuple[int, ...] = ()  # widths of the hidden layers; () -> a single Linear layer
    dropout: float = 0.0  # dropout probability applied to the input of every Linear layer
    kind: str = "dense"  # "dense", "random_forest" or "boosting"
    n_trees: int = 0  # random_forest, boosting: number of trees
    n_nodes: int = 0  # random_forest, boosting: nodes per tree (arrays padded to the largest tree)
    depth: int = 0  # random_forest, boosting: depth of the deepest tree
    features: int = 0  # dense, boosting: kinematic features of the segment beside the latent (0 = none)
    frame_interval: float = 0.1  # s between segment steps, for the kinematic features' rates
    use_latent: bool = True  # boosting only: the latent follows the kinematic features (False: features alone)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(w) for w in self.layers))
        if self.kind not in CLASSIFIER_KINDS:
            raise ValueError(f"classifier kind must be one of {CLASSIFIER_KINDS}, got {self.kind!r}")
        check_size("classifier latent_dim", self.latent_dim, 1, MAX_LATENT)
        check_size("classifier n_classes", self.n_classes, 1, MAX_CLASSES)
        check_size("classifier hidden layers", len(self.layers), 0, MAX_LAYERS)
        for width in self.layers:
            check_size("classifier layers", width, 1, MAX_CHANNELS)
        check_size("classifier features", self.features, 0, MAX_FEATURES)
        if self.features and self.kind == "random_forest":
            raise ValueError("kinematic features need a dense or boosting classifier, got kind 'random_forest'")
        if self.kind == "boosting" and not self.features:
            raise ValueError("a boosting classifier needs the kinematic features (features > 0)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"classifier dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.frame_interval) and self.frame_interval > 0):
            raise ValueError(f"classifier frame_interval must be > 0 s, got {self.frame_interval}")
        if self.kind in TREE_KINDS:
            check_size("classifier n_trees", self.n_trees, 1, MAX_TREES)
            check_size("classifier n_nodes", self.n_nodes, 1, MAX_NODES)
            check_size("classifier depth", self.depth, 0, self.n_nodes - 1)  # a tree of m nodes: < m levels

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        """Inverse of `to_dict`; unknown keys raise ValueError. Model folders written before
        the `layers` name hold the same widths as `hidden`."""
        d = dict(d)
        if "hidden" in d and "layers" not in d:
            d["layers"] = d.pop("hidden")
        return _from_known_keys(cls, d, "classifier")


CLASSIFIER_KINDS = ("dense", "random_forest", "boosting")
TREE_KINDS = ("random_forest", "boosting")  # classifiers stored as tree arrays


def _plain(config) -> dict:
    """A config dataclass as JSON-ready values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _from_known_keys(cls, d: dict, what: str):
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}")
    return cls(**d)


def same_padding(kernel: tuple[int, int]) -> tuple[int, int, int, int]:
    """ZeroPad2d arguments (left, right, top, bottom) keeping the size for any kernel.

    An even kernel needs an odd total padding: the extra zero goes after (right/bottom),
    as PyTorch's own padding="same" does.
    """
    kh, kw = kernel
    return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)


def conv_block(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Sequential:
    """zero-pad(same) -> Conv2d(bias=False) -> ReLU -> BatchNorm2d; (B, c_in, P, T) -> (B, c_out, P, T)."""
    return nn.Sequential(
        nn.ZeroPad2d(same_padding(kernel)),
        nn.Conv2d(c_in, c_out, kernel, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(c_out),
    )


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases for all conv/dense layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """(B, 2, P, W) normalised segments -> (B, L) latent vectors."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        channels = (2,) + config.filters
        self.blocks = nn.Sequential(*[
            conv_block(channels[i], channels[i + 1], k) for i, k in enumerate(config.kernels)
        ])
        self.to_latent = nn.Linear(config.filters[-1] * config.n_points * config.window, config.latent_dim)
        self.norm = nn.BatchNorm1d(config.latent_dim)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.shape[1:] != (2, c.n_points, c.window):
            raise ValueError(f"encoder expects segments of shape (B, 2, {c.n_points}, {c.window}), got {tuple(x.shape)}")
        h = self.blocks(x)  # (B, F_last, P, W)
        h = self.to_latent(h.flatten(1))  # (B, L)
        return self.norm(h)  # (B, L)


class Decoder(nn.Module):
    """(B, L) latent of the present window -> (B, 2, P, (2*context + 1) * W).

    With context=1 the output is past + present + future windows along time. The layers
    mirror the encoder: a dense layer to the last encoder block's shape (stretched to the
    whole context), then the conv blocks in reverse order of channels and kernels, the last
    one (mirror of the encoder's first block) a plain Conv2d to the 2 coordinates.
    """

    def __init__(self, config: EncoderConfig, context: int = 1):
        super().__init__()
        check_size("decoder context", context, 0, MAX_CONTEXT)
        self.config = config
        self.context = context
        self.span = (2 * context + 1) * config.window  # T, time steps reconstructed
        rev = tuple(reversed(config.filters))  # e.g. (16, 32, 32, 32, 64, 128)
        kernels = list(reversed(config.kernels))  # mirror of the encoder's kernel sequence
        self.from_latent = nn.Linear(config.latent_dim, rev[0] * config.n_points * self.span)
        self.norm = nn.BatchNorm2d(rev[0])
        self.blocks = nn.Sequential(*[
            conv_block(rev[i], rev[i + 1], kernels[i]) for i in range(len(rev) - 1)
        ])
        self.to_coords = nn.Sequential(
            nn.ZeroPad2d(same_padding(kernels[-1])),
            nn.Conv2d(rev[-1], 2, kernels[-1], bias=True),  # linear output: coordinates
        )
        kaiming_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.from_latent(z)  # (B, F_last * P * T)
        h = h.view(z.shape[0], c.filters[-1], c.n_points, self.span)  # (B, F_last, P, T)
        h = self.norm(torch.relu(h))
        h = self.blocks(h)  # (B, F_first, P, T)
        return self.to_coords(h)  # (B, 2, P, T)


class Classifier(nn.Module):
    """(B, L) latent -> (B, K) logits: [Dropout -> Linear -> ReLU] per hidden layer, Dropout -> Linear.

    With `config.features` F > 0 the input is the latent followed by the segment's F
    kinematic features (`maggotflow.kinematics`), standardised with the training set's mean
    and SD (buffers `feature_mean`, `feature_scale`, saved with the weights): `forward(z, x)`
    then needs the segments x too.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        if config.features:
            from maggotflow.kinematics import FEATURE_NAMES, KinematicFeatures

            if config.features != len(FEATURE_NAMES):
                raise ValueError(f"classifier expects {config.features} kinematic features, "
                                 f"maggotflow.kinematics gives {len(FEATURE_NAMES)}")
            self.kinematics = KinematicFeatures(config.frame_interval)
            self.register_buffer("feature_mean", torch.zeros(config.features))
            self.register_buffer("feature_scale", torch.ones(config.features))
        widths = (config.latent_dim + config.features,) + config.layers + (config.n_classes,)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        kaiming_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised kinematic features (B, F) of segments x (B, 2, P, W)."""
        return (self.kinematics(x) - self.feature_mean) / self.feature_scale

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.features:
            if x is None:
                raise ValueError("this classifier uses kinematic features: pass the segments too")
            z = torch.cat([z, self.features(x).to(z.dtype)], dim=1)
        return self.layers(z)  # (B, K)


class ForestClassifier(nn.Module):
    """(B, L) latent -> (B, K) class probabilities averaged over the trees of a random forest.

    The trees are tensors (buffers, saved in the state dict like any weights), so the
    forest runs on the same device as the encoder and needs no scikit-learn at prediction
    time. Per tree t and node m: `feature[t, m]` (latent index), `threshold[t, m]` (go left
    when z[feature] <= threshold), `left`/`right` child indices (a leaf points to itself)
    and `value[t, m]` (K class probabilities of a leaf). Walking `depth` levels reaches a
    leaf from the root for every segment at once.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        if config.kind != "random_forest":
            raise ValueError(f"ForestClassifier needs a random_forest config, got kind {config.kind!r}")
        self.config = config
        t, m, k = config.n_trees, config.n_nodes, config.n_classes
        self.register_buffer("feature", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(t, m, dtype=torch.float32))
        self.register_buffer("left", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("value", torch.full((t, m, k), 1.0 / k, dtype=torch.float32))

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        node = walk_trees(self, z.float(), self.config.depth)  # (T, B) leaf of each tree
        n_trees, batch = node.shape
        k = self.value.shape[2]
        leaf = self.value.gather(1, node.unsqueeze(2).expand(n_trees, batch, k))  # (T, B, K)
        return leaf.mean(dim=0)  # (B, K) probabilities


def walk_trees(trees: nn.Module, columns: torch.Tensor, depth: int) -> torch.Tensor:
    """The leaf (T, B) each of B rows of `columns` (B, C) reaches in each of T trees.

    `trees` holds the buffers feature, threshold, left, right (T, M); a row goes left when
    its column `feature` is <= `threshold` (compared in the threshold's dtype). Walking
    `depth` levels reaches a leaf from the root for every row and tree at once (leaves and
    padding point to themselves).
    """
    columns_t = columns.to(trees.threshold.dtype).t()  # (C, B)
    node = torch.zeros(trees.feature.shape[0], columns.shape[0], dtype=torch.int64, device=columns.device)
    for _ in range(depth):
        f = trees.feature.gather(1, node)  # (T, B) column index at each current node
        go_left = columns_t.gather(0, f) <= trees.threshold.gather(1, node)  # (T, B)
        node = torch.where(go_left, trees.left.gather(1, node), trees.right.gather(1, node))
    return node


class BoostedTrees(nn.Module):
    """(B, L) latent + segments (B, 2, P, W) -> (B, K) logits of gradient-boosted trees.

    The columns the trees split on are the segment's kinematic features
    (`maggotflow.kinematics`, unscaled: trees do not need it), followed by the latent when
    `config.use_latent`. Tree t adds `value[t, leaf]` to the logit of class `tree_class[t]`;
    `baseline` (K) starts every class (a class the training data lacked stays at -1e4).
    The buffers feature, threshold (float64, the precision scikit-learn splits in), left,
    right and value have the shapes of `ForestClassifier`'s; `maggotflow.boosting` fills them.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        if config.kind != "boosting":
            raise ValueError(f"BoostedTrees needs a boosting config, got kind {config.kind!r}")
        from maggotflow.kinematics import FEATURE_NAMES, KinematicFeatures

        if config.features != len(FEATURE_NAMES):
            raise ValueError(f"boosted trees expect {config.features} kinematic features, "
                             f"maggotflow.kinematics gives {len(FEATURE_NAMES)}")
        self.config = config
        self.kinematics = KinematicFeatures(config.frame_interval)
        t, m, k = config.n_trees, config.n_nodes, config.n_classes
        self.register_buffer("feature", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(t, m, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(t, m, dtype=torch.int64))
        self.register_buffer("value", torch.zeros(t, m, dtype=torch.float32))
        self.register_buffer("tree_class", torch.zeros(t, dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros(k, dtype=torch.float32))

    def columns(self, z: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """The (B, C) float32 columns the trees split on."""
        features = self.kinematics(x)
        return torch.cat([features, z.float()], dim=1) if self.config.use_latent else features

    def forward(self, z: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("a boosting classifier splits on kinematic features: pass the segments too")
        return self.logits(self.columns(z, x))

    def logits(self, columns: torch.Tensor) -> torch.Tensor:
        """(B, K) float32 logits of precomputed columns (B, C), on the trees' device."""
        node = walk_trees(self, columns.to(self.threshold.device), self.config.depth)  # (T, B)
        leaf = self.value.gather(1, node).double()  # (T, B)
        logits = self.baseline.double().unsqueeze(0).repeat(node.shape[1], 1)  # (B, K)
        logits.index_add_(1, self.tree_class, leaf.t())
        return logits.float()


def build_classifier(config: ClassifierConfig) -> nn.Module:
    """The classifier module a config describes: `Classifier`, `ForestClassifier` or `BoostedTrees`."""
    if config.kind == "random_forest":
        return ForestClassifier(config)
    return BoostedTrees(config) if config.kind == "boosting" else Classifier(config)


class Tagger(nn.Module):
    """Encoder + classifier: (B, 2, P, W) segments -> (B, K) logits."""

    def __init__(self, encoder: Encoder, classifier: Classifier):
        super().__init__()
        if encoder.config.latent_dim != classifier.config.latent_dim:
            raise ValueError(
                f"classifier expects latent_dim {classifier.config.latent_dim}, "
                f"encoder gives {encoder.config.latent_dim}"
            )
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self.classifier.config
        if config.kind == "boosting" and not config.use_latent:
            return self.classifier(None, x)  # kinematic features alone: the encoder is not run
        return self.classifier(self.encoder(x), x)  # (B, 2, P, W) -> (B, L) (+ features) -> (B, K)


def count_macs(config: EncoderConfig) -> int:
    """Multiply-adds of one encoder forward pass per segment (convolutions + dense layer).

    Padding keeps every feature map at (P, W), so block i costs
    P * W * c_out * c_in * kh * kw. Batch norms and ReLUs are ignored (element-wise).
    """
    channels = (2,) + config.filters
    positions = config.n_points * config.window
    conv = sum(
        positions * channels[i + 1] * channels[i] * kh * kw
        for i, (kh, kw) in enumerate(config.kernels)
    )
    dense = config.filters[-1] * positions * config.latent_dim
    return int(conv + dense)


def count_weights(encoder: EncoderConfig, classifier: ClassifierConfig | None = None,
                  decoder_context: int | None = None) -> int:
    """Numbers in the state dicts of the networks these configs describe, without building them.

    Weights, biases, BatchNorm statistics (and step counters) and forest arrays, for the
    encoder, plus the classifier and/or the decoder (of `decoder_context` windows) when
    given. Compared with MAX_WEIGHTS before a model folder is loaded.
    """
    def batch_norm(c: int) -> int:
        return 4 * c + 1  # weight, bias, running mean and variance; num_batches_tracked

    channels = (2,) + encoder.filters
    positions = encoder.n_points * encoder.window
    total = sum(channels[i] * channels[i + 1] * kh * kw + batch_norm(channels[i + 1])
                for i, (kh, kw) in enumerate(encoder.kernels))
    total += (encoder.filters[-1] * positions + 1) * encoder.latent_dim + batch_norm(encoder.latent_dim)
    if decoder_context is not None:
        rev = tuple(reversed(encoder.filters))
        kernels = list(reversed(encoder.kernels))
        span = encoder.n_points * (2 * decoder_context + 1) * encoder.window
        total += (encoder.latent_dim + 1) * rev[0] * span + batch_norm(rev[0])
        total += sum(rev[i] * rev[i + 1] * kh * kw + batch_norm(rev[i + 1])
                     for i, (kh, kw) in enumerate(kernels[:-1]))
        kh, kw = kernels[-1]
        total += rev[-1] * 2 * kh * kw + 2
    if classifier is not None and classifier.kind == "random_forest":
        # feature, threshold, left, right: (T, M); value: (T, M, K)
        total += classifier.n_trees * classifier.n_nodes * (4 + classifier.n_classes)
    elif classifier is not None and classifier.kind == "boosting":
        # feature, threshold, left, right, value: (T, M); tree_class: (T,); baseline: (K,)
        total += classifier.n_trees * (5 * classifier.n_nodes + 1) + classifier.n_classes
    elif classifier is not None:
        widths = (classifier.latent_dim + classifier.features,) + classifier.layers + (classifier.n_classes,)
        total += sum((a + 1) * b for a, b in zip(widths, widths[1:])) + 2 * classifier.features
    return int(total)


def select_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for `name`: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1".

    Asking for CUDA where there is none raises ValueError (one line), instead of failing
    later deep inside torch.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available here "
                "(no GPU visible, or torch built without CUDA); use --device cpu or auto"
            )
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ValueError(f"device {name!r} requested but only {n} CUDA device(s) are visible")
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here")
    return device
