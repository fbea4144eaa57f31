"""maggotflow's console for Snakemake 9 (`--logger maggotflow`, set in profiles/default).

What a person watching thousands of jobs needs, and nothing else:
- One live status line at the bottom of a terminal, redrawn every second: jobs done / total
  and failed, the time so far, and per unfinished rule `done/total`, the jobs running and an
  ETA from the finished jobs' durations (mean duration x jobs left / most jobs
  of the rule seen running at once).
- Plain mode when the console is not a terminal (a log file, SLURM output, a test): no escape
  codes; the same status as a line of its own when a rule completes, a job fails, or at most
  every PLAIN_INTERVAL_S seconds.
- Snakemake's own bookkeeping lines are dropped (`Select jobs to execute...`, `Execute 1
  jobs...`, timestamps, `Finished jobid: N (Rule: x)`, `N of M steps done`, the banner);
  the job-stats table becomes one line. Warnings, errors, failed jobs (with their logs under
  --show-failed-logs, and Snakemake's `Complete log:` path after a failure) and the workflow's
  own messages are printed as Snakemake prints them.
  Dry runs (-n), --verbose and --debug-dag print everything, exactly as Snakemake does,
  the per-job blocks included (what they are for: `-n | grep -E '^rule |resources:'`).
- Ctrl-C: one line naming what was interrupted, what is done and the command that finishes
  the run (`interrupted_line`); the workflow can add what is done in its own terms
  (`set_hooks(done_note=...)`), e.g. files tagged.
- "Nothing to be done": Snakemake then runs no onsuccess handler; the workflow's closing
  message (where the results are) is printed through `set_hooks(nothing_to_do=...)`.

The jobs' own lines (`[pretrain window=20] step ...`, workflow/scripts/jobsetup.py) go
straight to the terminal; they start with a carriage return and erase-line when the
console is a terminal, so they replace the status line, which is redrawn below them.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

PLAIN_INTERVAL_S = 30.0  # plain mode: a status line at most this often (plus rule ends, failures)
REDRAW_S = 1.0  # terminal: the status line is redrawn this often
CLEAR = "\r\x1b[2K"  # carriage return + erase the line
PLAIN_ENV = "MAGGOTFLOW_CONSOLE"  # "plain" forces plain mode on a terminal too

# Snakemake's bookkeeping: INFO records without an event whose text starts so.
NOISE = ("Building DAG of jobs", "Using shell:", "Provided cores:", "Rules claiming more threads",
         "Provided resources:", "Select jobs to execute", "Execute ", "Assuming unrestricted shared",
         "Using profile ", "host:", "Singularity containers: ignored",
         "Conda environments: ignored", "Waiting at most", "Touching output file",
         "Storing output in storage", "Removing output files of failed job", "Will exit after finishing",
         "Shutting down, this", "Elapsed time:")
COMPLETE_LOG = "Complete log:"  # Snakemake's log file: shown only after a failure
INTERRUPTED = ("Terminating processes on user request", "Cancelling snakemake on user request")
NOTHING_TO_DO = "Nothing to be done"

_hooks: dict[str, Callable[[], object]] = {}


def set_hooks(nothing_to_do: Callable[[], list[tuple[int, str]]] | None = None,
              done_note: Callable[[], str] | None = None) -> None:
    """The workflow's callbacks (main process only): `nothing_to_do()` returns its closing
    message, [(logging level, text)], printed when Snakemake finds nothing to do (printed
    here, not logged: Snakemake may stop its log queue before records logged now are
    handled); `done_note()` returns what is done in the workflow's terms (e.g. "120 of 400
    files tagged") for the Ctrl-C line."""
    for name, hook in (("nothing_to_do", nothing_to_do), ("done_note", done_note)):
        if hook is not None:
            _hooks[name] = hook


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 10 min'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class RuleTally:
    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    peak: int = 0  # most jobs of the rule seen running at once: its parallelism
    durations: list[float] = field(default_factory=list)

    def eta(self) -> float | None:
        """Seconds until this rule's jobs are done: mean finished duration x jobs left / the
        most jobs seen running at once (None before a job has finished)."""
        left = self.total - self.done - self.failed
        if not self.durations or left <= 0:
            return None
        return sum(self.durations) / len(self.durations) * left / max(self.peak, 1)


