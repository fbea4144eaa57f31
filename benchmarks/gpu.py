"""GPU benchmarks: what one CUDA device gives the tagger, and what it costs.

Where torch sees no CUDA device this group prints one line, "no CUDA device: GPU
benchmarks skipped", and returns. BENCH_GPU_FORCE_CPU=1 runs every part on the CPU at tiny
sizes instead: a smoke run of the code paths (the figures then mean nothing).
`benchmarks/gpu_check.sh` runs this group on a fresh checkout of a GPU machine and writes
everything to one file.

Parts, in this order (BENCH_GPU_PARTS, comma-separated, picks some):
- `throughput`: the default tagger (what `maggotflow train` gives with its defaults: default
  encoder, a hidden layer of 128, the 36 kinematic features, an HMM decoder; random
  weights, as cost does not depend on them) on one simulated `.spine` file (BENCH_GPU_LARVAE
  larvae x BENCH_GPU_DURATION s at 30 fps; default 100 x 300 s, ~700,000 segments),
  at every batch size of BENCH_GPU_BATCHES (1024,4096,16384,65536):
  model-only (segments already on the device, `predict` under `torch.inference_mode` and
  float16 autocast, classes kept on the device, `torch.cuda.synchronize` around the timing;
  BENCH_GPU_MODEL_SEGMENTS segments per pass, at least one batch) and end-to-end
  (`predict_files` from the file on disk to its `.label`: reading, segments, forward passes,
  HMM, writing; the model loaded once, outside the timing), in segments/s, and their ratio;
- `breakdown`: the same file at the batch `predict` uses on the device (8192 on CUDA),
  timed apart: `read_run`, segment building in the chunks `predict` uses (on the device
  with `maggotflow.segments.build_segments_torch` where it exists, else numpy
  `build_segments` + copy to the device, said in the row), the forward passes, the HMM
  decoder (CPU), each as a share of the end-to-end time (the parts overlap in `predict`:
  their sum may exceed it); where `Predictor` takes `segments=`, also end-to-end with the
  other segment builder;
- `readers`: end-to-end `predict_files` over BENCH_GPU_READERS_FILES (8) hard links of the
  throughput file, at the batch `predict` uses, with 1, 4 and all the allocated cores but
  one (what `readers="auto"` picks on a GPU) as reader processes, in segments/s: whether the
  GPU waits for its readers;
- `training`: BENCH_GPU_TRAIN_FILES (8) simulated labelled files of BENCH_GPU_TRAIN_DURATION
  (60) s, isolated; `maggotflow.pretraining.pretrain` for BENCH_GPU_PRETRAIN_STEPS (200) and
  `maggotflow.training.train_tagger` for BENCH_GPU_STAGE1_STEPS (100) + BENCH_GPU_STAGE2_STEPS
  (200), default batch sizes and mixed precision; steps/s over the second half of
  pretraining and of stage 2 (the first half is the warm-up; timed between the loops' own
  validation lines, so each figure includes one small validation). The tagger so trained is
  then used for the float16 agreement: its labels on every step of the throughput file
  (BENCH_GPU_AGREE_SEGMENTS caps it), once in plain float32 (TF32 off) and once under
  float16 autocast as `predict` runs it, the share of identical steps per step (calibrated
  argmax) and after its decoder (target >= 99.9 %; random weights would give near-ties,
  hence a trained tagger);
- `ensemble`: the 20221228 preset (50 members: 25 on 1.5-s and 25 on 3-s windows; random
  weights; BENCH_GPU_ENSEMBLE_MEMBERS members per window overrides the counts) model-only
  (BENCH_GPU_ENSEMBLE_SEGMENTS, 65536, per pass) and end-to-end on a smaller file
  (BENCH_GPU_ENSEMBLE_LARVAE, 10, larvae x BENCH_GPU_DURATION s) at every batch size.

Other sizes: BENCH_GPU_MODEL_SEGMENTS (262144), BENCH_GPU_FILTERS (the training part's
encoder; default: the default encoder's). With BENCH_GPU_FORCE_CPU=1 every default is tiny
(3 larvae x 20 s, batches 64 and 256, a few training steps of a small encoder, 2-member
ensemble).

Every figure is the median of up to BENCH_GPU_REPEATS (3) timings; a measurement stops
repeating once it has used BENCH_GPU_BUDGET (10) s (it always runs once), so that the
group stays under ~5 minutes on one H200 (an estimate: this group has not run on a GPU
yet). A part that fails prints its traceback and the others still run; the group then
exits 1. Figures are printed as they come, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from benchmarks.common import row
from maggotflow import segments as segments_module
from maggotflow.dataset import build_dataset
from maggotflow.decoding import Decision
from maggotflow.ensemble import Ensemble
from maggotflow.formats import read_run
from maggotflow.formats.spine import write_spine
from maggotflow.instance import ModelInstance
from maggotflow.isolation import isolate
from maggotflow.kinematics import FEATURE_NAMES
from maggotflow.model import ClassifierConfig, EncoderConfig, count_macs, select_device
from maggotflow.prediction import DEFAULT_BATCH_SIZE, MIN_CHUNK, Predictor, predict_files
from maggotflow.pretraining import PretrainConfig, pretrain
from maggotflow.segments import SegmentSpec, build_segments, larva_length
from maggotflow.simulation import SimulationConfig, label_file_path, simulate, simulate_run
from maggotflow.training import STAGES, TrainConfig, train_tagger

ENV = os.environ.get
FORCE_CPU = ENV("BENCH_GPU_FORCE_CPU", "0") == "1"


def _int(name: str, default: int, tiny: int) -> int:
    """An integer size: the environment's, else the GPU default (tiny on a forced CPU run)."""
    return int(ENV(name, tiny if FORCE_CPU else default))


