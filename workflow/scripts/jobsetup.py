"""Shared by the workflow's job scripts: the rule's log file, and one-line failures.

`with job(snakemake) as log:` sends stderr, stdout and `logging` to the rule's log, makes
sure the maggotflow library is importable (from the repository's `src/` when the job runs
in an environment where it is not installed, e.g. a conda env built by `--sdm conda`), and
turns bad input into one line in the log plus a failure record `<log stem>.failed`
(maggotflow.runend.write_failures) that the workflow lists at the end of the run. A job that
succeeds removes its stale record. Temporaries that a killed attempt left next to the job's
outputs are removed first; a write that fails (disk full, read-only folder) is one line too.

Progress on the console: the job's stderr before the redirection (the terminal of a local
run, the SLURM job log on a cluster) gets one line when the job starts and the library's
progress records (logger "maggotflow.progress", `extra={"progress": (done, total)}`: the
training loops' steps, prediction's files), prefixed by the rule and its wildcards and at
most one every PROGRESS_INTERVAL_S seconds (the first and the last always), e.g.
`[pretrain window=20] step 300/600 (50%), train loss 0.0121, ETA 40.2 s`. Each line shown
is written to the rule's log too. On a terminal each line starts with a carriage return and
erase-line, so that it replaces the console plugin's status line. Ctrl-C ends the job with
one line in its log and no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator

SRC = Path(__file__).resolve().parents[2] / "src"
PROGRESS_LOGGER = "maggotflow.progress"  # maggotflow.progress.LOGGER_NAME (set up before the library is importable)
PROGRESS_INTERVAL_S = 10.0  # at most one console line per job this often (first and last always)


def job_label(snakemake) -> str:
    """`pretrain window=20`: the rule and its wildcards (long values shortened)."""
    def short(value: str) -> str:
        return value if len(value) <= 40 else value[:18] + "..." + value[-18:]

    wildcards = getattr(snakemake, "wildcards", None)
    items = list(wildcards.items()) if hasattr(wildcards, "items") else []
    return " ".join([str(getattr(snakemake, "rule", None) or "job")]
                    + [f"{k}={short(str(v))}" for k, v in items])


class ConsoleProgress(logging.Handler):
    """Progress records -> `[label] message` on `console` and a timestamped line in `log`,
    at most one every `interval` s (the first record and one with done == total always)."""

    def __init__(self, console, log, label: str, interval: float = PROGRESS_INTERVAL_S,
                 clock=time.monotonic):
        super().__init__(level=1)
        self.console, self.log, self.label = console, log, label
        self.interval, self.clock = interval, clock
        self._last: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            done, total = getattr(record, "progress", (None, None))
            final = done is not None and total is not None and done >= total
            now = self.clock()
            if self._last is not None and not final and now - self._last < self.interval:
                return
            self._last = now
            message = record.getMessage()
            self.log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} PROGRESS {message}\n")
            if self.console is not None:
                self.console.write(f"{line_start(self.console)}[{self.label}] {message}\n")
                self.console.flush()
        except Exception:  # a closed console must never fail the job
            self.handleError(record)


def line_start(console) -> str:
    """On a terminal, a carriage return and erase-line before each line: the line then
    replaces the status line that the console plugin keeps at the bottom (and redraws)."""
    try:
        return "\r\x1b[2K" if console.isatty() else ""
    except Exception:  # a closed or odd stream
        return ""


def console_progress(snakemake, console, log) -> ConsoleProgress:
    """Show the job's progress records on `console` (and in `log`): attaches a ConsoleProgress
    to the "maggotflow.progress" logger, which no longer propagates (so an ordinary log
    handler does not get every training step), and writes the job's start line."""
    handler = ConsoleProgress(console, log, job_label(snakemake))
    progress = logging.getLogger(PROGRESS_LOGGER)
    for old in [h for h in progress.handlers if isinstance(h, ConsoleProgress)]:
        progress.removeHandler(old)
    progress.addHandler(handler)
    progress.setLevel(1)  # the library logs progress below DEBUG: shown only here
    progress.propagate = False
    if console is not None:
        with contextlib.suppress(Exception):
            console.write(f"{line_start(console)}[{handler.label}] started (log: {snakemake.log[0]})\n")
            console.flush()
    return handler


def ensure_library() -> None:
    try:
        import maggotflow  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(SRC))


@contextlib.contextmanager
def job(snakemake, subject: str | None = None) -> Iterator[logging.Logger]:
    """Run the body with logging to the rule's log; `subject` names the input in failures."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "w", encoding="utf-8", buffering=1)
    console = sys.stderr  # the terminal, or the SLURM job log: progress lines go there
    sys.stderr = sys.stdout = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console_progress(snakemake, console, stream)
    logger = logging.getLogger("maggotflow.workflow")
    ensure_library()
    from maggotflow.atomic import OutputError, remove_stale_temporaries
    from maggotflow.runend import failure_record, write_failures
    from maggotflow.tracks import TrackDataError

    failure_record(log_path).unlink(missing_ok=True)

    # This job alone may write its outputs: whatever temporaries sit next to them were
    # left by a killed attempt (never read as outputs; removed here, not kept for good).
    remove_stale_temporaries(list(snakemake.output), all_owners=True)
    try:
        yield logger
    except OutputError as err:
        # Disk full, read-only folder: one line naming the path and the cause.
        logger.error("%s", err)
        write_failures(log_path, [(err.path, f"cannot write ({err.reason})")])
        stream.flush()
        sys.exit(1)
    except TrackDataError as err:
        # Bad input: one line a biologist understands, no traceback.
        logger.error("%s", err)
        write_failures(log_path, [(err.path or subject or "?", err.problem)])
        stream.flush()
        sys.exit(1)
    except KeyboardInterrupt:
        # Ctrl-C: Snakemake marks the job incomplete and the rerun redoes it; one line in
        # the log, none on the console (the main process says what was interrupted).
        logger.error("interrupted (Ctrl-C)")
        stream.flush()
        sys.exit(130)
    except Exception as err:
        traceback.print_exc(file=stream)
        write_failures(log_path, [(subject or "?", f"{type(err).__name__}: {err}")])
        stream.flush()
        sys.exit(1)
    stream.flush()
