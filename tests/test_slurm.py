"""The workflow under a real SLURM: a one-node cluster on localhost with fake GPUs.

`tests/slurm/start_local_slurm.sh` installs (when missing) and starts munge, slurmctld and
slurmd; the small demo experiment (tests/slurm/small.yaml) then runs with
`--profile profiles/slurm --profile tests/slurm/profile` (the CI overlay: squeue status,
short polling). Checked: every stage is a SLURM job, GPU rules ask for a GPU and CPU rules do
not, the .label files equal those of a local run of the same configuration, a cancelled
prediction job is retried with more time and memory, and a killed main process is resumed
with --rerun-incomplete without redoing finished shards.

Needs root (daemons, /etc/slurm, apt-get): skipped with the reason otherwise. Every
Snakemake run is wrapped in `timeout -k 30 N` and unlocked after a failure; the daemons are
stopped by pid at the end of the module. About 3 min on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maggotflow.cli import main as cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "slurm"
SMALL = SCRIPTS / "small.yaml"
PROFILES = ["--profile", str(REPO / "profiles" / "slurm"), "--profile", str(SCRIPTS / "profile")]
GPU_RULES = {"pretrain", "train_model", "predict_shard"}
CPU_RULES = {"isolate", "dataset", "evaluate_heldout", "ethograms", "screen_summary"}
SHARD = re.compile(r"shard=(s[0-9a-f]{10}x*)")


# ------------------------------------------------------------------------ helpers


def command(args, slurm):
    """snakemake [target] -s Snakefile --configfile small.yaml [--config K=V] + profiles.

    ARGS: an optional target then K=V config items. --config comes after --configfile:
    the other way round Snakemake 9.27 fails validating the config.
    """
    targets = [a for a in args if "=" not in a]
    config = [a for a in args if "=" in a]
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"),
           "--configfile", str(SMALL)] + (["--config", *config] if config else [])
    return cmd + ([*PROFILES, "--verbose"] if slurm else ["--cores", "2"])


def run_snakemake(workdir, args, log, timeout, slurm=True, background=False):
    """snakemake ARGS in WORKDIR under `timeout -k 30`, output to LOG; unlocks on failure."""
    cmd = ["timeout", "-k", "30", str(timeout), *command(args, slurm)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
    if background:
        return proc
    rc = proc.wait()
    out.close()
    if rc != 0:
        unlock(workdir, args, slurm)
    return rc


def unlock(workdir, args, slurm=True):
    cmd = ["timeout", "-k", "10", "60", *command(args, slurm), "--unlock"]
    subprocess.run(cmd, cwd=workdir, capture_output=True)


def tail(log, n=40):
    lines = Path(log).read_text(errors="replace").splitlines()
    return "\n".join(line[:300] for line in lines[-n:])


def submissions(log):
    """[(rule, sbatch call, [shards])] of the sbatch calls in a --verbose log."""
    found = []
    for line in Path(log).read_text(errors="replace").splitlines():
        m = re.search(r"sbatch call: (sbatch .*?) --wrap=", line)
        if m:
            call = m.group(1)
            rule = re.search(r"--comment rule_([a-z_]+?)(?:_wildcards_\S*)?\s", call).group(1)
            found.append((rule, call, SHARD.findall(line.split("--wrap=", 1)[1])))
    return found


def submitted_ids(log):
    """SLURM job ids ("123", array tasks "123_4") the main process reported submitting."""
    text = Path(log).read_text(errors="replace")
    ids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", text))
    for job, first, last in re.findall(r"SLURM job ID (\d+)\. The individual task IDs are (\d+)-(\d+)", text):
        ids |= {f"{job}_{i}" for i in range(int(first), int(last) + 1)}
    return ids


def ran_rules(log):
    """{rule: 'local' | 'remote'} of the jobs the main process scheduled."""
    text = Path(log).read_text(errors="replace")
    rules = {name: "remote" for name in re.findall(r"^rule (\w+):$", text, re.M)}
    rules.update({name: "local" for name in re.findall(r"^localrule (\w+):$", text, re.M)})
    return rules


def finished_shards(log):
    """Shards whose job the main process reported as finished, in a --verbose log."""
    text = Path(log).read_text(errors="replace")
    shard_of = {}
    for block in re.findall(r"^rule predict_shard:\n((?:    .*\n)+)", text, re.M):
        jobid = re.search(r"jobid: (\d+)", block)
        shard = SHARD.search(block)
        if jobid and shard:
            shard_of[jobid.group(1)] = shard.group(1)
    done = re.findall(r"Finished jobid: (\d+) \(Rule: predict_shard\)", text)
    return {shard_of[j] for j in done if j in shard_of}


def slurm_jobs():
    """{jobid: `scontrol show job -o` line} of the jobs SLURM still knows (MinJobAge 300 s)."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    return {re.search(r"JobId=(\d+)", l).group(1): l for l in out.splitlines() if "JobId=" in l}