LARVAE = _int("BENCH_GPU_LARVAE", 100, 3)
DURATION = float(ENV("BENCH_GPU_DURATION", 20 if FORCE_CPU else 300))
BATCHES = [int(b) for b in ENV("BENCH_GPU_BATCHES", "64,256" if FORCE_CPU else "1024,4096,16384,65536").split(",")]
MODEL_SEGMENTS = _int("BENCH_GPU_MODEL_SEGMENTS", 262_144, 512)
REPEATS = _int("BENCH_GPU_REPEATS", 3, 2)
BUDGET_S = float(ENV("BENCH_GPU_BUDGET", 2 if FORCE_CPU else 10))
TRAIN_FILES = _int("BENCH_GPU_TRAIN_FILES", 8, 2)
TRAIN_DURATION = float(ENV("BENCH_GPU_TRAIN_DURATION", 10 if FORCE_CPU else 60))
PRETRAIN_STEPS = _int("BENCH_GPU_PRETRAIN_STEPS", 200, 4)
STAGE1_STEPS = _int("BENCH_GPU_STAGE1_STEPS", 100, 2)
STAGE2_STEPS = _int("BENCH_GPU_STAGE2_STEPS", 200, 4)
# The training part's encoder: the default one on the GPU, a small one on a forced CPU run.
FILTERS = tuple(int(f) for f in ENV("BENCH_GPU_FILTERS", "8,8,8,8,8,8" if FORCE_CPU else
                                    ",".join(map(str, EncoderConfig.filters))).split(","))
AGREE_SEGMENTS = _int("BENCH_GPU_AGREE_SEGMENTS", 0, 0)  # 0: every step of the file
ENSEMBLE_PRESET = "20221228"
ENSEMBLE_MEMBERS = _int("BENCH_GPU_ENSEMBLE_MEMBERS", 0, 1)  # per window; 0: the preset's counts
ENSEMBLE_LARVAE = _int("BENCH_GPU_ENSEMBLE_LARVAE", 10, 1)
ENSEMBLE_SEGMENTS = _int("BENCH_GPU_ENSEMBLE_SEGMENTS", 65_536, 128)
READERS_FILES = _int("BENCH_GPU_READERS_FILES", 8, 2)
PARTS = ("throughput", "breakdown", "readers", "training", "ensemble")
LABELS = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]
AGREEMENT_TARGET = 0.999
NO_CUDA = "  no CUDA device: GPU benchmarks skipped"


