"""`python -m benchmarks feed` runs at tiny sizes and prints the lines docs/benchmarks.md quotes.

The figures themselves are the benchmark's (never a timed test); this only checks that the
group runs on a fresh checkout and names its settings: the producer thread, `1 worker`,
`2 workers` with their segments/s, the scaling ratio, and predict's core splits on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_feed_group_names_1_worker_and_2_workers_with_their_rates():
    env = dict(os.environ, BENCH_LARVAE="3", BENCH_DURATION="20", FEED_FILES="2", FEED_E2E_LARVAE="2",
               BENCH_REPEATS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-m", "benchmarks", "feed"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for name in ("0 workers (producer thread)", "1 worker", "2 workers"):
        assert re.search(rf"^  {re.escape(name)} +[0-9,.]+ segments/s +[0-9,]+ MB/s", out, re.M), out
    assert re.search(r"^  2 workers / 1 worker +[0-9.]+ +target >= 1\.8", out, re.M), out
    assert re.search(r"^  predict, 0 readers, [0-9]+ torch threads? \(auto\) +[0-9,.]+ segments/s", out, re.M), out
    assert "Traceback" not in out + result.stderr
