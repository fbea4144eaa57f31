"""Snakemake overhead of the workflow: sharded vs one-file-per-job tagging, and dry runs.

Setup (in a temporary folder): a tiny tagger with random weights (the figure is about the
workflow, not the model), and small .spine files (1 larva x 3 s at 10 Hz, ~4 kB each;
5 simulated files copied under distinct names, 100 per folder).

- overhead per file = (wall time of `snakemake predict --config predict_dir=DIR` - the
  model compute) / files, where the model compute is `maggotflow.prediction.predict_files`
  on the same files in this process (reading, segments, forward passes, .label writing).
  Both run on one core (`--cores 1`, one torch thread), so the difference is what the
  workflow adds: Snakemake start-up, manifest, DAG, scheduling, one Python process per job
  (imports + model load), shard tables and the summary. Sharded = the default
  predict.files_per_job (config/config.schema.yaml) on BENCH_WF_FILES files (2,000); one
  file per job = files_per_job 1 on BENCH_WF_SINGLE_FILES files (20, extrapolated per
  file: every job pays the same start-up, and the greedy scheduler's cost per job grows
  only slowly with the job count).
- dry run of BENCH_WF_DRY_FILES (10,000) files, from a fresh working folder (so it includes
  scanning the tree and writing the manifest): the whole training workflow (`snakemake -n`:
  one isolation job per training file, held-out prediction shards) and `snakemake -n
  predict` on the same folder.
- reading a 10,000-row manifest: what every cluster job pays on top of parsing the
  Snakefile (jobs never scan folders).
Medians over BENCH_WF_REPEATS (3) runs, measured in one run of this benchmark. Every wall
time is also given as CPU time (user + system, child processes included): on a shared
machine wall times grow with the load of others, CPU times hardly do, and on an idle
machine the two agree for these one-core runs.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import median_time, row

ENV = os.environ.get
N_FILES = int(ENV("BENCH_WF_FILES", 2000))
N_SINGLE = int(ENV("BENCH_WF_SINGLE_FILES", 20))
N_DRY = int(ENV("BENCH_WF_DRY_FILES", 10000))
REPEATS = int(ENV("BENCH_WF_REPEATS", 3))
REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
CONFIG = """\
device: cpu
threads: {{predict: 1}}
predict: {{files_per_job: {files_per_job}}}
inputs: {{track_dir: {track_dir}}}
"""
TARGET_OVERHEAD = 0.05  # s per file, sharded
TARGET_DRY_RUN = 15.0   # s for 10,000 files


def make_model(path: Path) -> None:
    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec

    encoder = EncoderConfig(filters=(8,) * 6, latent_dim=8)
    classifier = ClassifierConfig(latent_dim=8, n_classes=3)
    ModelInstance("tagger", SegmentSpec(), encoder, classifier_config=classifier,
                  labels=["run", "cast", "stop"]).save(path)


def make_tracks(folder: Path, n: int, labelled: bool = False) -> list[Path]:
    """n small .spine files (5 distinct simulated contents), 100 per sub-folder."""
    from maggotflow.formats.label import label_file_for_run, write_label_file
    from maggotflow.formats.spine import write_spine
    from maggotflow.simulation import SimulationConfig, simulate_run

    config = SimulationConfig(duration_s=3, larvae=(1, 1), frame_rate_hz=(10.0, 10.0))
    protos = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(5):
            run = simulate_run(np.random.default_rng(k), config, {"id": "20200101_000000"})
            spine = Path(tmp) / "proto.spine"
            write_spine(run, spine, write_outline=False)
            label = Path(tmp) / "proto.label"
            write_label_file(label, label_file_for_run(run))
            protos.append((spine.read_bytes(), label.read_bytes()))
    paths = []
    for i in range(n):
        date_time = f"2020{1 + i // 100000:02d}01_{i % 100000:06d}".encode()
        sub = folder / f"plate{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{date_time.decode()}@g@e@t15@p@1.spine"
        spine, label = protos[i % len(protos)]
        path.write_bytes(spine.replace(b"20200101_000000", date_time))
        if labelled:
            path.with_suffix(".label").write_bytes(label)
        paths.append(path)
    return paths


def snakemake(workdir: Path, *args: str) -> tuple[float, float]:
    """(wall time, CPU time) in s of one snakemake invocation in `workdir` (fails loudly).

    CPU time (user + system of the process and its children) does not grow when other
    work competes for the cores, so it tells what the wall time is on an idle machine.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}
    env["PATH"] = f"{SNAKEMAKE.parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(SNAKEMAKE), *args, "-s", str(SNAKEFILE), "--configfile", str(workdir / "bench.yaml"),
           "--cores", "1", "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fresh_workdir(root: Path, name: str, files_per_job: int, track_dir: Path) -> Path:
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "bench.yaml").write_text(CONFIG.format(files_per_job=files_per_job, track_dir=track_dir))
    return workdir


