"""Plain helpers and constants that several test modules share (fixtures live in conftest.py).

Imported as `from helpers import ...`: pytest puts tests/ on sys.path (the default "prepend"
import mode, tests/ has no __init__.py), whether it runs the whole suite or one file.

- Synthetic larvae whose behaviours are easy to tell apart (`run`, `back`, `stop`), labelled
  intermediates made of them, and a tiny "pretrained" encoder: for the training, boosting and
  forest tests.
- The environment of a local Snakemake run: for the workflow, preset and module tests.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from maggotflow.dataset import Dataset
from maggotflow.instance import ModelInstance
from maggotflow.isolation import write_isolated
from maggotflow.model import EncoderConfig
from maggotflow.segments import SegmentSpec
from maggotflow.tracks import Run, Track

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY_ENCODER = EncoderConfig(window=10, n_points=5, latent_dim=4, filters=(8, 8, 4, 4, 4, 4))
SPEC = SegmentSpec(window=10, frame_interval=0.1, n_points=5)
QUICK = dict(batch_size=32, eval_every=10, device="cpu", latent_dim=4, filters=(8, 8, 4, 4, 4, 4),
             candidates=("network",))  # TrainConfig fields of a few-second network training
SPEEDS = {"run": 1.0, "back": -0.6, "stop": 0.0}  # mm/s along the body axis


def behaving_larva(larva_id: str, rng: np.random.Generator, behaviours=("run", "back", "stop"),
                   duration: float = 30.0, fps: float = 10.0, bout: float = 3.0, k: int = 11) -> Track:
    """A 3 mm larva doing bouts of `bout` s of the given behaviours in random order."""
    t = np.round(np.arange(0, duration, 1 / fps) + rng.uniform(0, 1), 4)
    n_bouts = int(np.ceil(duration / bout)) + 1
    sequence = rng.choice(len(behaviours), size=n_bouts)
    which = sequence[((t - t[0]) // bout).astype(int)]
    speed = np.array([SPEEDS[b] for b in behaviours])[which]
    heading = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(heading), np.sin(heading)])
    travelled = np.cumsum(speed * np.gradient(t))
    s = np.linspace(-1.5, 1.5, k)  # tail -> head along the body
    stretch = 1 + 0.05 * np.sin(2 * np.pi * 1.3 * t) * (speed != 0)  # peristalsis while crawling
    centre = rng.uniform(-30, 30, 2) + travelled[:, None] * direction
    spine = centre[:, None, :] + (s[None, :] * stretch[:, None])[..., None] * direction
    spine = spine + rng.normal(0, 0.01, spine.shape)  # tracking jitter
    return Track(larva_id, t, spine, labels=[(behaviours[w],) for w in which])


def write_experiments(folder: Path, n_files: int = 3, n_larvae: int = 3, seed: int = 0, **kw) -> list[Path]:
    """Labelled intermediates, one per synthetic experiment."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_files):
        date_time = f"2021010{i + 1}_120000"
        run = Run({"id": date_time, "date_time": date_time},
                  [behaving_larva(str(j + 1), rng, **kw) for j in range(n_larvae)],
                  source=Path(f"{date_time}@g@e@t15@p.spine"), format="spine", sha1=f"{i:040x}")
        path = folder / f"exp{i}.h5"
        write_isolated(run, path, label_source="synthetic")
        paths.append(path)
    return paths


def tiny_pretrained(path: Path, dataset: Path, seed: int = 0) -> Path:
    """A "pretrained" instance: a randomly initialised tiny encoder whose BatchNorm statistics
    are calibrated on the dataset's segments (as pretraining leaves them), so that its
    latents are normalised and a frozen-encoder classifier can learn from them."""
    torch.manual_seed(seed)
    instance = ModelInstance("pretrained", SPEC, TINY_ENCODER)
    with Dataset.load(dataset, in_memory=True) as ds:
        x = torch.from_numpy(ds.segments[ds.train_indices()])
    for module in instance.encoder.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
    instance.encoder.train()
    with torch.no_grad():
        for batch in x.split(64):
            instance.encoder(batch)
    instance.encoder.eval()
    instance.save(path)
    return path


def local_env() -> dict[str, str]:
    """The environment of a local workflow run: no SNAKEMAKE_* variables, this venv's
    snakemake first on PATH, and before it a `scontrol` that fails at once.

    The SLURM executor plugin (installed for `--profile profiles/slurm`) runs `scontrol show
    config` whenever Snakemake starts; where SLURM's client tools are installed but no
    controller answers (this machine and CI outside tests/test_slurm.py), that waits ~9 s per
    invocation. These runs use the local executor, which never calls SLURM.
    """
    stub = Path(tempfile.gettempdir()) / f"maggotflow-tests-{os.getuid()}" / "no-slurm"
    if not (stub / "scontrol").is_file():
        stub.mkdir(parents=True, exist_ok=True)
        script = stub / f"scontrol.{os.getpid()}"
        script.write_text("#!/bin/sh\nexit 1\n")
        script.chmod(0o755)
        script.replace(stub / "scontrol")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}
    env["PATH"] = os.pathsep.join([str(stub), str(SNAKEMAKE.parent), env.get("PATH", "")])
    return env


def read_or_die(path: str, options):
    """A reader process's per-file step (`maggotflow.readers.prepared_files(read_one=)`) that
    kills its own process with SIGKILL, as the kernel's out-of-memory killer would, for a
    file whose name starts with kill-me; any other file is read as usual."""
    import signal

    from maggotflow import readers

    if Path(path).name.startswith("kill-me"):
        os.kill(os.getpid(), signal.SIGKILL)
    return readers._read_one(path, options)