def children(pid):
    """Pids of the direct children of PID (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def labels(workdir, folder):
    """{relative path: bytes} of the .label files under WORKDIR/FOLDER."""
    root = Path(workdir) / folder
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.label"))}


def predict_run_dir(workdir, name):
    found = sorted((Path(workdir) / "results" / "predict").glob(f"{name}-*"))
    assert len(found) == 1, f"expected one prediction run of {name}: {found}"
    return found[0]


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cluster():
    """A running local SLURM (partitions cpu and gpu, 2 fake GPUs); stopped by pid at the end."""
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root (they start munge/slurmctld/slurmd and may apt-get install them)")
    env = dict(os.environ, LOCAL_SLURM_PARTITIONS="cpu,gpu", LOCAL_SLURM_GPUS="2",
               LOCAL_SLURM_MEM="65536", LOCAL_SLURM_OWNER=str(os.getpid()))
    start = subprocess.run(["bash", str(SCRIPTS / "start_local_slurm.sh")], env=env,
                           capture_output=True, text=True, timeout=900)
    if start.returncode in (75, 77):
        pytest.skip(f"no local SLURM: {start.stderr.strip().splitlines()[-1]}")
    assert start.returncode == 0, f"local SLURM did not start:\n{start.stderr[-3000:]}"
    yield
    left = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True, text=True).stdout
    subprocess.run(["bash", str(SCRIPTS / "stop_local_slurm.sh")], capture_output=True, timeout=120)
    assert not left.strip(), f"SLURM jobs left behind by the tests:\n{left}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small simulated experiments: 6 training, 2 held-out, 6 new (unlabelled) files."""
    root = tmp_path_factory.mktemp("slurm-data")
    for folder, files, seed in (("train", 6, 1), ("heldout", 2, 2), ("new", 6, 3)):
        assert cli(["simulate", str(root / folder), "--files", str(files), "--seed", str(seed),
                    "--duration", "20", "--larvae", "2-3"]) == 0
    for path in (root / "new").rglob("*.label"):
        path.unlink()
    shutil.copytree(root / "new", root / "new2")  # same files, another folder: a second run
    return root


def workdir_with(data, tmp_path_factory, name):
    work = tmp_path_factory.mktemp(name)
    shutil.copytree(data, work / "data")
    return work


@pytest.fixture(scope="module")
def local(data, tmp_path_factory):
    """The same configuration run locally (no SLURM): the reference outputs."""
    work = workdir_with(data, tmp_path_factory, "local")
    assert run_snakemake(work, [], work / "all.log", 600, slurm=False) == 0, tail(work / "all.log")
    args = ["predict", "predict_dir=data/new"]
    assert run_snakemake(work, args, work / "predict.log", 300, slurm=False) == 0, tail(work / "predict.log")
    return work


@pytest.fixture(scope="module")
def trained(cluster, data, tmp_path_factory):
    """The default target (isolate -> ... -> evaluation, report material) under SLURM."""
    work = workdir_with(data, tmp_path_factory, "slurm")
    t0 = time.monotonic()
    rc = run_snakemake(work, [], work / "all.log", 600)
    print(f"SLURM run of the default target: {time.monotonic() - t0:.0f} s")
    assert rc == 0, tail(work / "all.log")
    return {"work": work, "log": work / "all.log", "jobs": slurm_jobs()}


