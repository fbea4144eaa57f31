"""`ModelInstance`: one self-describing model folder (a pretrained encoder or a tagger).

    config.json      format_version, kind ("pretrained" | "tagger"), segment_spec (window,
                     frame_interval, n_points), encoder config, normalisation, labels
                     (+ colors), classifier config, decoder config, post_rule, decision
                     (calibration offsets and temporal decoder, `maggotflow.decoding`;
                     null: plain argmax), domain_check (the training data's statistics and
                     thresholds of the domain check, `maggotflow.domain`; null or absent in
                     folders made before it or without validation samples: labels then
                     say "not checked"), created_by
    encoder.pt       encoder state dict
    decoder.pt       decoder state dict          (pretrained)
    classifier.pt    classifier state dict       (tagger)
    curves/          <name>.csv + <name>.png (pretraining, training)
    provenance.json  input files and their sha1s, seeds, budgets, best step

This module also owns what every model folder (any kind, ensembles included) has in
common: `check_model_folder`, the one check of its config.json (missing, damaged, foreign,
format version, kind; the workflow, prediction, `ModelInstance.load` and
`maggotflow.ensemble` all use it); `fingerprint`, the folder's SHA-1 over config.json and
the weights, which decides when a changed model re-tags; `write_description` /
`read_provenance` (config.json and provenance.json); `save_folder` (atomic replacement).

A tagger predicts through `segment_specs` and `predict(segments) -> (classes,
probabilities)`, the interface an ensemble shares (`maggotflow.prediction.Predictor` runs
either).

Weights are plain state dicts written with `torch.save` and read back with
`torch.load(weights_only=True)`: loading a model never executes code from the folder.

`save` builds the folder under a temporary sibling name and renames it into place, so a
crashed job never leaves a half-written instance under the final name. An existing model
folder is replaced only when it holds nothing but maggotflow's files (`is_model_file`: a
user's notes or evaluations added to it are never deleted); anything else at that path is
refused, before training when the command checks early (`check_target`).

config.json is checked before anything is allocated (`check_model_folder`): every size in
it is a whole number within the bounds of `maggotflow.model` (MAX_WINDOW ...), and the
networks it describes hold at most MAX_WEIGHTS numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import torch

from maggotflow.atomic import OutputError, OutputExistsError, first_foreign, make_dirs, refuse_foreign_files, \
    temporary_name
from maggotflow.curves import read_curve, save_curve
from maggotflow.decoding import Decision
from maggotflow.domain import RECORD_KEY, DomainReference
from maggotflow.model import (
    MAX_CONTEXT,
    MAX_POINTS,
    MAX_WEIGHTS,
    MAX_WINDOW,
    ClassifierConfig,
    Decoder,
    Encoder,
    EncoderConfig,
    ForestClassifier,
    Tagger,
    build_classifier,
    check_size,
    count_weights,
    select_device,
)
from maggotflow.postrule import POST_RULES
from maggotflow.segments import SegmentSpec

FORMAT_VERSION = 1
KINDS = ("pretrained", "tagger")
# Every kind a model folder may hold, as the user reads it ("ensemble": `maggotflow.ensemble`).
KIND_NAMES = {"pretrained": "a pretrained encoder", "tagger": "a tagger", "ensemble": "an ensemble"}
# What to do with a folder of the wrong kind.
KIND_HINTS = {
    "pretrained": "train a tagger from it first (maggotflow train)",
    "ensemble": "maggotflow predict and maggotflow.ensemble.load_model read ensembles",
}
CONFIG_NAME = "config.json"
PROVENANCE_NAME = "provenance.json"
# Everything maggotflow writes into a model folder (`write_files`, and `Ensemble.save` for an
# ensemble): config.json, provenance.json, the weights, curves/<name>.csv and .png, and an
# ensemble's members/NNN/ tagger folders. Anything else there is the user's (`is_model_file`).
WEIGHT_FILES = ("encoder.pt", "decoder.pt", "classifier.pt")
CURVES_FOLDER = "curves"
MEMBERS_FOLDER = "members"
# Members of an ensemble (config.json "members"): the 20221228 preset votes with 50.
MAX_MEMBERS = 1000

# What `maggotflow.segments.build_segments` does to every segment; written into config.json
# so that the folder says how its inputs must be prepared.
NORMALISATION = {
    "body_points": "spine resampled to n_points evenly spaced in arc length, tail -> head",
    "time_grid": "centre + (j - window//2) * frame_interval, rounded to 1e-4 s, edge-clamped",
    "scale": "divided by the larva length (median spine length of the track)",
    "rotation": "mean tail -> head axis of the present window along +x",
    "centre": "mean position of the middle body point over the present window",
}


class InstanceError(ValueError):
    """A model folder that cannot be used. `str(err)` is one line '<path>: <problem>'."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


