"""Progress records of long loops, and durations for humans.

Training steps, files tagged and label files summarised each send a record to the logger
"maggotflow.progress" at `LEVEL`, below DEBUG, so no ordinary logging setup prints them. Each
record carries `extra={"progress": (done, total)}`. A workflow job shows them on its console,
rate-limited (workflow/scripts/jobsetup.py). No torch import: the screen summary uses it too.
"""

from __future__ import annotations

import logging
import math

LOGGER_NAME = "maggotflow.progress"
LEVEL = 5  # below DEBUG: only a handler that asks for progress gets these
_log = logging.getLogger(LOGGER_NAME)


def enabled() -> bool:
    """Whether a handler takes progress records (skip building costly messages otherwise)."""
    return _log.isEnabledFor(LEVEL)


def report(done: int, total: int, message: str, *args) -> None:
    """One progress record: `message % args`, with (done, total) attached."""
    _log.log(LEVEL, message, *args, extra={"progress": (done, total)})


def duration_text(seconds: float) -> str:
    """A duration for humans: '8.5 s', '12.3 min', '2.1 h' ('?' when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