class Tally:
    """Jobs per rule: total (Snakemake's job stats), running, done, failed, durations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.start = clock()
        self.rules: dict[str, RuleTally] = {}
        self.jobs: dict[int, tuple[str, float]] = {}  # running: jobid -> (rule, started)

    def planned(self, stats: dict) -> None:
        for rule, count in stats.items():
            if rule != "total":
                self.rules.setdefault(rule, RuleTally()).total = max(int(count), 0)

    def started(self, jobid: int, rule: str) -> None:
        if jobid in self.jobs:
            return
        self.jobs[jobid] = (rule, self.clock())
        tally = self.rules.setdefault(rule, RuleTally())
        tally.running += 1
        tally.peak = max(tally.peak, tally.running)

    def finished(self, jobid: int, failed: bool = False) -> str | None:
        """Book a job's end; returns its rule (None for a job never seen starting)."""
        if jobid not in self.jobs:
            return None
        rule, began = self.jobs.pop(jobid)
        tally = self.rules[rule]
        tally.running -= 1
        if failed:
            tally.failed += 1
        else:
            tally.done += 1
            tally.durations.append(self.clock() - began)
        tally.total = max(tally.total, tally.done + tally.failed + tally.running)
        return rule

    def totals(self) -> tuple[int, int, int]:
        rules = self.rules.values()
        return (sum(r.done for r in rules), sum(r.failed for r in rules), sum(r.total for r in rules))

    def status(self) -> str:
        """`12/40 jobs done, 1 failed, 3 min 05 s | predict_shard 2/10 (2 running, ETA 4 min 10 s) · ...`"""
        done, failed, total = self.totals()
        head = f"{done}/{total} jobs done, {failed} failed, {duration(self.clock() - self.start)}"
        parts, waiting = [], 0
        for rule, t in self.rules.items():
            if t.done + t.failed >= t.total and not t.running:
                continue
            if not (t.done or t.failed or t.running):
                waiting += 1
                continue
            extra = [f"{t.running} running"] if t.running else []
            if t.failed:
                extra.append(f"{t.failed} failed")
            eta = t.eta()
            if eta is not None:
                extra.append(f"ETA {duration(eta)}")
            parts.append(f"{rule} {t.done}/{t.total}" + (f" ({', '.join(extra)})" if extra else ""))
        if waiting:
            parts.append(f"{waiting} more rule{'s' if waiting > 1 else ''} waiting")
        return head + (" | " + " · ".join(parts) if parts else "")

    def done_text(self) -> str:
        """`3 of 10 jobs done (isolate 2/2, pretrain 1/1)`: the rules with a job done."""
        done, _, total = self.totals()
        rules = ", ".join(f"{rule} {t.done}/{t.total}" for rule, t in self.rules.items() if t.done)
        return f"{done} of {total} jobs done" + (f" ({rules})" if rules else "")


def interrupted_line(tally: Tally, note: str = "", command: str = "") -> str:
    """The one line Ctrl-C leaves: what was running, what is done, how to finish."""
    running: dict[str, int] = {}
    for rule, _ in tally.jobs.values():
        running[rule] = running.get(rule, 0) + 1
    what = ", ".join(f"{n} {rule}" for rule, n in running.items()) or "no job"
    done = "; ".join(x for x in (note, tally.done_text()) if x)
    return (f"Interrupted (Ctrl-C) with {what} running; {done}. Finish the run with: {command}"
            " (the interrupted jobs are redone, the finished ones kept)")


def rerun_command(argv: list[str]) -> str:
    """The command that was run, as it can be typed again."""
    name = os.path.basename(argv[0]) if argv else "snakemake"
    if name in ("__main__.py", "python", "python3") or name.endswith(".py"):
        name = "snakemake"
    return shlex.join([name, *argv[1:]])


class LogHandlerSettings(LogHandlerSettingsBase):
    pass


