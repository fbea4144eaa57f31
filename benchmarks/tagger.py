"""Tagger throughput: model-only forward vs end-to-end `predict`, and training steps/s.

Uses the default MaggotUBA architecture (filters 128-64-32-32-32-16, latent 25, 2 s
windows; ~21 M multiply-adds per segment) with random weights: throughput does not depend
on what the weights learned.

- model-only: the tagger's forward passes (+ argmax) over segments of the benchmark file
  already in memory, in batches of the size `predict` uses on the device (128 on CPU, 8192
  on CUDA; BENCH_BATCH overrides both); a batch of 4096 is also printed for reference;
- end-to-end: `predict_files` on a realistic .spine file (BENCH_LARVAE larvae x
  BENCH_DURATION s at 30 fps; default 50 x 120 s, ~150,000 segments, ~33 MB) including
  loading the model, reading, segmenting and writing the .label; segments/s counted over
  all its time steps (one segment per step);
- ratio end-to-end / model-only (target >= 0.9). The two are measured in alternation,
  BENCH_REPEATS (3) rounds, so that both see the same load on a shared machine; the ratio
  is that of the medians;
- predict with 1, 2 and 4 torch threads (BENCH_THREAD_LIST): end-to-end and model-only
  segments/s on a smaller file (BENCH_THREAD_LARVAE larvae x 60 s, default 20), with the
  cores this process may use (`maggotflow.threads.allocated_cores`); `predict_files` caps
  torch's threads at them, so more threads than cores show up only in the model-only figure
  (what oversubscription costs);
- pretraining and fine-tuning optimisation steps per second at batch 128.
The default file is 50 larvae x 2 min instead of 100 x 5 min: at ~2,000-4,000 segments/s
on 2 CPU cores, three end-to-end rounds on the full size would take 10 to 20 minutes alone
(BENCH_LARVAE=100 BENCH_DURATION=300 for it; throughput per segment does not depend on it).
The device is auto-detected (BENCH_DEVICE overrides); BENCH_THREADS sets torch's thread
count (on a loaded machine 2 threads on 2 cores can be several times slower than 1: see
docs/benchmarks.md).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import median_time, row
from maggotflow.formats.spine import write_spine
from maggotflow.instance import ModelInstance
from maggotflow.model import ClassifierConfig, Decoder, EncoderConfig, Encoder, Classifier, count_macs, select_device
from maggotflow.prediction import DEFAULT_BATCH_SIZE, predict_files
from maggotflow.segments import SegmentSpec, build_segments
from maggotflow.simulation import SimulationConfig, simulate_run

ENV = os.environ.get
LARVAE = int(ENV("BENCH_LARVAE", 50))
DURATION = float(ENV("BENCH_DURATION", 120))
BATCH = int(ENV("BENCH_BATCH", 0))  # 0: what predict uses on the device
REPEATS = int(ENV("BENCH_REPEATS", 3))
MODEL_SEGMENTS = 16384  # segments per model-only measurement
THREAD_LIST = [int(n) for n in ENV("BENCH_THREAD_LIST", "1,2,4").split(",") if n.strip()]
THREAD_LARVAE = int(ENV("BENCH_THREAD_LARVAE", 20))
LABELS = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def thread_scaling(root: Path, batch_size: int, forward, n_model: int) -> None:
    """Predict's segments/s with 1, 2, 4 torch threads: end-to-end on a small file and model-only."""
    from maggotflow.threads import allocated_cores

    config = SimulationConfig(duration_s=60.0, larvae=(THREAD_LARVAE, THREAD_LARVAE), frame_rate_hz=(30.0, 30.0))
    run = simulate_run(np.random.default_rng(2), config, {"id": "20200101_000001"})
    steps = sum(tr.n_steps for tr in run.tracks)
    track = root / "20200101_000001@g@e@t15@p@1.spine"
    write_spine(run, track, write_outline=False)
    out = root / "threads.label"
    print(f"  threads: {allocated_cores()} core(s) allocated to this process; {steps:,} segments per predict")
    before = torch.get_num_threads()
    try:
        for n in THREAD_LIST:
            torch.set_num_threads(n)
            t_e2e = median_time(lambda: predict_files(root / "tagger", [track], out_paths=[out], batch_size=batch_size,
                                                      device="cpu", overwrite=True), repeats=REPEATS, warmup=0)
            t_model = median_time(forward(batch_size), repeats=REPEATS, warmup=1)
            used = min(n, allocated_cores())  # predict_files never gives torch more than the allocation
            row(f"predict, {n} torch thread{'s' if n > 1 else ''}", steps / t_e2e, "segments/s",
                f"end-to-end ({used} thread{'s' if used > 1 else ''} used), median of {REPEATS}; "
                f"model-only {n_model / t_model:,.0f}/s")
    finally:
        torch.set_num_threads(before)


