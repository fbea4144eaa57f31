"""SLURM fan-out: tagging 2,000 small track files through a real local SLURM.

Setup: a one-node SLURM on this machine (tests/slurm/start_local_slurm.sh: needs root;
2 fake GPUs, so at most 2 GPU jobs run at once on the 2 real cores), a tiny tagger with
random weights and small .spine files (both from benchmarks/workflow.py: the figures are
about job fan-out, not the model). `snakemake predict --config predict_dir=DIR model=M` runs
with `--profile profiles/slurm --profile tests/slurm/profile` and `device: auto`, so every
prediction job asks for a GPU as on a cluster.

- sharded: predict.files_per_job at its default (config/config.yaml: 200) and at 50, on
  BENCH_SLURM_FILES files (2,000);
- one job per file: files_per_job 1, submitted as job arrays (--slurm-array-jobs
  predict_shard; 25 tasks per sbatch call, the profile's slurm-array-limit), on
  BENCH_SLURM_PER_FILE files (100) only: each job pays ~5 s of start-up
  (sbatch, srun, a fresh Snakemake, torch import) on 2 cores, so 2,000 such jobs would take
  about an hour here. The 2,000-file figure for it is EXTRAPOLATED linearly from the
  measured wall time per file (printed as such).
Reported: SLURM jobs (array tasks count as jobs), sbatch calls, total wall time of the
`snakemake predict` run, wall time per file. One run of each (each takes minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import row
from benchmarks.workflow import make_model, make_tracks

ENV = os.environ.get
N_FILES = int(ENV("BENCH_SLURM_FILES", 2000))
N_PER_FILE = int(ENV("BENCH_SLURM_PER_FILE", 100))
REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm"
PROFILES = ["--profile", str(REPO / "profiles" / "slurm"), "--profile", str(CLUSTER / "profile")]
CONFIG = """\
device: auto
threads: {{predict: 1}}
predict: {{files_per_job: {files_per_job}}}
"""


def sbatch_counts(log: Path) -> tuple[int, int]:
    """(SLURM jobs incl. array tasks, sbatch calls) reported in a --verbose Snakemake log."""
    text = log.read_text(errors="replace")
    calls = len(re.findall(r"sbatch call: sbatch", text))
    jobs = len(re.findall(r"has been submitted with SLURM jobid \d+", text))
    for first, last in re.findall(r"The individual task IDs are (\d+)-(\d+)", text):
        jobs += int(last) - int(first) + 1
    return jobs, calls


def predict(root: Path, name: str, folder: Path, model: Path, files_per_job: int,
            extra: list[str], timeout: int) -> tuple[float, int, int]:
    """(wall time (s), SLURM jobs, sbatch calls) of `snakemake predict` on `folder`."""
    work = root / name
    work.mkdir()
    (work / "bench.yaml").write_text(CONFIG.format(files_per_job=files_per_job))
    log = work / "snakemake.log"
    cmd = ["timeout", "-k", "30", str(timeout), sys.executable, "-m", "snakemake", "predict",
           "-s", str(REPO / "Snakefile"), "--configfile", str(work / "bench.yaml"),
           "--config", f"predict_dir={folder}", f"model={model}", *PROFILES,
           "--jobs", "1000", *extra, "--verbose"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        subprocess.run(cmd[4:] + ["--unlock"], cwd=work, env=env, capture_output=True, timeout=120)
        tail = "\n".join(l[:300] for l in log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"snakemake predict ({name}) exited {rc}:\n{tail}")
    n_labels = len(list((work / "results" / "predict").glob("*/labels/**/*.label")))
    if n_labels != len(list(folder.rglob("*.spine"))):
        raise RuntimeError(f"{name}: {n_labels} .label files written for {folder}")
    if "exceeds argument-length limits" in log.read_text(errors="replace"):
        raise RuntimeError(f"{name}: an array sbatch call was too long (see profiles/slurm "
                           "slurm-array-limit): the plugin's fallback runs the wrong jobs")
    jobs, calls = sbatch_counts(log)
    return seconds, jobs, calls


def main() -> None:
    if os.geteuid() != 0:
        print("  skipped: the SLURM benchmark starts a local SLURM and needs root")
        return
    env = dict(os.environ, LOCAL_SLURM_PARTITIONS="cpu,gpu", LOCAL_SLURM_GPUS="2",
               LOCAL_SLURM_OWNER=str(os.getpid()))
    start = subprocess.run(["bash", str(CLUSTER / "start_local_slurm.sh")], env=env,
                           capture_output=True, text=True, timeout=900)
    if start.returncode in (75, 77):
        print(f"  skipped: {start.stderr.strip().splitlines()[-1]}")
        return
    if start.returncode != 0:
        raise RuntimeError(f"local SLURM did not start:\n{start.stderr[-3000:]}")
    root = Path(tempfile.mkdtemp(prefix="maggotflow-bench-slurm-"))
    try:
        model = root / "tagger"
        make_model(model)
        many, few = root / f"tracks{N_FILES}", root / f"tracks{N_PER_FILE}"
        make_tracks(many, N_FILES)
        make_tracks(few, N_PER_FILE)
        print(f"  {N_FILES} and {N_PER_FILE} .spine files (1 larva x 3 s at 10 Hz), local SLURM:"
              " 1 node, 2 CPUs, 2 fake GPUs; every job asks for 1 GPU")
        default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["predict"]["files_per_job"]
        per_file_sharded = {}
        for files_per_job in (default, 50):
            wall, jobs, calls = predict(root, f"sharded-{files_per_job}", many, model, files_per_job, [], 3600)
            name = f"sharded ({files_per_job} files/job), {N_FILES} files"
            row(f"{name}: SLURM jobs", jobs, "jobs", f"{calls} sbatch calls")
            row(f"{name}: wall time", wall, "s")
            row(f"{name}: per file", 1000 * wall / N_FILES, "ms/file")
            per_file_sharded[files_per_job] = wall / N_FILES
        array = ["--slurm-array-jobs", "predict_shard"]  # profile's slurm-array-limit: 25 tasks
        wall1, jobs1, calls1 = predict(root, "per-file", few, model, 1, array, 3600)
        row(f"one job per file (arrays), {N_PER_FILE} files: SLURM jobs", jobs1, "jobs", f"{calls1} sbatch calls")
        row(f"one job per file (arrays), {N_PER_FILE} files: wall time", wall1, "s")
        row(f"one job per file (arrays), {N_PER_FILE} files: per file", 1000 * wall1 / N_PER_FILE, "ms/file")
        row(f"one job per file, {N_FILES} files: wall time EXTRAPOLATED", wall1 / N_PER_FILE * N_FILES, "s",
            f"= {N_FILES} x measured per-file time; {N_FILES} jobs")
        for files_per_job, seconds in per_file_sharded.items():
            row(f"per-file time: one job per file / sharded ({files_per_job} files/job)",
                (wall1 / N_PER_FILE) / seconds, "x")
    finally:
        subprocess.run(["bash", str(CLUSTER / "stop_local_slurm.sh")], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