@pytest.fixture(scope="module")
def cancelled(trained):
    """`snakemake predict` under SLURM while one running prediction job is scancel-ed."""
    work = trained["work"]
    log = work / "predict-cancel.log"
    t0 = time.monotonic()
    proc = run_snakemake(work, ["predict", "predict_dir=data/new"], log, 400,
                         background=True)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True,
                             text=True).stdout
        running = [l.split() for l in out.splitlines() if "rule_predict_shard" in l]
        if running:
            victim = running[0][0]
            subprocess.run(["scancel", victim], check=True)
        time.sleep(0.2)
    rc = proc.wait()
    print(f"SLURM predict run with a cancelled job: {time.monotonic() - t0:.0f} s")
    if rc != 0:
        unlock(work, ["predict", "predict_dir=data/new"])
    assert victim is not None, "no prediction job was seen running\n" + tail(log)
    assert rc == 0, tail(log)
    return {"work": work, "log": log, "victim": victim, "jobs": slurm_jobs()}


@pytest.fixture(scope="module")
def killed(trained):
    """`snakemake predict` killed (SIGKILL) after its first finished shard, then rerun."""
    work = trained["work"]
    log1, log2 = work / "predict-killed.log", work / "predict-rerun.log"
    args = ["predict", "predict_dir=data/new2"]
    proc = run_snakemake(work, args, log1, 400, background=True)
    done = set()
    deadline = time.monotonic() + 300
    while not done and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        done = finished_shards(log1)
    # kill the Snakemake process itself (not `timeout`, which would pass on a SIGTERM)
    for pid in children(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert done, "no shard finished before the run ended\n" + tail(log1)
    shards_dir = predict_run_dir(work, "new2") / "shards"
    before = {p.stem: p.stat().st_mtime_ns for p in shards_dir.glob("*.tsv")}
    # What a user does after a crash: cancel the run's orphaned jobs (named by its run ID),
    # then unlock and rerun (--rerun-incomplete is in the profile).
    uuid = re.search(r"SLURM run ID: (\S+)", log1.read_text()).group(1)
    subprocess.run(["scancel", f"--name={uuid}"], check=False)
    for _ in range(50):
        if not subprocess.run(["squeue", "-h", f"--name={uuid}"], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.2)
    unlock(work, args)
    t0 = time.monotonic()
    rc = run_snakemake(work, args, log2, 400)
    print(f"SLURM predict rerun after SIGKILL: {time.monotonic() - t0:.0f} s")
    assert rc == 0, tail(log2)
    return {"work": work, "log1": log1, "log2": log2, "done": done, "before": before,
            "shards_dir": shards_dir}


# ------------------------------------------------------------------------ tests


def test_every_stage_ran_as_a_slurm_job_with_the_right_gpu_request(trained, cancelled):
    calls = submissions(trained["log"]) + submissions(cancelled["log"])
    submitted = {rule for rule, _, _ in calls}
    assert submitted == GPU_RULES | CPU_RULES
    for log in (trained["log"], cancelled["log"]):
        remote = {rule for rule, where in ran_rules(log).items() if where == "remote"}
        assert remote <= submitted, f"jobs that did not go through sbatch: {remote - submitted}"
    for rule, call, _ in calls:
        asks_gpu = "--gpus=" in call or "--gres=gpu" in call
        assert asks_gpu == (rule in GPU_RULES), f"{rule}: {call}"
        partition = re.search(r" -p (\S+)", call).group(1)
        assert partition == ("gpu" if rule in GPU_RULES else "cpu"), f"{rule}: {call}"
        assert re.search(r" -t \d+", call) and re.search(r" --mem \d+", call), call
    # isolate is the per-file rule: its 6 jobs went as one job array, and each task ran its
    # own job (no output missing, nothing restarted)
    assert [c for r, c, _ in calls if r == "isolate"][0].count("--array=1-6") == 1
    text = trained["log"].read_text(errors="replace")
    assert "Trying to restart job" not in text and "MissingOutputException" not in text
    # SLURM's own record agrees (jobs are kept 300 s after they end)
    seen = 0
    for record in {**trained["jobs"], **cancelled["jobs"]}.values():
        rule = re.search(r"Comment=rule_([a-z_]+?)(?:_wildcards_\S*)?\s", record).group(1)
        gres = re.search(r"TresPerJob=(\S+)", record)
        assert (gres is not None and "gpu" in gres.group(1)) == (rule in GPU_RULES), record[:400]
        seen += 1
    assert seen >= len(calls)
    # and every job left a SLURM log (logs/slurm/rule_<rule>/[<wildcards>/]<jobid>.log) of a
    # successful Snakemake job step, but the cancelled one
    root = trained["work"] / "logs" / "slurm"
    slurm_logs = {p: p.relative_to(root).parts[0].removeprefix("rule_") for p in root.rglob("*.log")}
    ids = submitted_ids(trained["log"]) | submitted_ids(cancelled["log"])
    slurm_logs = {p: rule for p, rule in slurm_logs.items() if p.stem in ids}
    assert {p.stem for p in slurm_logs} == ids
    assert set(slurm_logs.values()) == GPU_RULES | CPU_RULES
    for path in slurm_logs:
        if path.stem != cancelled["victim"]:
            text = path.read_text(errors="replace")
            assert re.search(r"\d+ of \d+ steps \(100%\) done", text), f"{path}:\n{text[-800:]}"


def test_slurm_labels_equal_a_local_run(trained, cancelled, local):
    for folder in ("results/predict/heldout/labels",):
        slurm, ref = labels(trained["work"], folder), labels(local, folder)
        assert slurm and slurm.keys() == ref.keys()
        assert slurm == ref, [k for k in ref if slurm.get(k) != ref[k]]
    slurm = labels(predict_run_dir(trained["work"], "new"), "labels")
    ref = labels(predict_run_dir(local, "new"), "labels")
    assert len(ref) == 6 and slurm == ref, [k for k in ref if slurm.get(k) != ref[k]]


def test_cancelled_prediction_job_is_retried_with_more_resources(cancelled, local):
    text = cancelled["log"].read_text(errors="replace")
    victim = cancelled["victim"]
    assert f"SLURM-job '{victim}' failed, SLURM status is: 'CANCELLED'" in text, tail(cancelled["log"])
    shard = re.search(rf"submitted with SLURM jobid {victim} \(log: .*_(s[0-9a-f]{{10}}x*)/{victim}\.log",
                      text).group(1)
    calls = [c for r, c, _ in submissions(cancelled["log"]) if r == "predict_shard"]
    first = [c for c in calls if " -t 60 --mem 6000 " in c]       # attempt 1
    retried = [c for c in calls if " -t 120 --mem 12000 " in c]    # attempt 2: runtime, mem x 2
    assert len(first) == 6 and len(retried) == 1 and len(calls) == 7, [c[:300] for c in calls]
    assert retried[0].split("--comment ")[1].split()[0].endswith(shard), "the cancelled shard is the retried one"
    slurm = labels(predict_run_dir(cancelled["work"], "new"), "labels")
    ref = labels(predict_run_dir(local, "new"), "labels")
    assert slurm == ref


def test_killed_run_resumes_without_redoing_finished_shards(killed, local):
    resubmitted = {s for r, _, shards in submissions(killed["log2"]) if r == "predict_shard"
                   for s in shards}
    assert resubmitted, "the rerun had shards left to do"
    assert not resubmitted & killed["done"], f"finished shards redone: {resubmitted & killed['done']}"
    for shard in killed["done"]:
        path = killed["shards_dir"] / f"{shard}.tsv"
        assert path.stat().st_mtime_ns == killed["before"][shard], f"{path} was rewritten"
    assert len(list(killed["shards_dir"].glob("*.tsv"))) == 6
    slurm = labels(killed["shards_dir"].parent, "labels")
    ref = labels(predict_run_dir(local, "new"), "labels")
    assert slurm == ref
