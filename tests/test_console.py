"""The console plugin (--logger maggotflow, profiles/default): what a person sees.

The handler is fed the log records Snakemake sends it (event and fields as Snakemake 9 sets
them) and writes to a string: plain mode (not a terminal) and terminal mode (status line
redrawn in place). The workflow runs that use it are in tests/test_workflow.py.
"""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
from snakemake.settings.enums import Quietness
from snakemake_interface_logger_plugins.common import LogEvent

import snakemake_logger_plugin_maggotflow as console


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def record(msg: str = "", level: int = logging.INFO, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake", level, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def settings(**changes):
    base = dict(printshellcmds=False, nocolor=True, quiet={Quietness.RULES, Quietness.HOST}, debug_dag=False,
                verbose=False, show_failed_logs=True, stdout=False, dryrun=False)
    return SimpleNamespace(**dict(base, **changes))


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture()
def plain(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    handler = console.LogHandler(settings(), None)
    handler.tally.clock = clock = Clock()
    handler.tally.start = clock.now
    yield handler, out, clock
    handler.stop.set()


def job_info(jobid: int, rule: str, **wildcards):
    return record("", event=LogEvent.JOB_INFO, jobid=jobid, rule_name=rule, wildcards=wildcards,
                  rule_msg=None, local=False, is_checkpoint=False, input=[], output=[], log=[],
                  benchmark=None, reason="", priority=0, threads=1, resources={})


def test_eta_is_mean_duration_times_jobs_left_over_most_jobs_seen_running_at_once():
    clock = Clock()
    tally = console.Tally(clock)
    tally.planned({"isolate": 10, "dataset": 1, "total": 11})
    for jobid in (1, 2):
        tally.started(jobid, "isolate")
    clock.now += 4
    tally.finished(1)
    clock.now += 2
    tally.finished(2)  # durations 4 s and 6 s: mean 5 s
    tally.started(3, "isolate")
    tally.started(4, "isolate")
    assert tally.rules["isolate"].eta() == pytest.approx(5 * 8 / 2)
    tally.finished(3, failed=True)
    status = tally.status()
    assert status.startswith("2/11 jobs done, 1 failed, 6 s | isolate 2/10 (1 running, 1 failed, ETA 18 s)")
    assert status.endswith("1 more rule waiting")


def test_plain_mode_drops_bookkeeping_and_keeps_what_a_person_needs(plain):
    handler, out, clock = plain
    for noise in ("Building DAG of jobs...", "Select jobs to execute...", "Execute 2 jobs...",
                  "Using shell: /usr/bin/bash", "Provided cores: 2", "Assuming unrestricted shared filesystem usage.",
                  "Elapsed time: 0:02:03"):
        handler.emit(record(noise))
    handler.emit(record("Job stats: ...", event=LogEvent.RUN_INFO, stats={"isolate": 2, "all": 1, "total": 3}))
    handler.emit(record("Execute 1 jobs...", event=LogEvent.JOB_STARTED, jobs=[1]))
    handler.emit(job_info(1, "isolate", track="a.spine"))
    handler.emit(job_info(2, "isolate", track="b.spine"))
    clock.now += 3
    handler.emit(record("Finished jobid: 1 (Rule: isolate)", event=LogEvent.JOB_FINISHED, job_id=1))
    handler.emit(record("1 of 3 steps (33%) done", event=LogEvent.PROGRESS, done=1, total=3))
    handler.emit(record("a.spine: cannot read", level=logging.WARNING))
    clock.now += 1
    handler.emit(record("Finished jobid: 2 (Rule: isolate)", event=LogEvent.JOB_FINISHED, job_id=2))
    handler.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "3 jobs to run: isolate 2, all 1"
    assert lines[1].startswith("progress: 0/3 jobs done, 0 failed, 0 s | isolate 0/2 (1 running)")
    assert "a.spine: cannot read" in lines
    assert lines[-1] == "progress: 2/3 jobs done, 0 failed, 4 s | 1 more rule waiting"  # the rule's last job
    text = out.getvalue()
    for gone in ("Select jobs", "Execute", "Finished jobid", "steps (33%)", "Building DAG", "Elapsed", "\x1b"):
        assert gone not in text


def test_the_complete_log_path_is_shown_only_after_a_failure(plain):
    handler, out, _ = plain
    handler.emit(record("", event=LogEvent.RUN_INFO, stats={"isolate": 2}))
    handler.emit(job_info(1, "isolate"))
    handler.emit(record("", event=LogEvent.JOB_FINISHED, job_id=1))
    handler.emit(record("Complete log: .snakemake/log/a.snakemake.log"))
    assert "Complete log" not in out.getvalue()
    handler.emit(job_info(2, "isolate"))
    handler.emit(record("Error in rule isolate:", level=logging.ERROR, event=LogEvent.JOB_ERROR, jobid=2,
                        rule_name="isolate", rule_msg=None, log=[], aux={}, conda_env=None,
                        shellcmd=None, input=[], output=[], indent=False))
    handler.emit(record("Complete log: .snakemake/log/b.snakemake.log"))
    handler.close()
    assert "Complete log: .snakemake/log/b.snakemake.log" in out.getvalue()
    assert "progress: 1/2 jobs done, 1 failed" in out.getvalue()


def test_a_terminal_gets_one_status_line_redrawn_in_place(monkeypatch):
    out = Terminal()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.delenv(console.PLAIN_ENV, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    handler = console.LogHandler(settings(), None)
    try:
        assert handler.live
        handler.emit(record("", event=LogEvent.RUN_INFO, stats={"predict_shard": 3, "total": 3}))
        handler.emit(job_info(7, "predict_shard", run="x", shard="s1"))
        handler.emit(record("results/predict/x: a warning", level=logging.WARNING))
    finally:
        handler.close()
    text = out.getvalue()
    # each message clears the status line first, then the status is drawn again below it
    assert f"{console.CLEAR}results/predict/x: a warning\n{console.CLEAR}0/3 jobs done" in text
    assert text.endswith("0/3 jobs done, 0 failed, 0 s | predict_shard 0/3 (1 running)\n")
    monkeypatch.setenv(console.PLAIN_ENV, "plain")
    assert not console.LogHandler(settings(), None).live


def test_ctrl_c_leaves_one_line_what_ran_what_is_done_and_the_command(plain, monkeypatch):
    handler, out, clock = plain
    monkeypatch.setattr("sys.argv", ["/venv/bin/snakemake", "predict", "--config", "predict_dir=/data/my screen"])
    console.set_hooks(done_note=lambda: "12 of 40 files of results/predict/x tagged")
    try:
        handler.emit(record("", event=LogEvent.RUN_INFO, stats={"predict_shard": 4, "predict_summary": 1}))
        handler.emit(job_info(1, "predict_shard"))
        handler.emit(record("", event=LogEvent.JOB_FINISHED, job_id=1))
        handler.emit(job_info(2, "predict_shard"))
        before = out.getvalue()
        handler.emit(record("Terminating processes on user request, this might take some time."))
        handler.emit(record("Error in rule predict_shard:", level=logging.ERROR, event=LogEvent.JOB_ERROR, jobid=2))
        handler.emit(record("results/predict/x: 1 of 4 prediction job(s) did not finish", level=logging.WARNING))
        handler.emit(record("WorkflowError: At least one job did not complete successfully.", level=logging.ERROR))
        handler.close()
        handler.close()  # Snakemake may close twice: still one line
    finally:
        console._hooks.clear()
    after = out.getvalue()[len(before):].splitlines()
    assert after == [
        "Interrupted (Ctrl-C) with 1 predict_shard running; 12 of 40 files of results/predict/x tagged; "
        "1 of 5 jobs done (predict_shard 1/4). Finish the run with: snakemake predict --config "
        "'predict_dir=/data/my screen' (the interrupted jobs are redone, the finished ones kept)"]


def test_nothing_to_do_still_says_where_the_results_are(plain):
    handler, out, _ = plain
    console.set_hooks(nothing_to_do=lambda: [(logging.INFO, "Produced:\n  tagger: results/models/tagger"),
                                             (logging.WARNING, "results/predict/x: 2 files unlike")])
    try:
        handler.emit(record("Nothing to be done (all requested files are present and up to date)."))
    finally:
        console._hooks.clear()
    assert out.getvalue() == ("Nothing to be done (all requested files are present and up to date).\n"
                              "Produced:\n  tagger: results/models/tagger\nresults/predict/x: 2 files unlike\n")


def test_dry_runs_and_verbose_print_what_snakemake_prints(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    handler = console.LogHandler(settings(dryrun=True), None)  # the profile's --quiet rules host
    handler.emit(record("Job stats:\njob  count\nisolate 2", event=LogEvent.RUN_INFO, stats={"isolate": 2}))
    handler.emit(record("Building DAG of jobs..."))
    handler.emit(job_info(3, "isolate", track="a.spine"))
    handler.close()
    text = out.getvalue()
    assert text.startswith("Job stats:\njob  count\nisolate 2\nBuilding DAG of jobs...\n")
    assert "\nrule isolate:\n" in text and "    wildcards: track=a.spine" in text  # what -n is for
