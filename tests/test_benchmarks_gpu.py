"""The GPU benchmark group and check script (issue 13) on a machine without CUDA.

Neither can measure anything here: they must say so in one line and exit 0. The pure
helpers of `benchmarks.gpu` (agreement of two labellings, steps/s from the training loops'
progress lines, timing with a budget, chunking as prediction does it) are checked on CPU
tensors; a slow test runs the whole group on the CPU at tiny sizes (BENCH_GPU_FORCE_CPU=1),
so that its CUDA code paths keep working while the code they call changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def no_cuda_env(**extra: str) -> dict[str, str]:
    """The environment with no CUDA device visible (also on a GPU machine) and no smoke switch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_GPU_", "GPU_CHECK_"))}
    env.pop("OUT", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env | extra


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is a package of the repository, not installed
    import benchmarks.gpu

    return benchmarks.gpu


# ---------------------------------------------------------------------------- without CUDA
def test_group_says_no_cuda_in_one_line_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "gpu"], cwd=REPO, env=no_cuda_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "== gpu =="
    assert len(lines) == 2 and "no CUDA device" in lines[1], result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_check_script_writes_its_one_file_and_exits_0_without_cuda(tmp_path):
    out = tmp_path / "out"
    env = no_cuda_env(OUT=str(out), PYTHON=sys.executable, GPU_CHECK_BUDGET="60")
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in out.iterdir()] == ["gpu-check.txt"]
    report = (out / "gpu-check.txt").read_text()
    assert "no CUDA device" in report and "torch" in report and "numpy" in report
    assert "MISSING" not in report
    assert result.stdout.strip().splitlines()[-1] == report.strip().splitlines()[-1]  # all of it in the file
    assert not (tmp_path / "gpu-check.txt").exists()  # with OUT set, nothing in the current folder


def test_main_lists_the_gpu_and_memory_groups():
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks.__main__ import GROUPS
    finally:
        sys.path.remove(str(REPO))
    assert GROUPS["gpu"] == "benchmarks.gpu" and GROUPS["memory"] == "benchmarks.memory"


