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
   built vectorised per larva and kept in memory as one float32 tensor.
2. Validation data are other files (or, with a single file, other larvae): overlapping
   windows of one larva in both sets would make the validation loss lie.
3. Adam, random batches, gradient-norm clipping, a budget in optimisation steps;
   validation MSE before training, every `eval_every` steps and at the end; the best
   validated encoder + decoder are kept and saved.

On CUDA the forward pass runs in mixed precision (float16 autocast + gradient scaling).
On CPU, the same seed on the same machine and torch build gives identical weights.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maggotflow.instance import ModelInstance, check_target
from maggotflow.isolation import read_isolated
from maggotflow.model import Decoder, Encoder, EncoderConfig, count_macs, select_device
from maggotflow.segments import SegmentSpec, build_segments, valid_centres
from maggotflow.tracks import Run, TrackDataError

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Budget, optimiser, data sampling and architecture of one pretraining."""

    steps: int = 1000  # optimisation steps (the published taggers used 1,000 to 10,000)
    batch_size: int = 128  # segments per step
    lr: float = 5e-3  # Adam learning rate
    grad_clip: float = 100.0  # maximum global gradient norm
    eval_every: int = 100  # validate every N steps (also before training and at the end)
    val_batches: int = 20  # validation set: at most val_batches * batch_size held-out segments
    seed: int = 0  # sampling, initialisation and batch order
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:N"
    samples_per_file: int = 20_000  # at most this many training segments per intermediate
    max_segments: int = 250_000  # at most this many training segments in all (~2.4 kB each by default)
    val_fraction: float = 0.2  # share of files (or larvae, with one file) held out when no validation files are given
    window: int = 20  # W, time steps of the present window
    frame_interval: float = 0.1  # s between window steps (10 Hz)
    n_points: int = 5  # body points
    interpolate: bool = True  # False: windows of native frames (20220418 prototype), no resampling
    latent_dim: int = 25
    filters: tuple[int, ...] = (128, 64, 32, 32, 32, 16)
    body_kernel: int = 5
    time_kernel: int | None = None  # None -> window
    context: int = 1  # windows predicted on each side of the present (1: past + present + future)
    mixed_precision: bool = True  # float16 autocast + GradScaler; CUDA only, ignored on CPU

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
) -> np.ndarray:
    """Segments (N, 2, P, (2*context+1)*W) float32 from the larvae of `run`, N <= cap.

    Candidate centres are the time steps whose whole context span lies inside the track;
    when there are more than `cap`, a random subset (drawn with `rng`) is kept. `larvae`
    restricts to those ids. Larvae with a zero-length spine are skipped with a warning.
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
    parts = []
    for i, (track, mask) in enumerate(zip(tracks, masks)):
        lo, hi = np.searchsorted(chosen, bounds[i]), np.searchsorted(chosen, bounds[i + 1])
        if hi == lo:
            continue
        steps = np.flatnonzero(mask)[chosen[lo:hi] - bounds[i]]
        try:
            parts.append(build_segments(track, spec, centres=track.t[steps], context=context))
        except TrackDataError as err:
            logger.warning("%s: %s; larva skipped", path, err.problem)
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
    seed: int, role: int, larvae: list[set[str] | None] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Sample segments from each file (at most `per_file` each, `total_cap` in all)."""
    arrays, records = [], []
    for i, path in enumerate(files):
        run = read_isolated(path)
        keep = None if larvae is None else larvae[i]
        # One generator per (seed, role, file): a file's sample does not depend on the others.
        seg = sample_segments(run, path, spec, context, per_file, np.random.default_rng([seed, role, i]), keep)
        if seg.shape[0] == 0:
            logger.warning("%s: no larva is long enough for a %g s span; file unused",
                           path, (2 * context + 1) * spec.duration)
        arrays.append(seg)
        records.append(_file_record(path, run, seg.shape[0], keep))
    data = np.concatenate(arrays) if arrays else np.zeros((0,), np.float32)
    if data.shape[0] > total_cap:
        keep_rows = np.sort(np.random.default_rng([seed, role, len(files)]).choice(data.shape[0], total_cap, replace=False))
        data = data[keep_rows]
    return data, records


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
@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on CPU for the duration of the run, then the caller's setting."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _eta(seconds: float) -> str:
    """A duration for humans: '8.5 s', '12.3 min', '2.1 h'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
    spec, ec, ctx = config.segment_spec, config.encoder_config, config.context
    if val_files:
        train_larvae = val_larvae = None
        split = "given validation files"
    else:
        train_files, val_files, train_larvae, val_larvae, split = split_validation(
            train_files, config.val_fraction, config.seed)

    # 1. data: float32 tensors in memory; batches are random rows.
    per_file = min(config.samples_per_file, math.ceil(config.max_segments / len(train_files)))
    train_np, train_records = _load_set(train_files, spec, ctx, per_file, config.max_segments,
                                        config.seed, 0, train_larvae)
    val_cap = config.val_batches * config.batch_size
    val_np, val_records = _load_set(val_files, spec, ctx, math.ceil(val_cap / len(val_files)), val_cap,
                                    config.seed, 1, val_larvae)
    span = f"{(2 * ctx + 1) * spec.duration:g} s"
    if train_np.shape[0] == 0:
        raise TrackDataError(train_files[0] if len(train_files) == 1 else f"{len(train_files)} training files",
                             f"no larva is long enough for one {span} pretraining span")
    if val_np.shape[0] == 0:
        raise TrackDataError(val_files[0] if len(val_files) == 1 else f"{len(val_files)} validation files",
                             f"no larva is long enough for one {span} pretraining span; give other validation files (--val)")
    train_x = torch.from_numpy(train_np)
    val_x = torch.from_numpy(val_np)
    if device.type == "cuda":
        with contextlib.suppress(torch.cuda.OutOfMemoryError):
            train_x = train_x.to(device)  # saves a host->device copy per step when it fits
    present = slice(ctx * spec.window, (ctx + 1) * spec.window)  # encoder input: middle window
    use_amp = device.type == "cuda" and config.mixed_precision
    log(f"pretraining on {device}{' (mixed precision)' if use_amp else ''}: "
        f"{train_x.shape[0]} segments from {len(train_records)} file(s), {val_x.shape[0]} validation "
        f"segments ({split}); encoder {count_macs(ec) / 1e6:.1f} M multiply-adds per segment")

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _deterministic(device):
        # 2. model and optimiser, seeded (the caller's global RNG is restored afterwards).
        torch.manual_seed(config.seed)
        encoder = Encoder(ec).to(device)
        decoder = Decoder(ec, ctx).to(device)
        params = list(encoder.parameters()) + list(decoder.parameters())
        optimiser = torch.optim.Adam(params, lr=config.lr)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        batches = torch.Generator().manual_seed(config.seed)

        def autocast():
            return torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()

        def validate() -> float:
            encoder.eval(), decoder.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for i in range(0, val_x.shape[0], 4 * config.batch_size):
                    target = val_x[i:i + 4 * config.batch_size].to(device)
                    with autocast():
                        recon = decoder(encoder(target[..., present]))
                    total += float(F.mse_loss(recon.float(), target, reduction="sum"))
                    count += target.numel()
            encoder.train(), decoder.train()
            return total / count

        # 3. the loop
        best_val = validate()
        best_step, best = 0, (_state(encoder), _state(decoder))
        curve = [{"step": 0, "train_loss": None, "val_loss": best_val}]
        log(f"step 0/{config.steps} val {best_val:.4g}")
        running, n_running, skipped = 0.0, 0, 0
        t0 = time.perf_counter()
        for step in range(1, config.steps + 1):
            idx = torch.randint(train_x.shape[0], (config.batch_size,), generator=batches)
            target = train_x[idx.to(train_x.device)].to(device, non_blocking=True)  # (B, 2, P, 3W)
            with autocast():
                recon = decoder(encoder(target[..., present]))  # (B, 2, P, W) -> (B, L) -> (B, 2, P, 3W)
            loss = F.mse_loss(recon.float(), target)
            if not torch.isfinite(loss):
                skipped += 1  # a diverging batch must not poison the weights
                optimiser.zero_grad(set_to_none=True)
            else:
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimiser)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimiser)
                scaler.update()
                running += float(loss.detach())
                n_running += 1
            if step % config.eval_every == 0 or step == config.steps:
                val = validate()
                train_loss = running / n_running if n_running else None
                curve.append({"step": step, "train_loss": train_loss, "val_loss": val})
                running, n_running = 0.0, 0
                if val < best_val:
                    best_val, best_step, best = val, step, (_state(encoder), _state(decoder))
                rate = step / (time.perf_counter() - t0)
                train_text = "nan" if train_loss is None else f"{train_loss:.4g}"
                log(f"step {step}/{config.steps} train {train_text} val {val:.4g} "
                    f"({rate:.1f} steps/s, ETA {_eta((config.steps - step) / rate)})"
                    + (f" [{skipped} non-finite batches skipped]" if skipped else ""))
        elapsed = time.perf_counter() - t0

    # 4. keep the best validated weights
    encoder.load_state_dict(best[0])
    decoder.load_state_dict(best[1])
    encoder.eval(), decoder.eval()
    from maggotflow import __version__

    provenance = {
        "created_by": f"maggotflow {__version__}",
        "command": "pretrain",
        "train_files": train_records,
        "val_files": val_records,
        "validation": split,
        "steps": config.steps,
        "seed": config.seed,
        "best_step": best_step,
        "best_val_loss": best_val,
        "train_segments": int(train_x.shape[0]),
        "val_segments": int(val_x.shape[0]),
        "skipped_batches": skipped,
        "config": config.to_dict(),
        "device": str(device),
        "mixed_precision": use_amp,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    instance = ModelInstance(
        "pretrained", spec, ec, encoder=encoder, decoder=decoder, provenance=provenance,
        curves={"pretraining": curve},
    )
    instance.save(out_instance)
    log(f"saved pretrained instance {out_instance} (best validation MSE {best_val:.4g} at step "
        f"{best_step}; {config.steps} steps in {_eta(elapsed)})")
    return instance


# ---------------------------------------------------------------------------- CLI
def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = PretrainConfig()
    parser.add_argument("--train", nargs="+", required=True, type=Path, metavar="H5",
                        help="training intermediates (from `maggotflow isolate`); labels are ignored")
    parser.add_argument("--val", nargs="*", default=[], type=Path, metavar="H5",
                        help="validation intermediates (default: hold out files, or larvae of a single file)")
    parser.add_argument("--out", required=True, type=Path, help="model instance folder to write")
    add = parser.add_argument
    add("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    add("--batch-size", type=int, default=d.batch_size, help=f"segments per step (default {d.batch_size})")
    add("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    add("--grad-clip", type=float, default=d.grad_clip, help=f"gradient norm clip (default {d.grad_clip})")
    add("--eval-every", type=int, default=d.eval_every, help=f"validate every N steps (default {d.eval_every})")
    add("--val-batches", type=int, default=d.val_batches,
        help=f"validation set size in batches (default {d.val_batches})")
    add("--val-fraction", type=float, default=d.val_fraction,
        help=f"share held out when --val is not given (default {d.val_fraction})")
    add("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    add("--device", default=d.device, help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    add("--no-mixed-precision", action="store_true", help="full float32 on CUDA too")
    add("--samples-per-file", type=int, default=d.samples_per_file,
        help=f"max training segments per file (default {d.samples_per_file})")
    add("--max-segments", type=int, default=d.max_segments,
        help=f"max training segments in all, bounds memory (default {d.max_segments})")
    add("--window", type=int, default=d.window, help=f"time steps per window (default {d.window})")
    add("--frame-interval", type=float, default=d.frame_interval,
        help=f"window step in s (default {d.frame_interval})")
    add("--n-points", type=int, default=d.n_points, help=f"body points (default {d.n_points})")
    add("--latent-dim", type=int, default=d.latent_dim, help=f"latent vector size (default {d.latent_dim})")
    add("--filters", type=_int_tuple, default=d.filters,
        help="conv filters per block, comma separated (default " + ",".join(map(str, d.filters)) + ")")
    add("--body-kernel", type=int, default=d.body_kernel, help=f"kernel along the body (default {d.body_kernel})")
    add("--time-kernel", type=int, default=None, help="kernel along time (default: the window)")
    add("--context", type=int, default=d.context, help=f"windows predicted on each side (default {d.context})")


def run_command(args: argparse.Namespace) -> int:
    import sys

    try:
        select_device(args.device)
        config = PretrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, grad_clip=args.grad_clip,
            eval_every=args.eval_every, val_batches=args.val_batches, seed=args.seed,
            device=args.device, samples_per_file=args.samples_per_file,
            max_segments=args.max_segments, val_fraction=args.val_fraction, window=args.window,
            frame_interval=args.frame_interval, n_points=args.n_points, latent_dim=args.latent_dim,
            filters=args.filters, body_kernel=args.body_kernel, time_kernel=args.time_kernel,
            context=args.context, mixed_precision=not args.no_mixed_precision,
        )
    except ValueError as err:  # bad option values: one line, not a traceback
        print(f"maggotflow pretrain: error: {err}", file=sys.stderr)
        return 1
    pretrain(args.train, args.val, args.out, config, log=lambda msg: print(msg, flush=True))
    return 0
