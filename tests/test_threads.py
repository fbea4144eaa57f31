"""CPU threads follow the job's allocation: affinity, SLURM_CPUS_PER_TASK, the caller's limit."""

import os

import pytest
import torch

from maggotflow.cli import main as cli_main
from maggotflow.threads import allocated_cores, set_torch_threads


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_allocated_cores_is_the_smallest_of_affinity_slurm_and_limit(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert allocated_cores() == 4
    assert allocated_cores(limit=2) == 2 and allocated_cores(limit=16) == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocated_cores() == 3 and allocated_cores(limit=1) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")  # more than the cores bound to the task
    assert allocated_cores() == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "two")
    assert allocated_cores() == 4  # ignored, with a warning


def test_set_torch_threads_and_the_cli_default_follow_slurm(monkeypatch, tmp_path, keep_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert set_torch_threads() == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    missing = tmp_path / "missing.h5"
    # a torch command without --threads: the allocation, whatever torch chose before
    assert cli_main(["predict", str(tmp_path / "no-model"), str(missing), "--out", str(tmp_path / "out")]) != 0
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    torch.set_num_threads(2)
    assert cli_main(["--threads", "1", "isolate", str(missing), str(tmp_path / "x.h5")]) != 0
    assert torch.get_num_threads() == 1
