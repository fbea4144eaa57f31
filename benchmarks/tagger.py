"""Tagger throughput: model-only forward vs end-to-end `predict`, and training steps/s.

Uses the default MaggotUBA architecture (filters 128-64-32-32-32-16, latent 25, 2 s
windows; ~21 M multiply-adds per segment) with random weights: throughput does not depend
on what the weights learned.

- model-only: forward passes over a batch of BENCH_BATCH (4096) segments already in memory;
- end-to-end: `predict_files` on a realistic .spine file (BENCH_LARVAE larvae x
  BENCH_DURATION s at 30 fps; default 20 x 120 s, ~70,000 segments) including reading,
  segmenting and writing the .label; segments/s counted over all its time steps;
- pretraining and fine-tuning optimisation steps per second at batch 128.
All medians over repeats in one run; the device is auto-detected (BENCH_DEVICE overrides).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import median_time, row
from maggotflow.formats.spine import write_spine
from maggotflow.instance import ModelInstance
from maggotflow.model import ClassifierConfig, Decoder, EncoderConfig, Encoder, Classifier, count_macs, select_device
from maggotflow.prediction import predict_files
from maggotflow.segments import SegmentSpec
from maggotflow.simulation import SimulationConfig, simulate_run

ENV = os.environ.get
LARVAE = int(ENV("BENCH_LARVAE", 20))
DURATION = float(ENV("BENCH_DURATION", 120))
BATCH = int(ENV("BENCH_BATCH", 4096))
LABELS = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    device = select_device(ENV("BENCH_DEVICE", "auto"))
    spec = SegmentSpec()
    enc_cfg = EncoderConfig()
    cls_cfg = ClassifierConfig(latent_dim=enc_cfg.latent_dim, n_classes=len(LABELS))
    instance = ModelInstance("tagger", spec, enc_cfg, classifier_config=cls_cfg, labels=LABELS)
    print(f"  device {device}, torch threads {torch.get_num_threads()}, "
          f"{count_macs(enc_cfg) / 1e6:.1f} M multiply-adds per segment")

    # Model only: the tagger's forward on segments already in memory, as prediction does it.
    tagger = instance.to(device).tagger()
    batch = torch.randn(BATCH, 2, spec.n_points, spec.window, device=device)

    def forward():
        with torch.inference_mode():
            tagger(batch).argmax(1).cpu()
        _sync(device)

    t_model = median_time(forward, repeats=5)
    model_rate = BATCH / t_model
    row(f"model-only forward (batch {BATCH})", model_rate, "segments/s", f"median {t_model:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        instance.save(root / "tagger")
        config = SimulationConfig(duration_s=DURATION, larvae=(LARVAE, LARVAE), frame_rate_hz=(30.0, 30.0))
        run = simulate_run(np.random.default_rng(1), config, {"id": "20200101_000000"})
        steps = sum(tr.n_steps for tr in run.tracks)
        track = root / "20200101_000000@g@e@t15@p@1.spine"
        write_spine(run, track, write_outline=False)
        size = track.stat().st_size / 1e6
        out = root / "out.label"
        t_e2e = median_time(lambda: predict_files(root / "tagger", [track], out_paths=[out], device=str(device)),
                            repeats=3, warmup=0)
        e2e_rate = steps / t_e2e
        row(f"end-to-end predict ({steps:,} segments, {size:.0f} MB .spine)", e2e_rate, "segments/s",
            f"median {t_e2e:.1f} s")
        row("ratio end-to-end / model-only", e2e_rate / model_rate, "", "target >= 0.8")

    # Training steps: one optimisation step = forward + backward + clip + Adam update.
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