def main() -> None:
    if ENV("BENCH_THREADS"):  # torch intra-op threads (default: torch's choice, all cores)
        torch.set_num_threads(int(ENV("BENCH_THREADS")))
    device = select_device(ENV("BENCH_DEVICE", "auto"))
    spec = SegmentSpec()
    enc_cfg = EncoderConfig()
    cls_cfg = ClassifierConfig(latent_dim=enc_cfg.latent_dim, n_classes=len(LABELS))
    instance = ModelInstance("tagger", spec, enc_cfg, classifier_config=cls_cfg, labels=LABELS)
    print(f"  device {device}, torch threads {torch.get_num_threads()}, "
          f"{count_macs(enc_cfg) / 1e6:.1f} M multiply-adds per segment, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        instance.save(root / "tagger")
        config = SimulationConfig(duration_s=DURATION, larvae=(LARVAE, LARVAE), frame_rate_hz=(30.0, 30.0))
        run = simulate_run(np.random.default_rng(1), config, {"id": "20200101_000000"})
        steps = sum(tr.n_steps for tr in run.tracks)
        track = root / "20200101_000000@g@e@t15@p@1.spine"
        write_spine(run, track, write_outline=False)
        size = track.stat().st_size / 1e6
        print(f"  file: {LARVAE} larvae x {DURATION:.0f} s at 30 fps, {steps:,} segments, {size:.0f} MB .spine")

        # Model only: the tagger's forward on segments of the file already in memory, batch by
        # batch as prediction does it.
        batch_size = BATCH or DEFAULT_BATCH_SIZE.get(device.type, 128)
        segments = np.concatenate([build_segments(tr, spec) for tr in run.tracks])[:MODEL_SEGMENTS]
        x = torch.from_numpy(segments).to(device)
        tagger = instance.to(device).tagger()

        def forward(size):
            def go():
                with torch.inference_mode():
                    for i in range(0, x.shape[0], size):
                        tagger(x[i:i + size]).argmax(1).cpu()
                _sync(device)
            return go

        out = root / "out.label"
        model_times, e2e_times = [], []
        forward(batch_size)()  # warm-up
        for _ in range(REPEATS):
            model_times.append(median_time(forward(batch_size), repeats=1, warmup=0))
            e2e_times.append(median_time(lambda: predict_files(root / "tagger", [track], out_paths=[out],
                                                               batch_size=batch_size, device=str(device),
                                                               overwrite=True),
                                         repeats=1, warmup=0))
        t_model, t_e2e = statistics.median(model_times), statistics.median(e2e_times)
        model_rate = x.shape[0] / t_model
        e2e_rate = steps / t_e2e
        row(f"model-only forward (batch {batch_size})", model_rate, "segments/s",
            f"median of {REPEATS}, {t_model:.2f} s / {x.shape[0]:,}")
        row(f"end-to-end predict ({steps:,} segments, {size:.0f} MB)", e2e_rate, "segments/s",
            f"median of {REPEATS}, {t_e2e:.1f} s")
        print(f"  {'ratio end-to-end / model-only':<48} {e2e_rate / model_rate:>12.2f} {'':<12} target >= 0.9 "
              f"(per round: {', '.join(f'{m / e * steps / x.shape[0]:.2f}' for m, e in zip(model_times, e2e_times))})")
        t_big = median_time(forward(4096), repeats=REPEATS, warmup=0)
        row("model-only forward (batch 4096, reference)", x.shape[0] / t_big, "segments/s",
            f"median of {REPEATS}")
        if device.type == "cpu" and THREAD_LIST:
            thread_scaling(root, batch_size, forward, x.shape[0])

    # Training steps: one optimisation step = forward + backward + clip + Adam update.
    if ENV("BENCH_THREADS"):
        torch.set_num_threads(int(ENV("BENCH_THREADS")))
    torch.manual_seed(0)
    encoder, decoder = Encoder(enc_cfg).to(device), Decoder(enc_cfg).to(device)
    classifier = Classifier(cls_cfg).to(device)
    x = torch.randn(128, 2, spec.n_points, 3 * spec.window, device=device)
    y = torch.randint(0, len(LABELS), (128,), device=device)
    present = x[..., spec.window: 2 * spec.window]

    def optimisation_step(params, loss_fn):
        opt = torch.optim.Adam(params, lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 100.0)
            opt.step()
            _sync(device)

        return step

    pre_params = list(encoder.parameters()) + list(decoder.parameters())
    pre = optimisation_step(pre_params, lambda: torch.nn.functional.mse_loss(decoder(encoder(present)), x))
    t_pre = median_time(pre, repeats=10, warmup=2)
    row("pretraining (batch 128)", 1 / t_pre, "steps/s", f"median {t_pre * 1e3:.0f} ms/step")
    fine_params = list(encoder.parameters()) + list(classifier.parameters())
    fine = optimisation_step(fine_params, lambda: torch.nn.functional.cross_entropy(classifier(encoder(present)), y))
    t_fine = median_time(fine, repeats=10, warmup=2)
    row("fine-tuning, stage 2 (batch 128)", 1 / t_fine, "steps/s", f"median {t_fine * 1e3:.0f} ms/step")
