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

import logging
import os

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