# ---------------------------------------------------------------------------- helpers
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn: Callable[[], object], device: torch.device, repeats: int = REPEATS,
            budget_s: float = BUDGET_S) -> list[float]:
    """Wall times (s) of `fn()`, synchronised: up to `repeats` calls, none started after
    `budget_s` s (at least one)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(1, repeats) and (not times or time.perf_counter() - start < budget_s):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def predict_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """The precision `Predictor.classify` runs the forward passes in: float16 autocast on
    CUDA, plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def low_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """The reduced precision compared with float32 (agreement): float16 autocast on CUDA, as
    `Predictor.classify`; on the CPU bfloat16 autocast, only so that a CPU smoke run takes
    the same code path (prediction itself runs float32 there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Plain float32 arithmetic for the block: no TF32 in cuDNN convolutions (on by default in
    torch) or matrix products; the caller's settings are restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def precision_name(device: torch.device, agreement: bool = False) -> str:
    """The name of `predict_precision` (or, `agreement`, of `low_precision`) on `device`."""
    return "float16" if device.type == "cuda" else "bfloat16" if agreement else "float32"


def predicted(model, segments: Sequence[torch.Tensor], batch: int, device: torch.device,
              precision: Callable[[], contextlib.AbstractContextManager]) -> tuple[np.ndarray, np.ndarray]:
    """Classes (N,) int64 and log-probabilities (N, K) float32 of `model.predict` (a tagger
    or an ensemble) on `segments` (one (N, 2, P, W) tensor per segment spec), `batch` rows
    at a time, in the `precision()` context (e.g. `strict_float32`, or
    `lambda: low_precision(device)`), back on the host as prediction has them."""
    n = segments[0].shape[0]
    classes, scores = [], []
    with torch.inference_mode(), precision():
        for i in range(0, n, batch):
            c, p = model.predict([x[i:i + batch].to(device) for x in segments])
            classes.append(c.cpu())
            scores.append(p.float().clamp_min(1e-30).log().cpu())  # as Predictor.classify
    if not classes:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return torch.cat(classes).numpy(), torch.cat(scores).numpy()


def agreement(a: np.ndarray | Sequence[np.ndarray], b: np.ndarray | Sequence[np.ndarray]) -> tuple[float, int, int]:
    """(share of identical entries, number that differ, number compared) of two label arrays
    (or two lists of per-larva arrays, concatenated). ValueError if their shapes differ; the
    share of nothing compared is NaN."""
    a = np.concatenate([np.ravel(x) for x in a]) if isinstance(a, (list, tuple)) else np.asarray(a)
    b = np.concatenate([np.ravel(x) for x in b]) if isinstance(b, (list, tuple)) else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare labels of shapes {a.shape} and {b.shape}")
    n = int(a.size)
    differ = int(np.count_nonzero(a != b))
    return (1.0 - differ / n if n else float("nan")), differ, n


STEP_LINE = re.compile(r"^step (\d+)/\d+(?: \(([^)]*)\))?")


class StepClock:
    """A `log` for the training loops that notes when each progress line came.

    The loops print `step N/T [(stage)] ...` after each validation; `rate()` is steps per
    second between the last two such lines (of `stage`, when given).
    """

    def __init__(self, echo: Callable[[str], None] | None = None):
        self.records: list[tuple[int, str | None, float]] = []  # (step, stage, time)
        self.echo = echo

    def __call__(self, text: str) -> None:
        match = STEP_LINE.match(text)
        if match:
            self.records.append((int(match.group(1)), match.group(2), time.perf_counter()))
        if self.echo is not None:
            self.echo(text)

    def rate(self, stage: str | None = None) -> tuple[float, int, int]:
        """(steps/s, first step, last step) between the last two lines of `stage`."""
        return steps_per_second([r for r in self.records if stage is None or r[1] == stage])


def steps_per_second(records: Sequence[tuple[int, str | None, float]]) -> tuple[float, int, int]:
    """(steps/s, first step, last step) between the last two (step, stage, time) records;
    ValueError with fewer than two or no steps between them."""
    if len(records) < 2:
        raise ValueError(f"{len(records)} progress line(s): need two to time the steps between them")
    (s0, _, t0), (s1, _, t1) = records[-2], records[-1]
    if s1 <= s0 or t1 <= t0:
        raise ValueError(f"no steps timed between progress lines of steps {s0} and {s1}")
    return (s1 - s0) / (t1 - t0), s0, s1


def tiled(x: torch.Tensor, n: int) -> torch.Tensor:
    """The first `n` rows of `x` repeated as often as needed."""
    if x.shape[0] >= n:
        return x[:n]
    return x.repeat(-(-n // x.shape[0]), *([1] * (x.dim() - 1)))[:n]


def chunks(tracks: Sequence, lengths: Sequence[float], size: int) -> Iterator[list[tuple]]:
    """(track, length, centres) pieces in chunks of `size` steps spanning larvae, as
    `Predictor` groups them."""
    chunk, filled = [], 0
    for track, length in zip(tracks, lengths):
        start = 0
        while start < track.n_steps:
            count = min(size - filled, track.n_steps - start)
            chunk.append((track, length, track.t[start:start + count]))
            filled += count
            start += count
            if filled == size:
                yield chunk
                chunk, filled = [], 0
    if chunk:
        yield chunk


def model_only_times(model, segments: Sequence[torch.Tensor], batch: int, device: torch.device,
                     repeats: int = REPEATS, warm_up: bool = True) -> list[float]:
    """Timings of `model.predict` over all rows of `segments` (on the device, one tensor per
    segment spec), `batch` rows at a time, under `torch.inference_mode` and
    `predict_precision(device)`; the classes stay on the device until the end (one copy back)."""
    n = segments[0].shape[0]

    def run() -> None:
        with torch.inference_mode(), predict_precision(device):
            classes = [model.predict([x[i:i + batch] for x in segments])[0] for i in range(0, n, batch)]
        torch.cat(classes).cpu()

    if warm_up:
        with torch.inference_mode(), predict_precision(device):
            model.predict([x[:batch] for x in segments])
    return timings(run, device, repeats=repeats)


def end_to_end_times(model, path: Path, out: Path, batch: int, device: torch.device,
                     repeats: int = REPEATS, **predictor_options) -> list[float]:
    """Timings of `predict_files` from the track file `path` to the `.label` `out`, the
    model loaded once (a `Predictor` of `batch` segments per forward pass) outside them."""
    predictor = Predictor(model, device=device, batch_size=batch, **predictor_options)
    return timings(lambda: predict_files(predictor, [path], out_paths=[out], overwrite=True), device,
                   repeats=repeats)


def default_tagger(labels: Sequence[str]) -> ModelInstance:
    """A tagger as `maggotflow train` makes it with its defaults (default encoder, TrainConfig's
    classifier layers and kinematic features, an HMM decoder as validation keeps it), random
    weights and a uniform HMM (cost does not depend on them)."""
    spec, encoder, train = SegmentSpec(), EncoderConfig(), TrainConfig()
    classifier = ClassifierConfig(latent_dim=encoder.latent_dim, n_classes=len(labels), layers=train.layers,
                                  features=len(FEATURE_NAMES) if train.kinematic_features else 0,
                                  frame_interval=spec.frame_interval)
    k = len(labels)
    decision = Decision(np.zeros(k), decoder="hmm", mean_duration=np.ones(k),
                        jump=(np.ones((k, k)) - np.eye(k)) / max(k - 1, 1))
    return ModelInstance("tagger", spec, encoder, classifier_config=classifier, labels=list(labels),
                         decision=decision)


def ensemble_preset(members_per_window: int = 0) -> Ensemble:
    """The 20221228 preset's ensemble, random weights (`benchmarks.presets` builds the members)."""
    from benchmarks.presets import load_preset, untrained_tagger

    preset = load_preset(ENSEMBLE_PRESET)
    torch.manual_seed(0)
    members = [untrained_tagger(preset, m["window"]) for m in preset["ensemble"]["members"]
               for _ in range(members_per_window or m["count"])]
    return Ensemble(members, post_rule=preset["train"].get("post_rule"))


