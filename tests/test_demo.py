"""The demo's idempotence (workflow/demo.sh) and the jobs' console progress (jobsetup.py).

No training and no workflow run: demo.sh runs only its simulation part
(DEMO_ONLY_SIMULATE=1) against a stand-in `maggotflow` that writes one file, and
jobsetup.job runs with a fake `snakemake` object.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import jobsetup  # noqa: E402
from maggotflow.loop import Progress  # noqa: E402

FAKE_MAGGOTFLOW = """#!/usr/bin/env bash
# stand-in for `maggotflow simulate DIR ...`: one track file and its label
echo "$*" >> "$CALLS"
mkdir -p "$2"
echo track > "$2/a.spine"
echo label > "$2/a.label"
"""


def run_demo_simulation(demo: Path, bin_dir: Path, calls: Path) -> str:
    env = dict(os.environ, DEMO_DIR=str(demo), DEMO_ONLY_SIMULATE="1", CALLS=str(calls),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", str(REPO / "workflow" / "demo.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_simulates_once_and_then_leaves_the_data_alone(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "maggotflow"
    fake.write_text(FAKE_MAGGOTFLOW)
    fake.chmod(0o755)
    demo, calls = tmp_path / "demo", tmp_path / "calls.txt"

    first = run_demo_simulation(demo, bin_dir, calls)
    assert len(calls.read_text().splitlines()) == 3
    assert "+ maggotflow simulate data/train --files 24 --seed 1" in first  # the real command, shown
    assert not (demo / "data/new_experiments/a.label").exists()  # new data: labels removed
    assert (demo / "data/heldout/a.label").exists()
    files = sorted(p for p in (demo / "data").rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    second = run_demo_simulation(demo, bin_dir, calls)
    assert len(calls.read_text().splitlines()) == 3  # nothing simulated again
    assert second.count("kept from an earlier demo") == 3
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    # An incomplete folder (no marker: the simulation was interrupted) is simulated again.
    (demo / "data/heldout/.demo-simulated").unlink()
    run_demo_simulation(demo, bin_dir, calls)
    assert calls.read_text().splitlines()[-1].startswith("simulate data/heldout --files 8 --seed 2")
    assert len(calls.read_text().splitlines()) == 4


@pytest.fixture
def restore_logging():
    root, progress = logging.getLogger(), logging.getLogger(jobsetup.PROGRESS_LOGGER)
    saved = root.handlers[:], root.level, progress.handlers[:], progress.level, progress.propagate
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], progress.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    progress.setLevel(saved[3])
    progress.propagate = saved[4]


def fake_snakemake(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(rule="pretrain", wildcards={"window": "20"}, output=[],
                           log=[str(tmp_path / "logs" / "pretrain" / "w20.log")])


def test_progress_lines_go_to_the_console_and_the_log(tmp_path, monkeypatch, restore_logging):
    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    snakemake = fake_snakemake(tmp_path)
    module = torch.nn.Linear(2, 1)
    with jobsetup.job(snakemake) as log:
        progress = Progress((module,), 3, better=lambda new, best: True,
                            describe=lambda scores: f"val {scores['val_loss']:.3g}", log=log.info)
        progress.start({"val_loss": 1.0})
        for _ in range(3):
            progress.train_step(torch.tensor(0.5), True)
        progress.validated(3, {"val_loss": 0.25})
    lines = console.getvalue().splitlines()
    assert lines[0] == "[pretrain window=20] started (log: %s)" % snakemake.log[0]
    assert lines[1] == "[pretrain window=20] step 0/3 val 1"
    # steps 1 and 2 fall within the interval; the last step and the last line always show
    assert lines[2].startswith("[pretrain window=20] step 3/3 (100%), train loss 0.5, ETA ")
    assert lines[3].startswith("[pretrain window=20] step 3/3 train 0.5 val 0.25 (")
    assert len(lines) == 4
    text = Path(snakemake.log[0]).read_text()
    assert "PROGRESS step 3/3 (100%), train loss 0.5" in text  # what the console showed
    assert "maggotflow.workflow: step 3/3 train 0.5 val 0.25" in text  # the loop's own line
    assert "step 1/3" not in text  # every step is not in the log: the console's lines are


def test_progress_lines_are_rate_limited_per_job():
    console, log, now = io.StringIO(), io.StringIO(), [0.0]
    handler = jobsetup.ConsoleProgress(console, log, "predict_shard run=heldout shard=0", interval=10,
                                       clock=lambda: now[0])
    logger = logging.getLogger("test_demo.progress")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for done, t in [(1, 0), (2, 5), (3, 11), (4, 12), (5, 13)]:
            now[0] = t
            logger.warning("file %d/5", done, extra={"progress": (done, 5)})
    finally:
        logger.removeHandler(handler)
    assert console.getvalue().splitlines() == ["[predict_shard run=heldout shard=0] file 1/5",
                                               "[predict_shard run=heldout shard=0] file 3/5",
                                               "[predict_shard run=heldout shard=0] file 5/5"]
    assert log.getvalue().count("PROGRESS file") == 3


def test_progress_records_are_silent_in_an_ordinary_logging_setup(caplog):
    caplog.set_level(logging.DEBUG)
    progress = Progress((torch.nn.Linear(1, 1),), 2, better=lambda new, best: True,
                        describe=lambda scores: "", log=lambda text: None)
    progress.start({})
    progress.train_step(torch.tensor(1.0), True)
    assert not [r for r in caplog.records if r.name == jobsetup.PROGRESS_LOGGER]


def test_long_wildcards_are_shortened_in_the_label():
    snakemake = SimpleNamespace(rule="isolate", wildcards={"track": "t15__" + "x" * 80 + "__trx.mat"})
    label = jobsetup.job_label(snakemake)
    assert label.startswith("isolate track=t15__") and label.endswith("__trx.mat") and len(label) < 60