def created_by() -> str:
    """The `created_by` of every config.json written now: "maggotflow <version>"."""
    from maggotflow import __version__

    return f"maggotflow {__version__}"


def is_instance_folder(path: str | Path) -> bool:
    """True if `path` holds a config.json written by maggotflow (any format version)."""
    try:
        config = json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and str(config.get("created_by", "")).startswith("maggotflow")


def is_model_file(relative: PurePosixPath, path: Path) -> bool:
    """True for an entry of a model folder that maggotflow wrote there (see WEIGHT_FILES).

    relative: the entry's path under the model folder; path: the entry itself. A member
    folder (members/NNN) is maggotflow's only when it holds a config.json of maggotflow's;
    a curve's .png only beside its .csv (`save_curve` writes both). The model folder's own
    config.json is checked by the caller (`check_target`).
    """
    parts = relative.parts
    if parts[0] == MEMBERS_FOLDER:
        if len(parts) == 1:
            return path.is_dir()
        if not re.fullmatch(r"\d{3,}", parts[1]):
            return False
        if len(parts) == 2:
            return path.is_dir() and is_instance_folder(path)
        parts = parts[2:]
    if len(parts) == 1:
        return (path.is_file() and parts[0] in (CONFIG_NAME, PROVENANCE_NAME, *WEIGHT_FILES)
                or path.is_dir() and parts[0] == CURVES_FOLDER)
    if len(parts) == 2 and parts[0] == CURVES_FOLDER and path.is_file():
        return path.suffix == ".csv" or path.suffix == ".png" and path.with_suffix(".csv").is_file()
    return False


KEEP_ADVICE = "save the model into another folder or move the file"


