"""Self-supervised pretraining of the encoder (domain.md section 2.5).

From the latent vector of a larva's present window, a decoder reconstructs that window and
predicts the window before and the window after it (past + present + future); the loss is
the mean squared error over all three. No labels are needed, so any tracked data can be
used. The result is a `ModelInstance` of kind "pretrained" (encoder + decoder) from which
taggers are trained (`maggotflow.training`).

The loop, top to bottom:
1. Sample segment centres from the intermediates: only time steps whose whole
   past + present + future span lies inside the track (no edge-clamped padding to learn),
   at most `samples_per_file` per file and `max_segments` in all (a seeded random subset),
   built vectorised per larva (on CUDA: on the GPU, all larvae of a file at once) into one
   float32 buffer filled file by file, so memory holds the kept segments and one file, and
   does not grow with the number of files beyond that.
2. Validation data are other files (or, with a single file, other larvae): overlapping
   windows of one larva in both sets would make the validation loss lie.
3. Adam, random batches (augmented with `augment`: `maggotflow.augmentation`), gradient-norm
   clipping, a budget in optimisation steps; validation MSE before training, every
   `eval_every` steps and at the end; the best validated encoder + decoder are kept and saved.

On CUDA the forward pass runs in mixed precision (float16 autocast + gradient scaling).
On CPU, the same seed on the same machine and torch build gives identical weights (the
skeleton shared with fine-tuning: `maggotflow.loop`). `PretrainConfig` holds every setting
and its default (the workflow's `pretrain` keys and the `maggotflow pretrain` options are
named after its fields).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maggotflow.augmentation import augment, preset
from maggotflow.instance import ModelInstance, check_target, created_by
from maggotflow.isolation import read_isolated
from maggotflow.loop import (
    MixedPrecision,
    Progress,
    duration_text,
    evaluating,
    run_provenance,
    seeded,
    validation_due,
)
from maggotflow.model import Decoder, Encoder, EncoderConfig, count_macs, select_device
from maggotflow.segments import (
    SegmentSpec,
    build_segments,
    build_segments_torch,
    larva_length,
    segment_builder,
    valid_centres,
)
from maggotflow.tracks import Run, TrackDataError

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Budget, optimiser, data sampling and architecture of one pretraining.

    The comment beside a field is its `maggotflow pretrain --help` text.
    """

    steps: int = 1000  # optimisation steps (the published taggers used 1,000 to 10,000)
    batch_size: int = 128  # segments per step
    lr: float = 5e-3  # Adam learning rate
    grad_clip: float = 100.0  # maximum global gradient norm
    eval_every: int = 100  # validate every N steps (also before training and at the end)
    val_batches: int = 20  # validation set: at most val_batches * batch_size held-out segments
    seed: int = 0  # seed of the sampling, the initialisation and the batch order
    device: str = "auto"  # auto (CUDA if available), cpu, cuda or cuda:N
    samples_per_file: int = 20_000  # at most this many training segments per intermediate
    max_segments: int = 250_000  # at most this many training segments in all (~2.4 kB each by default)
    val_fraction: float = 0.2  # share of files (or larvae, with one file) held out when no validation files are given
    # The segments and the encoder: defaults from SegmentSpec and EncoderConfig.
    window: int = SegmentSpec.window  # W, time steps of the present window
    frame_interval: float = SegmentSpec.frame_interval  # s between window steps
    n_points: int = SegmentSpec.n_points  # body points
    interpolate: bool = SegmentSpec.interpolate  # resample on the frame_interval grid; off: native frames (20220418)
    latent_dim: int = EncoderConfig.latent_dim  # size of the latent vector
    filters: tuple[int, ...] = EncoderConfig.filters  # output channels of each conv block
    body_kernel: int = EncoderConfig.body_kernel  # kernel along the body
    time_kernel: int | None = EncoderConfig.time_kernel  # kernel along time; None: the window
    context: int = 1  # windows predicted on each side of the present (1: past + present + future)
    mixed_precision: bool = True  # float16 autocast + gradient scaling on CUDA (ignored on CPU)
    augment: str = "none"  # augment training batches: none, noise (mirror, size, point noise) or full (also speed, bend, rotation)

    def __post_init__(self) -> None:
        self.filters = tuple(int(f) for f in self.filters)
        for name in ("steps", "batch_size", "eval_every", "val_batches", "samples_per_file", "max_segments"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretraining {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ValueError(f"pretraining lr and grad_clip must be > 0, got {self.lr}, {self.grad_clip}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.context < 0:
            raise ValueError(f"context must be >= 0 windows, got {self.context}")
        preset(self.augment)  # validates the name
        self.segment_spec  # noqa: B018  (validates window, frame_interval, n_points)
        self.encoder_config  # noqa: B018

    @property
    def segment_spec(self) -> SegmentSpec:
        return SegmentSpec(window=self.window, frame_interval=self.frame_interval, n_points=self.n_points,
                           interpolate=self.interpolate)

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(window=self.window, n_points=self.n_points, latent_dim=self.latent_dim,
                             filters=self.filters, body_kernel=self.body_kernel, time_kernel=self.time_kernel)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d


# ---------------------------------------------------------------------------- data
def sample_segments(
    run: Run,
    path: Path,
    spec: SegmentSpec,
    context: int,
    cap: int,
    rng: np.random.Generator,
    larvae: set[str] | None = None,
    device: torch.device | str = "cpu",
    builder: str = "auto",
) -> np.ndarray:
    """Segments (N, 2, P, (2*context+1)*W) float32 from the larvae of `run`, N <= cap.

    Candidate centres are the time steps whose whole context span lies inside the track;
    when there are more than `cap`, a random subset (drawn with `rng`) is kept. `larvae`
    restricts to those ids. Larvae with a zero-length spine are skipped with a warning.
    On CUDA the segments are built there, all larvae of the file at once (`builder`: see
    `maggotflow.segments.segment_builder`).
    """
    tracks = [tr for tr in run.tracks if larvae is None or tr.id in larvae]
    masks = [valid_centres(tr, spec, context) for tr in tracks]
    counts = np.array([int(m.sum()) for m in masks], dtype=np.int64)
    total = int(counts.sum())
    span = (2 * context + 1) * spec.window
    if total == 0:
        return np.zeros((0, 2, spec.n_points, span), dtype=np.float32)
    chosen = np.arange(total) if total <= cap else np.sort(rng.choice(total, size=cap, replace=False))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    parts, pieces = [], []
    on_device = segment_builder(device, builder) == "torch"
    for i, (track, mask) in enumerate(zip(tracks, masks)):
        lo, hi = np.searchsorted(chosen, bounds[i]), np.searchsorted(chosen, bounds[i + 1])
        if hi == lo:
            continue
        steps = np.flatnonzero(mask)[chosen[lo:hi] - bounds[i]]
        length = larva_length(track)
        if not np.isfinite(length) or length <= 0:
            logger.warning("%s: larva %s has zero length (all spine points coincide); larva skipped", path, track.id)
        elif on_device:
            pieces.append((track, length, track.t[steps]))
        else:
            parts.append(build_segments(track, spec, length=length, centres=track.t[steps], context=context))
    if pieces:
        parts.append(build_segments_torch(pieces, spec, device, context=context).cpu().numpy())
    if not parts:
        return np.zeros((0, 2, spec.n_points, span), dtype=np.float32)
    return np.concatenate(parts)


def _file_record(path: Path, run: Run, n_segments: int, larvae: set[str] | None = None) -> dict:
    record = {
        "path": str(Path(path).resolve()),
        "source": run.source.name if run.source else None,
        "sha1": run.sha1,
        "larvae": len(run.tracks) if larvae is None else len(larvae),
        "segments": int(n_segments),
    }
    if larvae is not None:
        record["larva_ids"] = sorted(larvae, key=lambda s: (len(s), s))
    return record


def _load_set(
    files: list[Path], spec: SegmentSpec, context: int, per_file: int, total_cap: int,
    seed: int, role: int, larvae: list[set[str] | None] | None = None, device: torch.device | str = "cpu",
) -> tuple[np.ndarray, list[dict]]:
    """Sample segments from each file (at most `per_file` each, `total_cap` in all).

    Memory: one buffer of at most `per_file` x files rows (callers keep that within
    `total_cap` plus one row per file), filled file by file; the subset of `total_cap`
    rows is then compacted in place. Only one file's run is in memory at a time, so the
    peak does not grow with the number of files beyond the segments kept.
    """
    span = (2 * context + 1) * spec.window
    data = np.empty((per_file * len(files), 2, spec.n_points, span), dtype=np.float32)
    filled, records = 0, []
    for i, path in enumerate(files):
        run = read_isolated(path)
        keep = None if larvae is None else larvae[i]
        # One generator per (seed, role, file): a file's sample does not depend on the others.
        seg = sample_segments(run, path, spec, context, per_file, np.random.default_rng([seed, role, i]), keep,
                              device=device)
        if seg.shape[0] == 0:
            logger.warning("%s: no larva is long enough for a %g s span; file unused",
                           path, (2 * context + 1) * spec.duration)
        data[filled:filled + seg.shape[0]] = seg
        filled += seg.shape[0]
        records.append(_file_record(path, run, seg.shape[0], keep))
        del run, seg
    if filled > total_cap:
        keep_rows = np.sort(np.random.default_rng([seed, role, len(files)]).choice(filled, total_cap, replace=False))
        # In place, in ascending blocks: keep_rows[j] >= j, so no row is overwritten before it is read.
        for j in range(0, total_cap, 4096):
            block = keep_rows[j:j + 4096]
            data[j:j + block.size] = data[block]
        filled = total_cap
    return data[:filled], records


def split_validation(
    train_files: list[Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path], list[set[str]] | None, list[set[str]] | None, str]:
    """Hold out validation data when none is given: whole files, or larvae of a single file.

    Returns (train files, validation files, train larvae per file or None, validation
    larvae per file or None, description).
    """
    rng = np.random.default_rng([seed, 2])
    if len(train_files) >= 2:
        n_val = min(len(train_files) - 1, max(1, round(val_fraction * len(train_files))))
        order = rng.permutation(len(train_files))
        val_idx = set(order[:n_val].tolist())
        train = [p for i, p in enumerate(train_files) if i not in val_idx]
        val = [p for i, p in enumerate(train_files) if i in val_idx]
        return train, val, None, None, f"held-out files ({n_val} of {len(train_files)})"
    path = train_files[0]
    ids = [tr.id for tr in read_isolated(path).tracks]
    if len(ids) < 2:
        raise TrackDataError(path, "holds a single larva: give validation files (--val) so that "
                                   "pretraining can keep the best validated encoder")
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    order = rng.permutation(len(ids))
    val_ids = {ids[i] for i in order[:n_val]}
    train_ids = set(ids) - val_ids
    return [path], [path], [train_ids], [val_ids], f"held-out larvae ({n_val} of {len(ids)}, single file)"


# ---------------------------------------------------------------------------- loop
def pretrain(
    train_files: list[Path],
    val_files: list[Path] | None,
    out_instance: Path,
    config: PretrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> ModelInstance:
    """Pretrain an encoder + decoder on intermediates; save and return the "pretrained" instance.

    train_files / val_files: per-file HDF5 intermediates (`maggotflow isolate`); labels are
    ignored. With no validation files, files (or, for a single file, larvae) are held out
    (`config.val_fraction`). out_instance: the folder to write (an existing maggotflow
    instance there is replaced; anything else is refused before training starts).
    config: budget and architecture (default PretrainConfig()). Progress lines go to `log`;
    skipped larvae and files are logged as warnings (logging).
    """
    config = PretrainConfig() if config is None else config
    train_files = [Path(p) for p in train_files]
    val_files = [Path(p) for p in (val_files or [])]
    out_instance = Path(out_instance)
    if not train_files:
        raise ValueError("pretraining needs at least one training file")
    check_target(out_instance)
    device = select_device(config.device)
    both = {p.resolve() for p in train_files} & {p.resolve() for p in val_files}
    if both:
        raise TrackDataError(sorted(both)[0], "is given both for training and for validation "
                                              "(the validation loss would not be held out)")
    spec, ec = config.segment_spec, config.encoder_config

    # data: float32 tensors in memory; batches are random rows
    data = _pretraining_data(train_files, val_files, config, device)
    precision = MixedPrecision(device, config.mixed_precision)
    log(f"pretraining on {precision.describe()}: "
        f"{data.train_x.shape[0]} segments from {len(data.train_records)} file(s), {data.val_x.shape[0]} validation "
        f"segments ({data.split}); encoder {count_macs(ec) / 1e6:.1f} M multiply-adds per segment")

    with seeded(device, config.seed):  # the caller's global RNG is restored afterwards
        model = _Autoencoder(Encoder(ec).to(device), Decoder(ec, config.context).to(device),
                             present=slice(config.context * spec.window, (config.context + 1) * spec.window))
        progress = _fit(model, data, config, precision, log)
        elapsed = progress.elapsed

    # keep the best validated weights
    progress.restore_best()
    model.encoder.eval(), model.decoder.eval()
    instance = ModelInstance(
        "pretrained", spec, ec, encoder=model.encoder, decoder=model.decoder,
        provenance=_provenance(data, config, precision, progress), curves={"pretraining": progress.curve},
    )
    instance.save(out_instance)
    log(f"saved pretrained instance {out_instance} (best validation MSE {progress.best['val_loss']:.4g} at step "
        f"{progress.best['step']}; {config.steps} steps in {duration_text(elapsed)})")
    return instance


@dataclass
class _PretrainingData:
    """The training and validation segments (N, 2, P, (2*context+1)*W) float32 and where
    they came from."""

    train_x: torch.Tensor  # on the device when it fits there (CUDA), else on the CPU
    val_x: torch.Tensor  # on the CPU; moved to the device chunk by chunk
    train_records: list[dict]  # one per training file (`_file_record`)
    val_records: list[dict]
    split: str  # how the validation data were chosen (provenance "validation")
    device: torch.device


def _pretraining_data(train_files: list[Path], val_files: list[Path], config: PretrainConfig,
                      device: torch.device) -> _PretrainingData:
    """Sample the training segments (`samples_per_file` per file, `max_segments` in all) and
    the validation ones (`val_batches` batches) from the given validation files, or from
    files or larvae held out of the training files (`split_validation`). TrackDataError
    when either set holds no segment."""
    spec, ctx = config.segment_spec, config.context
    if val_files:
        train_larvae = val_larvae = None
        split = "given validation files"
    else:
        train_files, val_files, train_larvae, val_larvae, split = split_validation(
            train_files, config.val_fraction, config.seed)
    per_file = min(config.samples_per_file, math.ceil(config.max_segments / len(train_files)))
    train_np, train_records = _load_set(train_files, spec, ctx, per_file, config.max_segments,
                                        config.seed, 0, train_larvae, device)
    val_cap = config.val_batches * config.batch_size
    val_np, val_records = _load_set(val_files, spec, ctx, math.ceil(val_cap / len(val_files)), val_cap,
                                    config.seed, 1, val_larvae, device)
    span = f"{(2 * ctx + 1) * spec.duration:g} s"
    if train_np.shape[0] == 0:
        raise TrackDataError(train_files[0] if len(train_files) == 1 else f"{len(train_files)} training files",
                             f"no larva is long enough for one {span} pretraining span")
    if val_np.shape[0] == 0:
        raise TrackDataError(val_files[0] if len(val_files) == 1 else f"{len(val_files)} validation files",
                             f"no larva is long enough for one {span} pretraining span; "
                             "give other validation files (--val)")
    train_x = torch.from_numpy(train_np)
    if device.type == "cuda":
        with contextlib.suppress(torch.cuda.OutOfMemoryError):
            train_x = train_x.to(device)  # saves a host->device copy per step when it fits
    return _PretrainingData(train_x, torch.from_numpy(val_np), train_records, val_records, split, device)


@dataclass
class _Autoencoder:
    """Encoder + decoder: the latent of a span's present window reconstructs the whole span
    (past + present + future)."""

    encoder: Encoder
    decoder: Decoder
    present: slice  # the present window within a span (time steps): the encoder's input

    def reconstruct(self, span: torch.Tensor) -> torch.Tensor:
        """(B, 2, P, 3W) -> present (B, 2, P, W) -> latent (B, L) -> (B, 2, P, 3W)."""
        return self.decoder(self.encoder(span[..., self.present]))


def _validate(model: _Autoencoder, data: _PretrainingData, precision: MixedPrecision, batch_size: int) -> dict:
    """The validation MSE of the reconstructions of the validation segments (chunks of 4 batches)."""
    total, count = 0.0, 0
    with evaluating(model.encoder, model.decoder), torch.no_grad():
        for i in range(0, data.val_x.shape[0], 4 * batch_size):
            target = data.val_x[i:i + 4 * batch_size].to(data.device)
            with precision.autocast():
                recon = model.reconstruct(target)
            total += float(F.mse_loss(recon.float(), target, reduction="sum"))
            count += target.numel()
    return {"val_loss": total / count}


def _lower_loss(scores: dict, best: dict) -> bool:
    """The best validation is the lowest MSE."""
    return scores["val_loss"] < best["val_loss"]


def _loss_text(scores: dict) -> str:
    return f"val {scores['val_loss']:.4g}"


def _fit(model: _Autoencoder, data: _PretrainingData, config: PretrainConfig, precision: MixedPrecision,
         log: Callable[[str], None]) -> Progress:
    """Adam on seeded random batches of training spans (augmented with `augment`), the MSE
    of their reconstructions, gradient-norm clip; validation before training, every
    `eval_every` steps and at the end. Returns the progress (curve, best state)."""
    spec = config.segment_spec
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    optimiser = torch.optim.Adam(params, lr=config.lr)
    batches = torch.Generator().manual_seed(config.seed)
    aug = preset(config.augment)
    augmentation = torch.Generator().manual_seed(config.seed + 1) if aug is not None else None
    centre = config.context * spec.window + spec.window // 2  # of the present window, in the span

    progress = Progress((model.encoder, model.decoder), config.steps, better=_lower_loss, describe=_loss_text,
                        log=log)
    progress.start(_validate(model, data, precision, config.batch_size))
    for step in range(1, config.steps + 1):
        idx = torch.randint(data.train_x.shape[0], (config.batch_size,), generator=batches)
        target = data.train_x[idx.to(data.train_x.device)].to(data.device, non_blocking=True)  # (B, 2, P, 3W)
        if augmentation is not None:  # the whole span, warped about the present's centre
            target = augment(target, augmentation, centre=centre, aug=aug)
        with precision.autocast():
            recon = model.reconstruct(target)
        loss = F.mse_loss(recon.float(), target)
        progress.train_step(loss, precision.step(optimiser, loss, params, config.grad_clip))
        if validation_due(step, config.eval_every, last=step == config.steps):
            progress.validated(step, _validate(model, data, precision, config.batch_size))
    return progress


def _provenance(data: _PretrainingData, config: PretrainConfig, precision: MixedPrecision,
                progress: Progress) -> dict:
    """provenance.json of the pretrained instance: the files and segments used, how
    validation data were chosen, budget, seed, the best validated step, settings and how
    the loop ran."""
    return {
        "created_by": created_by(),
        "command": "pretrain",
        "train_files": data.train_records,
        "val_files": data.val_records,
        "validation": data.split,
        "steps": config.steps,
        "seed": config.seed,
        "best_step": progress.best["step"],
        "best_val_loss": progress.best["val_loss"],
        "train_segments": int(data.train_x.shape[0]),
        "val_segments": int(data.val_x.shape[0]),
        "config": config.to_dict(),
        **run_provenance(data.device, precision, progress),
    }
