#!/usr/bin/env bash
# GPU check: run from a fresh checkout on a GPU machine that has no internet.
#
#   bash benchmarks/gpu_check.sh
#
# Downloads nothing: it uses a Python that already has torch (PYTHON if set, else the first
# of python3, python, .venv/bin/python that imports torch) and makes this checkout importable
# with PYTHONPATH=src (GPU_CHECK_INSTALL=1: `pip install --no-deps --no-build-isolation
# --no-index -e .` first). It reports which of maggotflow's needs are missing, prints
# nvidia-smi and the torch / CUDA versions, runs `python -m benchmarks gpu` and the cheap
# CUDA tests, and writes everything to ONE file: $OUT/gpu-check.txt when OUT is set, else
# gpu-check.txt in the folder it was started from.
# GPU_CHECK_BUDGET (480 s) bounds the whole run (`timeout` on every step); the benchmark's
# sizes are its BENCH_GPU_* variables (benchmarks/gpu.py), passed through.
# Exit status: 0 when everything ran, or when there is no CUDA device (said in one line);
# else the first failure's. GPU_CHECK_FORCE_CPU=1 takes the CUDA path on a machine without
# one (BENCH_GPU_FORCE_CPU=1: tiny sizes), to try this script itself.
set -u

START_DIR=$(pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    REPORT="$OUT/gpu-check.txt"
else
    REPORT="$START_DIR/gpu-check.txt"
fi
BUDGET=${GPU_CHECK_BUDGET:-480}
: > "$REPORT"
STATUS=0
RC=0

say() { printf '%s\n' "$*" | tee -a "$REPORT"; }
left() { echo $((BUDGET - SECONDS)); }
fail() { if [ "$STATUS" -eq 0 ]; then STATUS=$1; fi; }
# run LIMIT CMD...: the command's output (stdout and stderr) into the report, at most LIMIT
# seconds; its exit status in RC (124: stopped at the limit).
run() {
    local limit=$1
    shift
    if [ "$limit" -lt 1 ]; then
        say "skipped, no time left in GPU_CHECK_BUDGET=$BUDGET s: $*"
        RC=124
        return
    fi
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$REPORT"
    RC=${PIPESTATUS[0]}
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        say "stopped at its time limit of $limit s (what it printed above is partial): $*"
    fi
}

cd "$REPO" || exit 1
if COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
    git -C "$REPO" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
else
    COMMIT="unknown (not a git checkout)"
fi
say "== maggotflow GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname), budget $BUDGET s"
say "checkout $REPO, commit $COMMIT"

say ""
say "== nvidia-smi"
if command -v nvidia-smi > /dev/null; then
    run 30 nvidia-smi
else
    say "nvidia-smi: not found (no NVIDIA driver here)"
fi

say ""
say "== Python, maggotflow's needs, torch and CUDA"
PY=""
for candidate in "${PYTHON:-}" python3 python "$REPO/.venv/bin/python"; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" > /dev/null || continue
    if timeout 60 "$candidate" -c "import torch" > /dev/null 2>&1; then
        PY=$(command -v "$candidate")
        break
    fi
    say "$candidate: has no torch"
done
if [ -z "$PY" ]; then
    say "no Python with torch found (set PYTHON=/path/to/python): nothing measured"
    exit 1
fi
say "python: $PY"

if [ "${GPU_CHECK_INSTALL:-0}" = 1 ]; then
    run 300 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$REPO"
    [ "$RC" -eq 0 ] || say "pip install -e . failed (exit $RC); using PYTHONPATH=src instead"
fi
export PYTHONPATH="$REPO/src:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# maggotflow's needs (pyproject.toml) one by one, so that the report names what is missing;
# then maggotflow, torch and CUDA. Exit 3: something is missing; 4: no CUDA device.
run 120 "$PY" - <<'PYTHON'
import importlib

missing = []
for module in ("numpy", "h5py", "scipy", "pandas", "yaml", "matplotlib", "torch"):
    try:
        version = getattr(importlib.import_module(module), "__version__", "?")
        print(f"  {module:<11} {version}")
    except Exception as err:  # an ImportError, or a broken binary
        print(f"  {module:<11} MISSING ({type(err).__name__}: {err})")
        missing.append("pyyaml" if module == "yaml" else module)
if missing:
    print(f"  missing: {', '.join(missing)} (no internet here: carry wheels, see the device notes)")
    raise SystemExit(3)

import torch
import maggotflow

print(f"  maggotflow {maggotflow.__version__} from {maggotflow.__file__}")
print(f"  torch {torch.__version__}, built with CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"  CUDA available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"{p.multi_processor_count} SMs")
raise SystemExit(0 if torch.cuda.is_available() else 4)
PYTHON
if [ "$RC" -eq 3 ]; then
    say "maggotflow cannot run without the missing package(s) above: nothing measured"
    exit 1
elif [ "$RC" -eq 4 ] && [ "${GPU_CHECK_FORCE_CPU:-0}" = 1 ]; then
    say "no CUDA device, GPU_CHECK_FORCE_CPU=1: the CUDA path on the CPU at tiny sizes (a smoke run of this script)"
    export BENCH_GPU_FORCE_CPU=1
elif [ "$RC" -eq 4 ]; then
    say ""
    say "no CUDA device: GPU benchmarks skipped, CUDA tests not run; gpu-check done in $SECONDS s (exit 0), report $REPORT"
    exit 0
elif [ "$RC" -ne 0 ]; then
    say "maggotflow or torch failed to import (exit $RC): nothing measured"
    exit 1
fi

say ""
say "== python -m benchmarks gpu"
run $(($(left) - 60)) "$PY" -m benchmarks gpu  # ~60 s kept for the tests
[ "$RC" -eq 0 ] || fail "$RC"

say ""
say "== CUDA tests"
if "$PY" -c "import pytest" > /dev/null 2>&1; then
    # Cheap and CUDA-relevant: the torch segment builder, the float16 kinematic features.
    run $(($(left) - 5)) "$PY" -m pytest -q -p no:cacheprovider tests/test_segments.py tests/test_kinematics.py \
        -k "torch or cuda"
    # 5: nothing collected (tests that do not exist yet are no failure).
    if [ "$RC" -ne 0 ] && [ "$RC" -ne 5 ]; then fail "$RC"; fi
else
    say "pytest is not installed: tests skipped"
fi

say ""
say "gpu-check done in $SECONDS s (exit $STATUS), report $REPORT"
exit "$STATUS"