def check_target(path: str | Path) -> None:
    """Raise OutputExistsError (one line) unless a model folder may be written at `path`.

    It may when `path` is free, an empty folder, or a model folder holding nothing but
    what maggotflow writes there (`is_model_file`): that folder is replaced. A file, a
    folder that is not a maggotflow model, or a model folder to which the user added a
    file (notes, an evaluation of theirs) is refused, naming the first such file: it is
    never deleted. Called before long work (pretraining, training) so that a wrong `--out`
    fails at once instead of after hours; `save` calls it again.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        what = "a link" if path.is_symlink() else "a file"
        raise OutputExistsError(path, f"is {what}, not a maggotflow model instance; not overwritten: {KEEP_ADVICE}")
    if not is_instance_folder(path):
        foreign = first_foreign(path, lambda relative, entry: False)
        if foreign is not None:
            raise OutputExistsError(path, f"holds {foreign} and is not a maggotflow model instance; "
                                          f"not overwritten: {KEEP_ADVICE}")
        return  # an empty folder
    refuse_foreign_files(path, is_model_file, f"it is never deleted: {KEEP_ADVICE}")


class ModelInstance:
    """A pretrained encoder (+ decoder) or a tagger (encoder + classifier), with its config.

    Attributes: path (folder, None until saved or loaded), kind, segment_spec, encoder_config,
    encoder, decoder (pretrained) / decoder_context, classifier_config, classifier (tagger),
    labels (behaviour names, classifier output order), colors (one "#rrggbb" per label or
    None), post_rule (None or "ABC->AAC"), provenance (dict), curves (name -> rows), domain
    (the `maggotflow.domain.DomainReference` of its training data, or None: not checked).
    `config` is the content of config.json.
    """

    def __init__(
        self,
        kind: str,
        segment_spec: SegmentSpec,
        encoder_config: EncoderConfig,
        encoder: Encoder | None = None,
        decoder: Decoder | None = None,
        classifier_config: ClassifierConfig | None = None,
        classifier: torch.nn.Module | None = None,
        labels: list[str] | None = None,
        colors: list[str] | None = None,
        post_rule: str | None = None,
        provenance: dict | None = None,
        curves: dict[str, list[dict]] | None = None,
        decoder_context: int = 1,
        path: str | Path | None = None,
        decision: Decision | None = None,
        domain: DomainReference | None = None,
    ):
        """Modules left as None are built fresh (Kaiming-initialised) from their configs.
        domain: computed on segments of `segment_spec` (ValueError otherwise)."""
        self.path = None if path is None else Path(path)
        if kind not in KINDS:
            raise ValueError(f"model instance kind must be one of {KINDS}, got {kind!r}")
        if (segment_spec.window, segment_spec.n_points) != (encoder_config.window, encoder_config.n_points):
            raise ValueError(
                f"segment spec (window {segment_spec.window}, {segment_spec.n_points} points) does not match "
                f"the encoder (window {encoder_config.window}, {encoder_config.n_points} points)"
            )
        if post_rule not in POST_RULES:
            raise ValueError(f"post_rule must be one of {POST_RULES}, got {post_rule!r}")
        self.kind = kind
        self.segment_spec = segment_spec
        self.encoder_config = encoder_config
        self.encoder = encoder if encoder is not None else Encoder(encoder_config)
        self.labels = [str(x) for x in (labels or [])]
        self.colors = None if colors is None else [str(c) for c in colors]
        self.post_rule = post_rule
        self.provenance = dict(provenance or {})
        self.curves = dict(curves or {})
        self.decoder_context = decoder_context
        self.decoder = decoder
        self.classifier_config = classifier_config
        self.classifier = classifier
        if kind == "pretrained" and self.decoder is None:
            self.decoder = Decoder(encoder_config, decoder_context)
        if self.decoder is not None:
            self.decoder_context = self.decoder.context
        if kind == "tagger":
            if classifier_config is None:
                raise ValueError("a tagger instance needs a classifier config")
            if classifier_config.latent_dim != encoder_config.latent_dim:
                raise ValueError(
                    f"classifier latent_dim {classifier_config.latent_dim} != encoder latent_dim {encoder_config.latent_dim}"
                )
            if len(self.labels) != classifier_config.n_classes:
                raise ValueError(f"{len(self.labels)} labels for a classifier of {classifier_config.n_classes} classes")
            if self.classifier is None:
                self.classifier = build_classifier(classifier_config)
        self.decision = decision
        if kind == "tagger" and self.decision is None:
            self.decision = Decision.identity(len(self.labels))
        if self.decision is not None and self.decision.offsets.size != len(self.labels):
            raise ValueError(f"decision has {self.decision.offsets.size} offsets for {len(self.labels)} labels")
        if self.colors is not None and len(self.colors) != len(self.labels):
            raise ValueError(f"{len(self.colors)} colors for {len(self.labels)} labels")
        if domain is not None and domain.spec != segment_spec:
            raise ValueError(f"the domain reference was computed on other segments ({domain.spec}) than the "
                             f"model's ({segment_spec})")
        self.domain = domain

    # ----------------------------------------------------------------- properties
    @property
    def config(self) -> dict[str, Any]:
        """The content of config.json."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "segment_spec": self.segment_spec.to_dict(),
            "encoder": self.encoder_config.to_dict(),
            "normalisation": NORMALISATION,
            "labels": list(self.labels),
            "colors": None if self.colors is None else list(self.colors),
            "classifier": None if self.classifier_config is None else self.classifier_config.to_dict(),
            "decoder": None if self.decoder is None else {"context": self.decoder_context},
            "post_rule": self.post_rule,
            "decision": None if self.decision is None or self.decision.is_identity else self.decision.to_dict(),
            RECORD_KEY: None if self.domain is None else self.domain.to_dict(),
            "created_by": created_by(),
        }

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def modules(self) -> dict[str, torch.nn.Module]:
        """The instance's networks by file stem: encoder, decoder and/or classifier."""
        mods = {"encoder": self.encoder, "decoder": self.decoder, "classifier": self.classifier}
        return {k: v for k, v in mods.items() if v is not None}

    def to(self, device: str | torch.device) -> "ModelInstance":
        """Move all networks to `device` ("auto", "cpu", "cuda", ... or a torch.device)."""
        device = select_device(device)
        for module in self.modules().values():
            module.to(device)
        return self

    def tagger(self) -> Tagger:
        """The encoder + classifier in eval mode, on the instance's device (shares weights)."""
        if self.classifier is None:
            where = self.path if self.path is not None else "model instance"
            raise InstanceError(where, f"is a {self.kind} instance without classifier; train a tagger from it first")
        return Tagger(self.encoder, self.classifier).eval()

    @property
    def segment_specs(self) -> list[SegmentSpec]:
        """The segment specs `predict` takes one batch of segments for: a tagger's own spec."""
        return [self.segment_spec]

    def predict(self, segments: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class indices (B,) int64 and class probabilities (B, K) float32 of a tagger.

        segments: one (B, 2, P, W) tensor per spec of `segment_specs` (the interface a tagger
        shares with `maggotflow.ensemble.Ensemble`). Probabilities are the softmax of the
        logits plus the decision's calibration offsets (`maggotflow.decoding`), or a
        forest's own; classes are their argmax (a temporal decoder, if any, is applied per
        larva by `maggotflow.prediction.Predictor`). The caller chooses device, grad mode and autocast.
        """
        scores = self.tagger()(segments[0]).float()  # (B, K) logits, or a forest's probabilities
        if isinstance(self.classifier, ForestClassifier):
            return scores.argmax(dim=1), scores
        if self.decision is not None and np.any(self.decision.offsets):
            scores = scores + torch.as_tensor(self.decision.offsets, dtype=scores.dtype, device=scores.device)
        return scores.argmax(dim=1), scores.softmax(dim=1)

    def __repr__(self) -> str:
        return (f"ModelInstance(kind={self.kind!r}, path={str(self.path)!r}, window={self.segment_spec.window}, "
                f"latent_dim={self.encoder_config.latent_dim}, labels={self.labels})")

    # ----------------------------------------------------------------- save
    def save(self, path: str | Path) -> Path:
        """Write the instance folder at `path` (atomically: temporary sibling, then rename).

        An existing model folder holding only maggotflow's files is replaced; anything else
        there (a file of the user's in it, a folder or file of theirs) raises
        OutputExistsError (`check_target`). Returns the path; `self.path` is updated.
        """
        self.path = save_folder(path, lambda tmp: self.write_files(tmp, title_prefix=Path(path).name))
        return self.path

    def write_files(self, folder: Path, title_prefix: str) -> None:
        """Write config, provenance, weights and curves into the existing, empty `folder`.

        `title_prefix` starts the curve plots' titles. `save` (and an ensemble's save, for
        each member) calls this inside the temporary folder it renames into place.
        """
        write_description(folder, self.config, self.provenance)
        for stem, module in self.modules().items():
            state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
            torch.save(state, folder / f"{stem}.pt")
        for name, rows in self.curves.items():
            save_curve(rows, folder / "curves", name, title=f"{title_prefix}: {name}")

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "ModelInstance":
        """Read the instance folder at `path`, networks in eval mode on `device` (None: CPU).

        Raises InstanceError ('<path>: <problem>') for a missing, foreign or damaged folder.
        """
        path = Path(path)
        config = check_model_folder(path, kinds=KINDS)
        try:
            kind = config["kind"]
            spec = SegmentSpec(**config["segment_spec"])
            encoder_config = EncoderConfig.from_dict(config["encoder"])
            clf = config.get("classifier")
            classifier_config = None if clf is None else ClassifierConfig.from_dict(clf)
            dec = config.get("decoder")
            context = 1 if dec is None else int(dec.get("context", 1))
            labels = config.get("labels") or []
            colors = config.get("colors")
            post_rule = config.get("post_rule")
            decision = (Decision.from_dict(config["decision"], len(labels))
                        if config.get("decision") else None)
            domain = (DomainReference.from_dict(config[RECORD_KEY])
                      if config.get(RECORD_KEY) is not None else None)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InstanceError(path, f"{CONFIG_NAME} is incomplete or invalid ({_one_line(err)})") from None
        provenance = read_provenance(path)
        curves = {}
        for csv_path in sorted((path / "curves").glob("*.csv")):
            try:
                curves[csv_path.stem] = read_curve(csv_path)
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise InstanceError(path, f"curves/{csv_path.name} is not readable ({_one_line(err)})") from None

        encoder = Encoder(encoder_config)
        decoder = Decoder(encoder_config, context) if dec is not None else None
        classifier = build_classifier(classifier_config) if classifier_config is not None else None
        if kind == "pretrained" and decoder is None:
            raise InstanceError(path, f"{CONFIG_NAME} describes a pretrained instance without decoder")
        if kind == "tagger" and classifier is None:
            raise InstanceError(path, f"{CONFIG_NAME} describes a tagger without classifier")
        for stem, module in (("encoder", encoder), ("decoder", decoder), ("classifier", classifier)):
            if module is not None:
                _load_weights(path, stem, module)
        try:
            instance = cls(
                kind, spec, encoder_config, encoder=encoder, decoder=decoder,
                classifier_config=classifier_config, classifier=classifier, labels=labels,
                colors=colors, post_rule=post_rule, provenance=provenance, curves=curves,
                decoder_context=context, path=path, decision=decision, domain=domain,
            )
        except ValueError as err:
            raise InstanceError(path, f"{CONFIG_NAME} is inconsistent ({_one_line(err)})") from None
        for module in instance.modules().values():
            module.eval()
        return instance.to(device if device is not None else "cpu")


def save_folder(path: str | Path, write_into) -> Path:
    """Build a model folder with `write_into(tmp)` in a temporary sibling, then rename it to `path`.

    An existing model folder at `path` holding nothing but maggotflow's files is replaced
    (put back if the rename fails); anything else there raises OutputExistsError naming
    the first file maggotflow did not write (`check_target`, checked before anything is
    written). A crash never leaves a half-written folder under the final name.
    """
    path = Path(path)
    check_target(path)
    make_dirs(path.parent)
    # os.mkdir (not mkdtemp) so the folder gets the user's umask, readable by the lab.
    tmp = path.parent / temporary_name(path, uuid.uuid4().hex[:12])
    try:
        os.mkdir(tmp)
    except OSError as err:
        raise OutputError(tmp, err) from None
    old = None
    try:
        write_into(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.old"
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.rename(old, path)  # put the previous instance back
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def write_description(folder: Path, config: dict, provenance: dict) -> None:
    """Write config.json and provenance.json of a model folder (any kind) into `folder`."""
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")


def read_provenance(path: str | Path) -> dict:
    """provenance.json of the model folder at `path` ({} when absent); InstanceError if unreadable."""
    prov_path = Path(path) / PROVENANCE_NAME
    if not prov_path.exists():
        return {}
    try:
        provenance = json.loads(prov_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InstanceError(path, f"{PROVENANCE_NAME} is not readable JSON ({_one_line(err)})") from None
    if not isinstance(provenance, dict):
        raise InstanceError(path, f"{PROVENANCE_NAME} does not hold a JSON object")
    return provenance


def check_model_folder(path: str | Path, kinds: Sequence[str] = ("tagger", "ensemble")) -> dict:
    """The parsed config.json of the maggotflow model folder at `path`, of one of `kinds`.

    kinds: the kinds the caller can use ("pretrained", "tagger", "ensemble"); the default
    is what prediction reads. Raises InstanceError('<path>: <problem>', one line) for a
    missing folder or config.json ("no model instance there ..."), a damaged or foreign
    config.json, an unsupported format_version, a kind not wanted ("is a pretrained
    encoder, not a tagger or an ensemble; train a tagger from it first ..."), or a size
    that is not a whole number within bounds ("config.json: segment window 100000000 is
    out of range (2..1000)"; `_check_sizes`: nothing is allocated before). An ensemble's
    member folders are checked too. Only config.json files are read: the weights are
    checked when they are loaded.
    """
    path = Path(path)
    config = _read_config(path, kinds)
    _check_sizes(path, config)
    return config


def _read_config(path: Path, kinds: Sequence[str]) -> dict:
    """`check_model_folder` but for the sizes."""
    if not path.exists():
        raise InstanceError(path, "no model instance there (folder not found)")
    if not path.is_dir():
        raise InstanceError(path, "no model instance there (it is a file, not a model folder)")
    config_path = path / CONFIG_NAME
    if not config_path.exists():
        hint = ""
        if (path / "autoencoder_config.json").exists() or (path / "clf_config.json").exists():
            hint = "; it looks like an original MaggotUBA-adapter instance, which maggotflow cannot read"
        raise InstanceError(path, f"no model instance there (no {CONFIG_NAME}: not a maggotflow model instance){hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InstanceError(path, f"{CONFIG_NAME} is damaged: not readable JSON ({_one_line(err)})") from None
    if not isinstance(config, dict) or not str(config.get("created_by", "")).startswith("maggotflow"):
        raise InstanceError(path, f"{CONFIG_NAME} was not written by maggotflow: not a maggotflow model instance")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise InstanceError(
            path, f"model instance format_version {version!r} is not supported "
                  f"(this maggotflow reads version {FORMAT_VERSION}; written by {config.get('created_by')})"
        )
    check_kind(path, config.get("kind"), kinds)
    return config


def _check_sizes(path: Path, config: dict) -> int:
    """Weights of the model folder's networks (members' included), after checking its sizes.

    Every size in config.json must be a whole number within the bounds of
    `maggotflow.model` and the total at most MAX_WEIGHTS; an ensemble's members are
    checked as folders of their own. InstanceError '<path>: config.json: <problem>'
    otherwise. Sections that are missing or not objects are left to `ModelInstance.load`
    (which says the file is incomplete).
    """
    if config.get("kind") == "ensemble":
        return _check_members(path, config.get("members"))
    try:
        segment, encoder, classifier, decoder = (
            config.get(key) if isinstance(config.get(key), dict) else None
            for key in ("segment_spec", "encoder", "classifier", "decoder"))
        if segment is not None:
            _check_json_types("segment", segment, SEGMENT_TYPES)
            for key, low, high in (("window", 2, MAX_WINDOW), ("n_points", 2, MAX_POINTS)):
                if key in segment:
                    check_size(f"segment {key}", segment[key], low, high)
        if encoder is None:
            return 0
        _check_json_types("encoder", encoder, ENCODER_TYPES)
        encoder_config = EncoderConfig.from_dict(encoder)  # checks the bounds
        classifier_config = None
        if classifier is not None:
            _check_json_types("classifier", classifier, CLASSIFIER_TYPES)
            classifier_config = ClassifierConfig.from_dict(classifier)
        context = None
        if decoder is not None:
            _check_json_types("decoder", decoder, {"context": "whole"})
            context = decoder.get("context", 1)
            check_size("decoder context", context, 0, MAX_CONTEXT)
        if config.get(RECORD_KEY) is not None:
            DomainReference.from_dict(config[RECORD_KEY])  # fixed sizes, checked before reading
    except ValueError as err:
        raise InstanceError(path, f"{CONFIG_NAME}: {_one_line(err)}") from None
    weights = count_weights(encoder_config, classifier_config, context)
    if weights > MAX_WEIGHTS:
        raise InstanceError(path, f"{CONFIG_NAME}: the model it describes has {weights:,} weights, "
                                  f"more than maggotflow loads ({MAX_WEIGHTS:,})")
    return weights


def _check_members(path: Path, members: Any) -> int:
    """Check an ensemble's member list and each member folder; their weights, summed."""
    if not isinstance(members, list):
        return 0  # Ensemble.load says the file is incomplete
    try:
        check_size("ensemble members", len(members), 1, MAX_MEMBERS)
    except ValueError as err:
        raise InstanceError(path, f"{CONFIG_NAME}: {err}") from None
    weights = 0
    for name in members:
        relative = PurePosixPath(name) if isinstance(name, str) else None
        if relative is None or relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise InstanceError(path, f"{CONFIG_NAME}: ensemble member {name!r} is not a folder inside the ensemble")
        weights += _check_sizes(path / relative, _read_config(path / relative, kinds=("tagger",)))
    if weights > MAX_WEIGHTS:
        raise InstanceError(path, f"{CONFIG_NAME}: its members have {weights:,} weights together, "
                                  f"more than maggotflow loads ({MAX_WEIGHTS:,})")
    return weights


# The JSON type of every config.json value that decides a size (checked before the config
# dataclasses see them: a string, a float or a boolean where a size goes fails in one line).
SEGMENT_TYPES = {"window": "whole", "n_points": "whole", "frame_interval": "positive", "interpolate": "bool"}
ENCODER_TYPES = {"window": "whole", "n_points": "whole", "latent_dim": "whole", "body_kernel": "whole",
                 "time_kernel": "whole or null", "filters": "wholes"}
CLASSIFIER_TYPES = {"latent_dim": "whole", "n_classes": "whole", "layers": "wholes", "hidden": "wholes",
                    "dropout": "number", "kind": "text", "n_trees": "whole", "n_nodes": "whole",
                    "depth": "whole", "features": "whole", "frame_interval": "positive"}


def _check_json_types(section: str, values: dict, types: dict[str, str]) -> None:
    """ValueError ('<section> <key> <value> is not a whole number', ...) for a value of the wrong type."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for key, kind in types.items():
        if key not in values:
            continue
        value = values[key]
        what = f"{section} {key}"
        if kind == "whole or null" and value is None:
            continue
        if kind in ("whole", "whole or null"):
            _check_whole(what, value)
        elif kind == "wholes":
            if not isinstance(value, list):
                raise ValueError(f"{what} {value!r} is not a list of whole numbers")
            for v in value:
                _check_whole(what, v)
        elif kind == "number" and not (number(value) and math.isfinite(value)):
            raise ValueError(f"{what} {value!r} is not a number")
        elif kind == "positive" and not (number(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"{what} {value!r} is not a number > 0")
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{what} {value!r} is not true or false")
        elif kind == "text" and not isinstance(value, str):
            raise ValueError(f"{what} {value!r} is not a name")


def _check_whole(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):  # also 20.0: torch takes no float sizes
        raise ValueError(f"{what} {value!r} is not a whole number")


def check_kind(path: str | Path | None, kind: Any, kinds: Sequence[str] = ("tagger", "ensemble")) -> None:
    """InstanceError unless `kind` is one of `kinds` (for a folder, or an instance not saved: path None)."""
    if kind not in kinds:
        found = KIND_NAMES.get(kind, f"of unknown kind {kind!r}")  # kind may be any JSON value
        wanted = " or ".join(KIND_NAMES[k] for k in kinds)
        hint = KIND_HINTS.get(kind)
        raise InstanceError(path if path is not None else "model instance",
                            f"is {found}, not {wanted}" + (f"; {hint}" if hint else ""))


def fingerprint(path: str | Path) -> str:
    """SHA-1 (hex) over a model folder's config.json and `*.pt` files, members' included.

    Files are taken recursively in sorted path order; each contributes its path relative to
    the folder (POSIX form) and then its bytes. Curves and provenance do not count, so only
    a change of the model itself changes the fingerprint. Check the folder first
    (`check_model_folder`): a missing folder has the fingerprint of an empty one.
    """
    folder = Path(path)
    digest = hashlib.sha1()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and (file.name == CONFIG_NAME or file.suffix == ".pt"):
            digest.update(file.relative_to(folder).as_posix().encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _one_line(err: BaseException, limit: int = 240) -> str:
    """An exception message folded onto one line (torch's are multi-line), shortened."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_weights(folder: Path, stem: str, module: torch.nn.Module) -> None:
    """Load `<folder>/<stem>.pt` into `module`; any problem -> InstanceError naming the file."""
    weights = folder / f"{stem}.pt"
    if not weights.exists():
        raise InstanceError(folder, f"{weights.name} is missing (the {stem} weights)")
    try:
        with warnings.catch_warnings():  # a foreign pickle warns before it fails
            warnings.simplefilter("ignore")
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise InstanceError(folder, f"{weights.name} is damaged or not a weights file ({_one_line(err)})") from None
    if not isinstance(state, dict):
        raise InstanceError(folder, f"{weights.name} does not hold a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError) as err:
        raise InstanceError(
            folder, f"{weights.name} does not match the {stem} described in {CONFIG_NAME} ({_one_line(err)})"
        ) from None
