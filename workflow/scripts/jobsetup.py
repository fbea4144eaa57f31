"""Shared by the workflow's job scripts: the rule's log file, and one-line failures.

`with job(snakemake) as log:` sends stderr, stdout and `logging` to the rule's log, makes
sure the maggotflow library is importable (from the repository's `src/` when the job runs
in an environment where it is not installed, e.g. a conda env built by `--sdm conda`), and
turns bad input into one line in the log plus a failure record `<log stem>.failed`
(maggotflow.records.write_failures) that the workflow lists at the end of the run. A job that
succeeds removes its stale record. Temporaries that a killed attempt left next to the job's
outputs are removed first; a write that fails (disk full, read-only folder) is one line too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Iterator

SRC = Path(__file__).resolve().parents[2] / "src"


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
    sys.stderr = sys.stdout = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("maggotflow.workflow")
    ensure_library()
    from maggotflow.atomic import OutputError, remove_stale_temporaries
    from maggotflow.records import failure_record, write_failures
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
    except Exception as err:
        traceback.print_exc(file=stream)
        write_failures(log_path, [(subject or "?", f"{type(err).__name__}: {err}")])
        stream.flush()
        sys.exit(1)
    stream.flush()
