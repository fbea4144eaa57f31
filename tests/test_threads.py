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


def test_reader_split_gives_a_gpu_job_readers_and_a_cpu_job_torch_threads():
    from maggotflow.threads import ReaderSplit, reader_split

    assert reader_split(8, "cuda") == ReaderSplit(readers=7, torch_threads=1)
    assert reader_split(3, "cuda") == ReaderSplit(readers=2, torch_threads=1)
    assert reader_split(2, "cuda") == ReaderSplit(readers=0, torch_threads=2)  # one reader: slower than none
    assert reader_split(1, "cuda") == ReaderSplit(readers=0, torch_threads=1)  # the producer thread reads
    assert reader_split(8, "cpu") == ReaderSplit(readers=0, torch_threads=8)
    assert reader_split(8, "cpu", readers=2) == ReaderSplit(readers=2, torch_threads=6)
    assert reader_split(2, "cuda", readers=4) == ReaderSplit(readers=4, torch_threads=1)  # forced: never 0 threads
    with pytest.raises(ValueError, match="reader processes"):
        reader_split(4, "cpu", readers=-1)


def test_torch_threads_are_set_for_a_block_and_put_back(keep_threads):
    from maggotflow.threads import torch_threads

    torch.set_num_threads(1)
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_cli_predict_readers_option_is_auto_or_a_count(tmp_path, capsys):
    missing = tmp_path / "missing.h5"
    for bad in ("-1", "many"):
        with pytest.raises(SystemExit):
            cli_main(["predict", str(tmp_path / "no-model"), str(missing), "--out", str(tmp_path / "o"), "--readers", bad])
        assert "--readers: expected auto or a whole number >= 0" in capsys.readouterr().err