def compute_time(model: Path, tracks: list[Path], out: Path) -> tuple[float, float]:
    """Median (wall, CPU) time (s) of predict_files on `tracks` in this process (one torch thread)."""
    from maggotflow.formats import ReadOptions
    from maggotflow.prediction import predict_files

    outs = [out / f"{i}.label" for i in range(len(tracks))]
    walls, cpus = [], []
    for k in range(REPEATS + 1):  # the first call warms up (imports, caches)
        t0, c0 = time.perf_counter(), time.process_time()
        predict_files(model, tracks, out_paths=outs, device="cpu", read_options=ReadOptions())
        if k:
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def predict_overhead(root: Path, model: Path, folder: Path, files_per_job: int) -> tuple[float, float, int]:
    """(median wall, median CPU time (s) of `snakemake predict` on `folder`, prediction jobs)."""
    walls, cpus = [], []
    for k in range(REPEATS):
        workdir = fresh_workdir(root, f"predict-{files_per_job}-{k}", files_per_job, folder)
        wall, cpu = snakemake(workdir, "predict", "--config", f"predict_dir={folder}", f"model={model}")
        walls.append(wall)
        cpus.append(cpu)
        jobs = len(list((workdir / "results/predict").glob("*/shards/*.tsv")))
        shutil.rmtree(workdir)
    return statistics.median(walls), statistics.median(cpus), jobs


def main() -> None:
    import torch

    from maggotflow import manifest as mf

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        root = Path(tmp)
        model = root / "model"
        make_model(model)
        sharded = make_tracks(root / "tracks-sharded", N_FILES)
        single = make_tracks(root / "tracks-single", N_SINGLE)
        print(f"  {N_FILES:,} / {N_SINGLE:,} / {N_DRY:,} .spine files of "
              f"{sharded[0].stat().st_size / 1e3:.0f} kB (1 larva x 3 s), tiny random tagger, "
              f"--cores 1, {REPEATS} repeats")

        schema = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())
        default_files_per_job = schema["properties"]["predict"]["properties"]["files_per_job"]["default"]
        results = {}
        for name, tracks, files_per_job in (("sharded", sharded, default_files_per_job),
                                            ("one file per job", single, 1)):
            n = len(tracks)
            compute, compute_cpu = compute_time(model, tracks, root / "compute")
            wall, cpu, jobs = predict_overhead(root, model, tracks[0].parents[1], files_per_job)
            per_file = (wall - compute) / n
            results[name] = per_file
            row(f"{name}: {n:,} files, {jobs} prediction jobs (files_per_job {files_per_job})", wall, "s wall",
                f"median; model compute {compute:.1f} s")
            verdict = "meets" if per_file <= TARGET_OVERHEAD else "MISSES"
            row(f"{name}: overhead per file", per_file * 1000, "ms/file",
                f"{verdict} target <= {TARGET_OVERHEAD * 1000:.0f} ms" if files_per_job > 1
                else f"measured on {n} files, extrapolated: {per_file * N_FILES:,.0f} s for {N_FILES:,} files")
            row(f"{name}: overhead per file, CPU time", (cpu - compute_cpu) / n * 1000, "ms/file",
                f"median; workflow {cpu:.1f} s CPU, compute {compute_cpu:.1f} s CPU")
        row("one file per job / sharded overhead per file", results["one file per job"] / results["sharded"],
            "x", "ratio")

        dry = make_tracks(root / "tracks-dry", N_DRY, labelled=True)
        folder = dry[0].parents[1]
        for index, (name, args) in enumerate((("dry run, training workflow (snakemake -n)", ("-n",)),
                           ("dry run, snakemake -n predict", ("-n", "predict", "--config", f"predict_dir={folder}",
                                                              f"model={model}")))):
            times, cpu = [], []
            for k in range(REPEATS):
                workdir = fresh_workdir(root, f"dry-{index}-{k}", default_files_per_job, folder)
                wall, used = snakemake(workdir, *args)
                times.append(wall)
                cpu.append(used)
            median = statistics.median(times)
            verdict = "meets" if median < TARGET_DRY_RUN else "MISSES"
            row(f"{name}: {N_DRY:,} files", median, "s wall",
                f"median, fresh project; {verdict} target < {TARGET_DRY_RUN:.0f} s")
            row(f"{name}: CPU time", statistics.median(cpu), "s CPU",
                f"median (= wall on an idle core); load average now {os.getloadavg()[0]:.1f}")
        manifest = root / f"dry-0-{REPEATS - 1}" / "results/manifest.tsv"
        t_read = median_time(lambda: mf.read_manifest(manifest), repeats=REPEATS)
        row(f"manifest read ({N_DRY:,} rows), per cluster job", t_read * 1000, "ms", "median")