def write_track_file(folder: Path, larvae: int, duration_s: float, seed: int):
    """A simulated `.spine` of `larvae` larvae x `duration_s` s at 30 fps: (path, run, MB)."""
    config = SimulationConfig(duration_s=duration_s, larvae=(larvae, larvae), frame_rate_hz=(30.0, 30.0))
    run = simulate_run(np.random.default_rng(seed), config, {"id": "20200101_000000"})
    path = folder / f"20200101_000000@g@e@t15@p@{seed}.spine"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_spine(run, path, write_outline=False)
    return path, run, path.stat().st_size / 1e6


def predictor_takes_segments() -> bool:
    """Whether `Predictor` takes `segments=` (who builds the segments: numpy or torch)."""
    return "segments" in inspect.signature(Predictor).parameters


def cuda_header(device: torch.device) -> None:
    line = f"  device {device}, torch {torch.__version__}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        line += (f" ({props.name}, {props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs), "
                 f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                 f"cudnn.benchmark {torch.backends.cudnn.benchmark}, cudnn.allow_tf32 "
                 f"{torch.backends.cudnn.allow_tf32}")
    else:
        line += f", {torch.get_num_threads()} threads (BENCH_GPU_FORCE_CPU=1: smoke run, figures mean nothing)"
    print(line)