class LogHandler(LogHandlerBase):
    """The handler Snakemake instantiates for `--logger maggotflow` (see the module doc)."""

    def __post_init__(self) -> None:
        from snakemake.logging import DefaultFilter, DefaultFormatter

        s = self.common_settings
        self.stream = sys.stdout if s.stdout else sys.stderr
        # Everything as Snakemake prints it (dry runs, --verbose, --debug-dag): only a
        # plain pass-through of Snakemake's own filter and format.
        self.passthrough = bool(s.dryrun or s.verbose or s.debug_dag)
        quiet = set(s.quiet or ())
        if self.passthrough:  # a dry run or --verbose is for inspecting jobs: their blocks too
            from snakemake.settings.enums import Quietness

            quiet.discard(Quietness.RULES)
        self.default_filter = DefaultFilter(quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds)
        self.default_format = DefaultFormatter(s.quiet, s.show_failed_logs)
        self.live = (not self.passthrough and hasattr(self.stream, "isatty") and self.stream.isatty()
                     and os.environ.get("TERM") != "dumb" and os.environ.get(PLAIN_ENV) != "plain")
        self.tally = Tally()
        self.interrupted = False
        self.any_failed = False
        self.last_plain = 0.0
        self.shown = False  # terminal: a status line is on screen
        self.closed = False
        self.lock = threading.RLock()
        self.stop = threading.Event()
        if self.live:
            threading.Thread(target=self._redraw_loop, daemon=True, name="maggotflow-status").start()

    # -- LogHandlerBase
    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # it sees every record (the tally needs the quiet ones) and filters itself

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    # -- records
    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self.lock:
                self._handle(record)
        except Exception:  # a console problem must never stop the workflow
            self.handleError(record)

    def _handle(self, record: logging.LogRecord) -> None:
        if self.passthrough:
            if self.default_filter.filter(record):
                self._print(self.default_format.format(record))
            return
        event = getattr(record, "event", None)
        message = record.getMessage() if event is None else ""
        if event is None and message.startswith(INTERRUPTED):
            self.interrupted = True
        if self.interrupted:
            return  # the one line comes at close()
        if event == LogEvent.RUN_INFO:
            stats = getattr(record, "stats", None) or {}
            self.tally.planned(stats)
            if stats:
                _, _, total = self.tally.totals()
                self._print(f"{total} jobs to run: "
                            + ", ".join(f"{rule} {n}" for rule, n in stats.items() if rule != "total"))
            return
        if event == LogEvent.JOB_INFO:
            self.tally.started(int(getattr(record, "jobid", 0)), str(getattr(record, "rule_name", "?")))
            if self.default_filter.filter(record):  # rule blocks unless --quiet rules
                self._print(self.default_format.format(record))
            self._status()
            return
        if event == LogEvent.JOB_FINISHED:
            rule = self.tally.finished(int(getattr(record, "job_id", 0)))
            t = self.tally.rules.get(rule) if rule else None
            self._status(force=bool(t and t.done + t.failed >= t.total))
            return
        if event == LogEvent.JOB_ERROR:
            self.any_failed = True
            self.tally.finished(int(getattr(record, "jobid", 0)), failed=True)
            self._print(self.default_format.format(record))
            self._status(force=True)
            return
        if event in (LogEvent.PROGRESS, LogEvent.RESOURCES_INFO, LogEvent.WORKFLOW_STARTED,
                     LogEvent.RULEGRAPH, LogEvent.DEBUG_DAG, LogEvent.JOB_STARTED):
            return
        if event is None and record.levelno <= logging.INFO and (
            message.startswith(NOISE) or (message.startswith(COMPLETE_LOG) and not self.any_failed)
        ):
            return
        if not self.default_filter.filter(record):
            return
        text = self.default_format.format(record)
        if text.strip():
            self._print(text)
        if event is None and message.startswith(NOTHING_TO_DO):
            hook = _hooks.get("nothing_to_do")
            for _, line in (hook() if hook is not None else []):
                self._print(line)

    # -- output
    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _print(self, text: str) -> None:
        self._write((CLEAR if self.shown else "") + text.rstrip("\n") + "\n")
        self.shown = False
        if self.live:
            self._draw()

    def _draw(self) -> None:
        if not self.tally.rules or self.interrupted:
            return
        width = shutil.get_terminal_size((120, 20)).columns - 1
        line = self.tally.status()
        if len(line) > width:
            line = line[: max(width - 1, 10)] + "…"
        self._write(CLEAR + line)
        self.shown = True

    def _status(self, force: bool = False) -> None:
        if self.live:
            self._draw()
            return
        now = time.monotonic()
        if self.tally.rules and (force or now - self.last_plain >= PLAIN_INTERVAL_S):
            self.last_plain = now
            self._write("progress: " + self.tally.status() + "\n")

    def _redraw_loop(self) -> None:
        while not self.stop.wait(REDRAW_S):
            with self.lock:
                if self.tally.jobs:
                    self._draw()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            if self.closed:  # Snakemake may close a handler twice
                return super().close()
            self.closed = True
            if self.shown:
                self._write(CLEAR)
                self.shown = False
            if self.live and self.tally.rules and not self.interrupted:  # plain mode printed it
                self._write(self.tally.status() + "\n")
            if self.interrupted:
                note = ""
                hook = _hooks.get("done_note")
                if hook is not None:
                    try:
                        note = str(hook() or "")
                    except Exception:  # noqa: BLE001 - the line must come out anyway
                        note = ""
                self._write(interrupted_line(self.tally, note, rerun_command(sys.argv)) + "\n")
        super().close()
