"""CPU threads: how many cores this job may use, and torch's thread count set from it.

On a shared node torch's default (one thread per core of the machine) oversubscribes the
cores other jobs hold, and torch then runs several times slower than on the cores it was
given. The cores allocated to this process are the smallest of:
- the CPU affinity mask (`os.sched_getaffinity`: what cgroups / `taskset` / SLURM's task
  binding let it run on; `os.cpu_count()` where the platform has no affinity),
- `SLURM_CPUS_PER_TASK` when set (the job's `--cpus-per-task`, e.g. a rule's `threads:`
  under the SLURM executor),
- the caller's own limit (a Snakemake rule's `threads:`, `maggotflow --threads N`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


def allocated_cores(limit: int | None = None) -> int:
    """Cores this process may use (>= 1): affinity, SLURM_CPUS_PER_TASK and `limit`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            cores = min(cores, int(slurm))
        except ValueError:
            log.warning("SLURM_CPUS_PER_TASK=%r is not a whole number; ignored", slurm)
    if limit is not None:
        cores = min(cores, int(limit))
    return max(1, cores)


def set_torch_threads(limit: int | None = None) -> int:
    """Set torch's intra-op threads to `allocated_cores(limit)`; returns the number set."""
    import torch

    n = allocated_cores(limit)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class ReaderSplit:
    """How a tagging job shares its cores: reader processes (`maggotflow.readers`; 0: the
    producer thread reads) and torch's intra-op threads in the main process."""

    readers: int
    torch_threads: int


def reader_split(cores: int, device_type: str, readers: int | str = "auto") -> ReaderSplit:
    """The split of `cores` between reader processes and torch threads for tagging on a
    device of `device_type` ("cpu", "cuda", ...); `readers` a number forces it.

    "auto": on a GPU the model runs there and the main process (cutting chunks, launching
    the GPU's work, decoding, writing labels) keeps one core; every other core reads
    (cores - 1 readers, 1 torch thread), from 3 cores on: one reader process delivers less
    than the producer thread alone (it hands each file over to the main process: 573,000
    against 701,000 segments/s of 149 MB .spine files, two readers 946,000; `python -m
    benchmarks feed` on 2 cores, docs/benchmarks.md), so with 2 cores or fewer the
    producer thread reads. On
    the CPU the model costs ~2,000-3,000 segments/s per core, reading ~600,000: the
    producer thread reads while torch computes, and every core runs torch (0 readers,
    `cores` threads); a reader process would hold a core that idles 99 % of the time
    (measured: 1 reader + 1 thread tags at 0.58x of 0 readers + 2 threads). Torch gets the
    cores the readers leave: max(1, cores - readers).
    """
    cores = max(1, int(cores))
    if readers == "auto":
        readers = cores - 1 if device_type != "cpu" and cores >= 3 else 0
    readers = int(readers)
    if readers < 0:
        raise ValueError(f"reader processes must be >= 0 or 'auto', got {readers}")
    return ReaderSplit(readers, max(1, cores - readers))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` for the block, then put back."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