# ---------------------------------------------------------------------------- shared data
class Bench:
    """What the parts share: the device, a scratch folder and the throughput file (made once)."""

    def __init__(self, device: torch.device, root: Path):
        self.device, self.root = device, root
        self.predict_batch = DEFAULT_BATCH_SIZE.get(device.type, 128)

    @cached_property
    def track(self):
        """(path, run, MB) of the throughput file."""
        t0 = time.perf_counter()
        path, run, size = write_track_file(self.root / "tracks", LARVAE, DURATION, seed=1)
        steps = sum(tr.n_steps for tr in run.tracks)
        print(f"  file: {LARVAE} larvae x {DURATION:.0f} s at 30 fps, {steps:,} segments (one per step), "
              f"{size:.0f} MB .spine (simulated and written in {time.perf_counter() - t0:.0f} s)")
        return path, run, size

    @property
    def steps(self) -> int:
        return sum(tr.n_steps for tr in self.track[1].tracks)

    @cached_property
    def segments(self) -> torch.Tensor:
        """Default-spec segments of every step of the throughput file, larva after larva (host)."""
        return torch.from_numpy(np.concatenate([build_segments(tr, SegmentSpec()) for tr in self.track[1].tracks]))

    def segments_on_device(self, n: int = 0) -> torch.Tensor:
        """The first `n` segments (all: 0; tiled when there are fewer) on the device."""
        return (tiled(self.segments, n) if n else self.segments).to(self.device)


# ---------------------------------------------------------------------------- parts
def part_throughput(bench: Bench) -> None:
    device = bench.device
    path, _, size = bench.track
    instance = default_tagger(LABELS).to(device)
    print(f"  default tagger: {count_macs(instance.encoder_config) / 1e6:.1f} M multiply-adds per segment "
          f"(encoder), classifier layers {instance.classifier_config.layers}, "
          f"{instance.classifier_config.features} kinematic features, HMM decoder; random weights")
    steps, out = bench.steps, bench.root / "out" / "throughput.label"
    for batch in BATCHES:
        x = bench.segments_on_device(max(batch, MODEL_SEGMENTS))
        n = x.shape[0]
        t_model = model_only_times(instance, [x], batch, device)
        x = None  # the device memory goes back before predict runs
        t_e2e = end_to_end_times(instance, path, out, batch, device)
        model_rate, e2e_rate = n / statistics.median(t_model), steps / statistics.median(t_e2e)
        row(f"model-only, batch {batch:,}", model_rate, "segments/s",
            f"median of {len(t_model)}, {statistics.median(t_model):.3f} s / {n:,}, {precision_name(device)}")
        row(f"end-to-end predict_files, batch {batch:,}", e2e_rate, "segments/s",
            f"median of {len(t_e2e)}, {statistics.median(t_e2e):.2f} s / {steps:,} ({size:.0f} MB); "
            f"x{e2e_rate / model_rate:.2f} of model-only")
        free(device)


def part_readers(bench: Bench) -> None:
    """End-to-end segments/s over READERS_FILES copies of the throughput file with 1, 4 and
    all allocated cores but one as reader processes (`predict_files(readers=)`)."""
    from maggotflow.threads import allocated_cores

    device, batch = bench.device, bench.predict_batch
    path, _, size = bench.track
    paths = []
    for i in range(READERS_FILES):  # hard links: the same bytes under other names, no disk
        copy = bench.root / "readers" / str(i) / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if not copy.exists():
            os.link(path, copy)
        paths.append(copy)
    outs = [bench.root / "out" / "readers" / f"{i}.label" for i in range(len(paths))]
    cores = allocated_cores()
    counts = sorted({1, 4, max(1, cores - 1)})
    print(f"  default tagger, batch {batch:,}, {READERS_FILES} x {size:.0f} MB .spine, {cores} allocated core(s); "
          f"readers {', '.join(map(str, counts))} (all but one core: what readers=auto picks on a GPU)")
    predictor = Predictor(default_tagger(LABELS).to(device), device=device, batch_size=batch)
    steps = bench.steps * len(paths)
    for readers in counts:
        t = timings(lambda: predict_files(predictor, paths, out_paths=outs, overwrite=True, readers=readers,
                                          cores=max(cores, readers + 1)), device, repeats=REPEATS)
        rate = steps / statistics.median(t)
        row(f"end-to-end, {readers} reader process{'es' if readers > 1 else ''}", rate, "segments/s",
            f"median of {len(t)}, {statistics.median(t):.2f} s / {steps:,} ({size * len(paths):.0f} MB)")


