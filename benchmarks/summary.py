"""Screen summary: `maggotflow summarize` throughput and peak memory vs file count.

Writes BENCH_SUMMARY_FILES (default 10,000) simulated `.label` files (BENCH_SUMMARY_LARVAE
larvae x BENCH_SUMMARY_STEPS steps at 10 Hz each, default 10 x 600, 7 behaviours, 4
genotypes x 2 effectors in the file names) into a temporary folder, then runs `summarize`
(plots included) in a fresh subprocess on the first 1,000 files and on all of them, and
prints wall time, files/s and the subprocess's peak RSS (ru_maxrss) with its growth over
the RSS after imports. Memory is bounded when the ratio of the two peaks stays near 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import row

N_FILES = int(os.environ.get("BENCH_SUMMARY_FILES", "10000"))
N_LARVAE = int(os.environ.get("BENCH_SUMMARY_LARVAE", "10"))
N_STEPS = int(os.environ.get("BENCH_SUMMARY_STEPS", "600"))
NAMES = ["run_large", "cast_large", "back_large", "hunch_large", "roll_large", "stop_large", "small_motion"]
GENOTYPES = ["FCF_attP2", "GMR_SS01", "GMR_SS02", "attP2"]
EFFECTORS = ["UAS_TNT", "UAS_Chrimson"]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from maggotflow.screen import summarize
import matplotlib.figure, matplotlib.backends.backend_agg  # imported before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
paths = (p for p in Path(sys.argv[1]).read_text().splitlines())
t0 = time.perf_counter()
s = summarize(paths, sys.argv[2])
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"files": s.files, "larvae": s.larvae, "wall": wall, "base_kb": base, "peak_kb": peak}))
"""


def write_files(folder: Path, n: int) -> list[Path]:
    from maggotflow.formats.label import LabelFile, write_label_file

    rng = np.random.default_rng(0)
    t = np.round(np.arange(N_STEPS) * 0.1, 3)
    steps = [(name,) for name in NAMES] + [()]
    paths = []
    for i in range(n):
        genotype, effector = GENOTYPES[i % len(GENOTYPES)], EFFECTORS[(i // len(GENOTYPES)) % len(EFFECTORS)]
        tracks = {}
        for larva in range(1, N_LARVAE + 1):
            # bouts of 0.5-3 s, genotype-dependent run share
            codes = rng.choice(8, size=N_STEPS // 5, p=[0.5 - 0.05 * (i % 4), 0.2, 0.05, 0.05, 0.02,
                                                         0.08 + 0.05 * (i % 4), 0.08, 0.02])
            tracks[str(larva)] = (t, [steps[c] for c in np.repeat(codes, 5)])
        name = f"2021{i // 400 % 12 + 1:02d}{i % 28 + 1:02d}_{i % 240000:06d}@{genotype}@{effector}@t15@r_LED@100"
        path = folder / "t15" / f"{name}.label"
        write_label_file(path, LabelFile(metadata={"id": name.split("@")[0]}, names=NAMES, tracks=tracks))
        paths.append(path)
    return paths


def run_child(listing: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, ["src", os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _CHILD, str(listing), str(out)], check=True,
                          capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = write_files(tmp / "labels", N_FILES)
        print(f"  {N_FILES} label files of {N_LARVAE} larvae x {N_STEPS} steps written in "
              f"{time.perf_counter() - t0:.0f} s ({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB)")
        results = {}
        for n in sorted({min(1000, N_FILES), N_FILES}):
            listing = tmp / f"list-{n}.txt"
            listing.write_text("\n".join(map(str, paths[:n])) + "\n")
            r = results[n] = run_child(listing, tmp / f"out-{n}")
            row(f"summarize {n} files: wall", r["wall"], "s")
            row(f"summarize {n} files: throughput", r["files"] / r["wall"], "files/s",
                f"{r['larvae'] / r['wall']:,.0f} larvae/s")
            row(f"summarize {n} files: peak RSS", r["peak_kb"] / 1024, "MiB",
                f"+{(r['peak_kb'] - r['base_kb']) / 1024:.1f} MiB over imports")
        if len(results) == 2:
            small, large = (results[n] for n in sorted(results))
            row("peak RSS ratio, most / fewest files", large["peak_kb"] / small["peak_kb"], "x",
                f"for {N_FILES // min(1000, N_FILES)}x the files")


if __name__ == "__main__":
    main()