# ---------------------------------------------------------------------------- helpers
def test_agreement_of_two_labellings(gpu):
    assert gpu.agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == (0.75, 1, 4)
    assert gpu.agreement([np.array([1, 2]), np.array([3])], [np.array([1, 2]), np.array([3])]) == (1.0, 0, 3)
    share, differ, n = gpu.agreement(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert np.isnan(share) and (differ, n) == (0, 0)
    with pytest.raises(ValueError, match="shapes"):
        gpu.agreement(np.zeros(3), np.zeros(4))


def test_steps_per_second_from_the_loops_progress_lines(gpu):
    assert gpu.steps_per_second([(0, None, 10.0), (100, None, 12.0), (200, None, 14.0)]) == (50.0, 100, 200)
    with pytest.raises(ValueError, match="need two"):
        gpu.steps_per_second([(100, None, 1.0)])
    with pytest.raises(ValueError, match="no steps"):
        gpu.steps_per_second([(100, None, 1.0), (100, None, 2.0)])
    clock = gpu.StepClock()
    for line in ["pretraining on cpu: 10 segments", "step 0/300 val loss 1",
                 "step 100/300 (classifier) train 1.0 val loss", "step 200/300 (fine-tune) train 0.9",
                 "decision on validation: macro-F1 0.5", "step 300/300 (fine-tune) train 0.8"]:
        clock(line)
    assert [(s, stage) for s, stage, _ in clock.records] == [(0, None), (100, "classifier"), (200, "fine-tune"),
                                                             (300, "fine-tune")]
    rate, first, last = clock.rate("fine-tune")
    assert (first, last) == (200, 300) and rate > 0


def test_timings_stop_at_the_repeats_or_the_budget(gpu):
    calls = []
    cpu = torch.device("cpu")
    assert len(gpu.timings(lambda: calls.append(1), cpu, repeats=3, budget_s=60)) == 3
    assert len(gpu.timings(lambda: calls.append(1), cpu, repeats=5, budget_s=0)) == 1  # always once
    assert len(calls) == 4


def test_chunks_span_larvae_like_prediction(gpu):
    from maggotflow.tracks import Track

    tracks = [Track(id=str(i), t=np.arange(n) / 10.0, spine=np.zeros((n, 3, 2))) for i, n in enumerate([5, 12, 3])]
    got = list(gpu.chunks(tracks, [1.0, 2.0, 3.0], 8))
    assert [sum(c.size for _, _, c in chunk) for chunk in got] == [8, 8, 4]
    assert [(tr.id, length, c.size) for tr, length, c in got[0]] == [("0", 1.0, 5), ("1", 2.0, 3)]
    assert np.array_equal(np.concatenate([c for chunk in got for _, _, c in chunk]),
                          np.concatenate([tr.t for tr in tracks]))
    assert gpu.tiled(torch.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert gpu.tiled(torch.arange(5), 2).tolist() == [0, 1]


def test_predicted_classes_in_full_and_reduced_precision(gpu):
    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec

    torch.manual_seed(0)
    instance = ModelInstance("tagger", SegmentSpec(), EncoderConfig(filters=(4, 4, 4, 4, 4, 4)),
                             classifier_config=ClassifierConfig(latent_dim=25, n_classes=3), labels=["a", "b", "c"])
    instance.tagger()  # eval mode
    x = torch.randn(10, 2, 5, 20)
    cpu = torch.device("cpu")
    classes, log_p = gpu.predicted(instance, [x], 4, cpu, gpu.strict_float32)
    with torch.inference_mode():
        expected, p = instance.predict([x])
    assert classes.dtype == np.int64 and np.array_equal(classes, expected.numpy())
    assert log_p.shape == (10, 3) and np.allclose(np.exp(log_p), p.numpy(), atol=1e-6)
    reduced, _ = gpu.predicted(instance, [x], 4, cpu, lambda: gpu.low_precision(cpu))
    share, _, n = gpu.agreement(reduced, classes)
    assert n == 10 and 0.0 <= share <= 1.0
    assert torch.backends.cudnn.allow_tf32  # strict_float32 restored torch's default


def test_precisions_follow_prediction(gpu):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert gpu.precision_name(cuda) == gpu.precision_name(cuda, agreement=True) == "float16"
    assert (gpu.precision_name(cpu), gpu.precision_name(cpu, agreement=True)) == ("float32", "bfloat16")
    with gpu.predict_precision(cpu):
        assert not torch.is_autocast_enabled("cpu")  # predict runs float32 on the CPU
    with gpu.low_precision(cpu):
        assert torch.is_autocast_enabled("cpu")


def test_default_tagger_is_the_training_default_with_an_hmm(gpu):
    from maggotflow.kinematics import FEATURE_NAMES
    from maggotflow.prediction import Predictor
    from maggotflow.training import TrainConfig

    instance = gpu.default_tagger(gpu.LABELS)
    assert instance.classifier_config.layers == TrainConfig().layers
    assert instance.classifier_config.features == len(FEATURE_NAMES)
    assert Predictor(instance, device="cpu").decision is not None  # the HMM runs in predict


def test_parts_are_checked(gpu):
    assert gpu.selected_parts(None) == list(gpu.PARTS)
    assert gpu.selected_parts("training, ensemble") == ["training", "ensemble"]
    with pytest.raises(ValueError, match="unknown GPU benchmark part"):
        gpu.selected_parts("throughput,speed")


# ---------------------------------------------------------------------------- CUDA paths on the CPU
@pytest.mark.slow
def test_the_whole_group_runs_on_the_cpu_at_tiny_sizes():
    env = no_cuda_env(BENCH_GPU_FORCE_CPU="1", BENCH_GPU_BATCHES="64", BENCH_GPU_REPEATS="1")
    result = subprocess.run([sys.executable, "-m", "benchmarks", "gpu"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    out = result.stdout
    for text in ("model-only, batch 64", "end-to-end predict_files, batch 64", "read_run", "segments, ",
                 "forward passes", "HMM decoder", "pretraining (batch", "fine-tuning, stage 2",
                 "identical steps", "target >= 99.9 %", "20221228 ensemble", "end-to-end, 1 reader process"):
        assert text in out, out
    assert "Traceback" not in out and "FAILED" not in out