def part_breakdown(bench: Bench) -> None:
    device, batch = bench.device, bench.predict_batch
    path, run, size = bench.track
    steps = bench.steps
    spec = SegmentSpec()
    instance = default_tagger(LABELS).to(device)
    size_chunk = batch * max(1, -(-MIN_CHUNK // batch))  # as Predictor chunks the steps
    builder = getattr(Predictor(instance, device=device, batch_size=batch), "builder", "numpy")
    out = bench.root / "out" / "breakdown.label"
    print(f"  default tagger, batch {batch:,} (what predict uses on {device.type}), {steps:,} segments, "
          f"chunks of {size_chunk:,} steps, predict's segment builder here: {builder}")
    t_e2e = statistics.median(end_to_end_times(instance, path, out, batch, device))

    def share(name: str, seconds: float, note: str = "") -> None:
        row(name, seconds * 1e3, "ms", f"{seconds / t_e2e:6.1%} of end-to-end{'; ' + note if note else ''}")

    t_read = statistics.median(timings(lambda: read_run(path), device))
    share(f"read_run (.spine, {size:.0f} MB)", t_read)

    tracks = run.tracks
    lengths = [larva_length(tr) for tr in tracks]

    def numpy_build():
        for chunk in chunks(tracks, lengths, size_chunk):
            buffer = np.concatenate([build_segments(tr, spec, length=ln, centres=c) for tr, ln, c in chunk])
            torch.from_numpy(buffer).to(device)

    t_numpy = statistics.median(timings(numpy_build, device))
    torch_builder = getattr(segments_module, "build_segments_torch", None)
    if torch_builder is not None:
        def torch_build():
            for chunk in chunks(tracks, lengths, size_chunk):
                torch_builder(chunk, spec, device)

        t_torch = statistics.median(timings(torch_build, device))
        first = next(chunks(tracks, lengths, size_chunk))
        reference = np.concatenate([build_segments(tr, spec, length=ln, centres=c) for tr, ln, c in first])
        diff = float(np.abs(torch_builder(first, spec, device).cpu().numpy() - reference).max())
        share(f"segments, build_segments_torch on {device.type}", t_torch,
              f"{steps / t_torch:,.0f} segments/s; max |torch - numpy| {diff:.1e} (first chunk)")
        share("segments, numpy build_segments + copy", t_numpy, f"{steps / t_numpy:,.0f} segments/s")
    else:
        t_torch = t_numpy
        share("segments, numpy build_segments + copy", t_numpy,
              f"{steps / t_numpy:,.0f} segments/s; maggotflow.segments has no build_segments_torch: numpy fallback")

    # Forward passes as predict runs them: classes and log-probabilities back to the host.
    x = bench.segments_on_device()
    with torch.inference_mode(), predict_precision(device):
        instance.predict([x[:batch]])  # warm-up
    outputs: list[tuple[np.ndarray, np.ndarray]] = []
    t_forward = statistics.median(timings(
        lambda: outputs.append(predicted(instance, [x], batch, device, lambda: predict_precision(device))), device))
    x = None
    share(f"forward passes (batch {batch:,}, {precision_name(device)})", t_forward,
          f"{steps / t_forward:,.0f} segments/s, classes and log-probabilities to the host")
    log_probabilities = np.split(outputs[-1][1], np.cumsum([tr.n_steps for tr in tracks])[:-1])
    t_hmm = statistics.median(timings(lambda: instance.decision.smooth_many(log_probabilities,
                                                                            [tr.t for tr in tracks]), device))
    share("HMM decoder (CPU, all larvae)", t_hmm)
    parts = t_read + (t_torch if builder == "torch" else t_numpy) + t_forward + t_hmm
    row(f"end-to-end predict_files (segments: {builder})", t_e2e * 1e3, "ms",
        f"{steps / t_e2e:,.0f} segments/s; read + {builder} segments + forward + HMM = x{parts / t_e2e:.2f} "
        f"of it (they overlap in predict; the rest is grouping and writing the .label)")
    if predictor_takes_segments():
        other = "numpy" if builder == "torch" else "torch"
        t_other = statistics.median(end_to_end_times(instance, path, out, batch, device, segments=other))
        row(f"end-to-end predict_files (segments: {other})", t_other * 1e3, "ms",
            f"{steps / t_other:,.0f} segments/s; x{t_other / t_e2e:.2f} of the time with {builder}")
    free(device)


def part_training(bench: Bench) -> None:
    device = bench.device
    root = bench.root / "training"
    t0 = time.perf_counter()
    files = simulate(root / "sim", TRAIN_FILES, seed=13, formats=("spine",),
                     config=SimulationConfig(duration_s=TRAIN_DURATION))
    intermediates = []
    for i, path in enumerate(files):
        target = root / "iso" / f"{i}.h5"
        isolate(path, target, label_file_path(path))
        intermediates.append(target)
    t_data = time.perf_counter() - t0

    quiet = StepClock()
    pretrain(intermediates, None, root / "pretrained",
             PretrainConfig(steps=PRETRAIN_STEPS, eval_every=max(1, PRETRAIN_STEPS // 2), filters=FILTERS,
                            device=str(device)), log=quiet)
    pre_rate, pre_from, pre_to = quiet.rate()
    t1 = time.perf_counter()
    dataset = build_dataset(intermediates, root / "dataset.h5", seed=0)
    n_samples = len(dataset)
    dataset.close()
    clock = StepClock()
    train_tagger(root / "dataset.h5", root / "tagger", root / "pretrained",
                 TrainConfig(stage1_steps=STAGE1_STEPS, stage2_steps=STAGE2_STEPS,
                             eval_every=max(1, STAGE2_STEPS // 2), device=str(device)), log=clock)
    fine_rate, fine_from, fine_to = clock.rate(STAGES[1])
    t_train = time.perf_counter() - t1
    print(f"  data: {TRAIN_FILES} simulated labelled files x {TRAIN_DURATION:.0f} s ({t_data:.0f} s), "
          f"{n_samples:,} dataset samples; encoder filters {FILTERS}; dataset + training {t_train:.0f} s")
    batch = PretrainConfig().batch_size
    mixed = "float16 autocast + gradient scaling" if device.type == "cuda" else "float32"
    row(f"pretraining (batch {batch})", pre_rate, "steps/s",
        f"steps {pre_from}-{pre_to} after {pre_from} warm-up steps, {mixed}")
    row(f"fine-tuning, stage 2 (batch {TrainConfig().batch_size})", fine_rate, "steps/s",
        f"steps {fine_from}-{fine_to} ({fine_from - STAGE1_STEPS} stage-2 warm-up steps), {mixed}")

    # float16 agreement: the trained tagger's labels in float32 and under autocast.
    tagger = ModelInstance.load(root / "tagger", device=device)
    best = tagger.provenance.get("best", {})
    f1 = best.get("val_macro_f1")
    print(f"  agreement tagger: validation macro-F1 {f1:.3f} after {PRETRAIN_STEPS} + {STAGE1_STEPS} + "
          f"{STAGE2_STEPS} steps, decoder {tagger.decision.decoder}" if f1 is not None else
          "  agreement tagger: no validation macro-F1")
    _, run, _ = bench.track
    tracks = run.tracks
    if not tagger.segment_spec.compatible_with(SegmentSpec()):
        raise ValueError(f"the trained tagger's segments ({tagger.segment_spec.describe()}) are not the default ones")
    x = bench.segments_on_device()
    limit = AGREE_SEGMENTS or x.shape[0]
    x = x[:limit]
    full32, logp32 = predicted(tagger, [x], bench.predict_batch, device, strict_float32)
    full16, logp16 = predicted(tagger, [x], bench.predict_batch, device, lambda: low_precision(device))
    x = None
    share, differ, n = agreement(full16, full32)
    verdict = "met" if share >= AGREEMENT_TARGET else "NOT met"
    row(f"{precision_name(device, agreement=True)} vs float32 (no TF32), identical steps", 100 * share, "%",
        f"{100 * share:.3f} % ({differ:,} of {n:,} differ); target >= {100 * AGREEMENT_TARGET:g} %: {verdict}")
    # The same after the tagger's decoder (what the .label files carry), larvae whole.
    bounds = np.cumsum([tr.n_steps for tr in tracks])
    whole = int(np.searchsorted(bounds, limit, side="right"))
    if whole:
        cut = np.split(np.arange(bounds[whole - 1]), bounds[:whole - 1])
        times = [tracks[i].t for i in range(whole)]
        dec32 = tagger.decision.smooth_many([logp32[i] for i in cut], times)
        dec16 = tagger.decision.smooth_many([logp16[i] for i in cut], times)
        share, differ, n = agreement(dec16, dec32)
        verdict = "met" if share >= AGREEMENT_TARGET else "NOT met"
        row(f"  same after the decoder ({tagger.decision.decoder})", 100 * share, "%",
            f"{100 * share:.3f} % ({differ:,} of {n:,} differ, {whole} larvae); target >= "
            f"{100 * AGREEMENT_TARGET:g} %: {verdict}")
    free(device)


def part_ensemble(bench: Bench) -> None:
    device = bench.device
    model = ensemble_preset(ENSEMBLE_MEMBERS).to(device)
    counts = {}
    for member in model.members:
        counts[member.segment_spec.window] = counts.get(member.segment_spec.window, 0) + 1
    path, run, size = write_track_file(bench.root / "ensemble", ENSEMBLE_LARVAE, DURATION, seed=2)
    steps = sum(tr.n_steps for tr in run.tracks)
    print(f"  {ENSEMBLE_PRESET} ensemble: {len(model.members)} members ("
          + ", ".join(f"{c} x {w} steps" for w, c in counts.items())
          + f"), random weights; file {ENSEMBLE_LARVAE} larvae x {DURATION:.0f} s, {steps:,} segments, {size:.0f} MB")
    base = [torch.from_numpy(np.concatenate([build_segments(tr, spec) for tr in run.tracks]))
            for spec in model.segment_specs]
    out = bench.root / "out" / "ensemble.label"
    for batch in BATCHES:
        xs = [tiled(b, max(batch, ENSEMBLE_SEGMENTS)).to(device) for b in base]
        n = xs[0].shape[0]
        # ~50x the default tagger's cost: at most 2 timings each, the first one warms up.
        t_model = model_only_times(model, xs, batch, device, repeats=min(REPEATS, 2), warm_up=False)
        xs = None
        t_e2e = end_to_end_times(model, path, out, batch, device, repeats=min(REPEATS, 2))
        model_rate, e2e_rate = n / statistics.median(t_model), steps / statistics.median(t_e2e)
        row(f"model-only, batch {batch:,}", model_rate, "segments/s",
            f"median of {len(t_model)}, {statistics.median(t_model):.2f} s / {n:,} (the first warms up)")
        row(f"end-to-end predict_files, batch {batch:,}", e2e_rate, "segments/s",
            f"median of {len(t_e2e)}, {statistics.median(t_e2e):.2f} s / {steps:,}; x{e2e_rate / model_rate:.2f} "
            "of model-only")
        free(device)


PART_FUNCTIONS = {"throughput": part_throughput, "breakdown": part_breakdown, "readers": part_readers,
                  "training": part_training,
                  "ensemble": part_ensemble}


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def selected_parts(text: str | None) -> list[str]:
    """The parts named in BENCH_GPU_PARTS (all when unset); ValueError naming an unknown one."""
    if not text:
        return list(PARTS)
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown GPU benchmark part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return names


def main() -> None:
    if not FORCE_CPU and not torch.cuda.is_available():
        print(NO_CUDA)
        return
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # figures appear as they come (a run may be cut short)
    parts = selected_parts(ENV("BENCH_GPU_PARTS"))
    device = torch.device("cpu") if FORCE_CPU else select_device("cuda")
    cuda_header(device)
    failed = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(device, Path(tmp))
        for name in parts:
            print(f"  -- {name}")
            t0 = time.perf_counter()
            try:
                PART_FUNCTIONS[name](bench)
            except Exception:  # one broken part must not hide the others' figures
                traceback.print_exc(file=sys.stdout)
                failed.append(name)
            print(f"  ({name}: {time.perf_counter() - t0:.0f} s)")
            free(device)
    print(f"  gpu group: {time.perf_counter() - t_all:.0f} s in all"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
