"""The reading step of tagging: read one input, check it, measure its larvae; in worker processes.

`prepare_file(path, options) -> PreparedFile` reads a track file (`.spine` without its
`.outline`, `trx.mat`, FIMTrack `.csv`) or an intermediate, with every check of the readers
(plausibility, orientation, ...), and measures each larva's length; every failure of the
file is a one-line TrackDataError naming it. It imports no torch, so reader processes start
fast and stay small.

`prepared_files(inputs, options, processes)` runs it over many files:
- `processes=0`: one after another, in the calling thread (prediction's producer thread);
- `processes>=1`: in that many worker processes (`forkserver`, else `spawn`: never a fork
  of a process that runs torch's threads), at most `processes + 1` files ahead. Results come
  back in input order, a failed file as its TrackDataError with the same one-line message,
  and the log records a worker's reading emitted (warnings naming the file) are handed to
  the caller's loggers when its file is taken, so logs do not depend on the number of
  processes. A worker that dies (killed, out of memory, a crash in a file library) costs
  only its file: the files it held are read again in a fresh pool, the oldest alone first,
  and the file that kills a reader twice fails with a one-line message.

How many reader processes a tagging job runs is decided by `maggotflow.threads.reader_split`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.machinery
import logging
import multiprocessing
import signal
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from maggotflow import handover
from maggotflow.formats import ReadOptions, read_run
from maggotflow.isolation import read_isolated
from maggotflow.segments import larva_length
from maggotflow.tracks import Run, TrackDataError

log = logging.getLogger(__name__)

INTERMEDIATE_SUFFIXES = (".h5", ".hdf5")
# A file that is the oldest waiting when reader processes die this many times (the last
# time read alone) fails.
_DEATHS_PER_FILE = 2


def is_intermediate(path: str | Path) -> bool:
    """True for a per-file HDF5 intermediate (by extension: .h5 / .hdf5)."""
    return Path(path).suffix.lower() in INTERMEDIATE_SUFFIXES


def read_input(path: str | Path, options: ReadOptions | None = None) -> Run:
    """A track file or an intermediate as a Run, without outlines (tagging needs spines only:
    a `.spine`'s `.outline` is not read); TrackDataError if it holds no larva to tag."""
    path = Path(path)
    if is_intermediate(path):
        run = read_isolated(path)
    else:
        run = read_run(path, dataclasses.replace(options or ReadOptions(), outlines=False))
    if not run.tracks:
        raise TrackDataError(path, "contains no larva with enough time steps to tag")
    return run


def read_input_alone(path: str | Path, options: ReadOptions | None = None) -> Run:
    """`read_input`, where every failure of one file stays that file's own: any exception
    (a reader's bug, MemoryError, an HDF5 library error) becomes a one-line TrackDataError
    naming it, so that the other files of a job are still tagged. (KeyboardInterrupt and
    SystemExit are not exceptions of the file and stop the job.)"""
    try:
        return read_input(path, options)
    except TrackDataError:
        raise
    except MemoryError:
        raise TrackDataError(path, "too large to read in the memory of this job") from None
    except Exception as err:  # noqa: BLE001 - one bad file must not end the job's other files
        text = " ".join(str(err).split())[:240] or "no message"
        raise TrackDataError(path, f"cannot be read ({type(err).__name__}: {text})") from err


@dataclass
class PreparedFile:
    """One input read and measured: what the reading step hands to the model's side.

    run: the input as a Run. lengths: larva length (mm) per track of `run`, None for a larva
    that cannot be normalised (a zero-length spine: left out of the labels, with a warning).
    """

    run: Run
    lengths: list[float | None]

    @property
    def tagged(self) -> list[int]:
        """Indices of the tracks that are tagged (those with a length), in order."""
        return [i for i, length in enumerate(self.lengths) if length is not None]


def larva_lengths(run: Run) -> list[float | None]:
    """Larva length (mm) per track, None for a larva that cannot be normalised (warned)."""
    out: list[float | None] = []
    where = run.source if run.source is not None else run.metadata.get("id", "input")
    for track in run.tracks:
        length = larva_length(track)
        if not np.isfinite(length) or length <= 0:
            log.warning("%s: larva %s has a zero-length spine; left out of the labels", where, track.id)
            out.append(None)
        else:
            out.append(length)
    return out


def prepare_run(run: Run, where: str | Path | None = None) -> PreparedFile:
    """`run` with its larvae measured; TrackDataError naming `run.source` (else `where`) when
    no larva can be tagged."""
    prepared = PreparedFile(run, larva_lengths(run))
    if not prepared.tagged:
        raise TrackDataError(run.source or where,
                             "no larva has a usable spine (zero length everywhere); nothing to tag")
    return prepared


def prepare_file(path: str | Path, options: ReadOptions | None = None) -> PreparedFile:
    """Read one input and measure its larvae: the per-file reading step of tagging.

    A module-level function of plain arguments (picklable), run by the reader processes;
    every failure of the file is a one-line TrackDataError naming it (`read_input_alone`).
    """
    return prepare_run(read_input_alone(path, options), path)


Prepared = tuple[Any, "PreparedFile | TrackDataError"]


def prepared_files(inputs: Iterable[tuple[Any, str | Path]], options: ReadOptions | None = None,
                   processes: int = 0, read_one: Callable | None = None) -> Iterator[Prepared]:
    """(key, the prepared file or its TrackDataError) per (key, path) of `inputs`, in order:
    read in the calling thread (`processes=0`) or in that many reader processes.
    `read_one`: what a reader process runs per file (a module-level function that reader
    processes can import; default `_read_one`: tests replace it with one that kills its reader)."""
    if processes < 1:
        return _read_here(inputs, options)
    return _read_in_processes(inputs, options, processes, read_one or _read_one)


def _read_here(inputs: Iterable[tuple[Any, str | Path]], options: ReadOptions | None) -> Iterator[Prepared]:
    for key, path in inputs:
        try:
            prepared = prepare_file(path, options)
        except TrackDataError as err:
            yield key, err
            continue
        yield key, prepared


# ------------------------------------------------------------------------------ processes
@dataclass
class _Outcome:
    """What a reader process sends back for one file: the prepared file (`handover.pack`:
    its arrays through shared memory, not the pipe), or its failure as (path, problem) (a
    TrackDataError rebuilt here, same message), and its log records."""

    prepared: handover.Packed | None  # the PreparedFile, its arrays in shared memory
    failure: tuple[str | None, str] | None
    records: list[logging.LogRecord]


class _Collect(logging.Handler):
    """Keeps a reader process's log records, formatted, to send back with the file."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        record.exc_info = record.exc_text = record.stack_info = None
        self.records.append(record)


_collector: _Collect | None = None
_owner = ""  # whom the reader's results are packed for (`handover.new_owner` of the parent's run)


def _start_reader(level: int, owner: str) -> None:
    """Initialiser of a reader process: Ctrl-C is the parent's to handle (it stops the
    pool); maggotflow's records at the parent's level are collected, not printed."""
    global _collector, _owner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _collector, _owner = _Collect(), owner
    logger = logging.getLogger("maggotflow")
    logger.handlers[:] = [_collector]
    logger.setLevel(level)
    logger.propagate = False


def _read_one(path: str, options: ReadOptions | None) -> _Outcome:
    """Run in a reader process: `prepare_file`, with the failure and the records as data."""
    _collector.records.clear()
    try:
        prepared, failure = handover.pack(prepare_file(path, options), _owner), None
    except TrackDataError as err:
        prepared, failure = None, (err.path, err.problem)
    records, _collector.records = _collector.records, []
    return _Outcome(prepared, failure, records)


def _context():
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload([__name__])
    return context


@contextlib.contextmanager
def _main_not_imported():
    """A new process of `spawn`/`forkserver` imports the parent's main script unless it is a
    module's `__main__`: a Snakemake job script (or any unguarded script) would run again in
    every reader. While processes start, the main module is named `__main__`, which
    multiprocessing skips."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


@dataclass
class _Waiting:
    """A file handed to the readers, not yet taken: its place in the inputs, and its future
    in the current pool (None: not submitted to it)."""

    position: int
    key: Any
    path: Path
    future: concurrent.futures.Future | None = None


class _Pool:
    """Reader processes; `alone`: one process reading only the oldest waiting file."""

    def __init__(self, processes: int, options: ReadOptions | None, read_one: Callable, owner: str,
                 alone: bool = False):
        self.options, self.read_one, self.owner, self.alone = options, read_one, owner, alone
        self.executor = concurrent.futures.ProcessPoolExecutor(
            1 if alone else processes, mp_context=_context(), initializer=_start_reader,
            initargs=(logging.getLogger("maggotflow").getEffectiveLevel(), owner))

    def submit(self, waiting: deque[_Waiting]) -> None:
        """Submit the waiting files not yet submitted (only the oldest when `alone`)."""
        for entry in list(waiting)[:1] if self.alone else waiting:
            if entry.future is None:
                with _main_not_imported():
                    entry.future = self.executor.submit(self.read_one, str(entry.path), self.options)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        handover.remove_owned(self.owner)  # results read but never taken, of a dead reader too


def _read_in_processes(inputs: Iterable[tuple[Any, str | Path]], options: ReadOptions | None,
                       processes: int, read_one: Callable) -> Iterator[Prepared]:
    """`prepared_files` in `processes` reader processes (see the module docstring)."""
    handover.remove_orphans()  # what readers of killed jobs left in shared memory
    owner = handover.new_owner()
    todo = enumerate(inputs)
    waiting: deque[_Waiting] = deque()
    deaths: dict[int, int] = {}  # position -> readers that died while it was the oldest file
    pool: _Pool | None = None
    try:
        while True:
            while len(waiting) < processes + 1 and (item := next(todo, None)) is not None:
                position, (key, path) = item
                waiting.append(_Waiting(position, key, Path(path)))
            if not waiting:
                return
            head = waiting[0]
            if pool is None:
                pool = _Pool(processes, options, read_one, owner, alone=head.position in deaths)
            pool.submit(waiting)
            try:
                outcome = head.future.result()
            except concurrent.futures.process.BrokenProcessPool:
                pool.close()
                pool = None
                for entry in waiting:
                    entry.future = None
                deaths[head.position] = deaths.get(head.position, 0) + 1
                if deaths[head.position] >= _DEATHS_PER_FILE:
                    waiting.popleft()
                    yield head.key, TrackDataError(head.path, "its reader process died while reading it "
                                                              "(out of memory, or a crash in a file library)")
                continue
            waiting.popleft()
            received = _received(outcome, head.path)  # before a close removes what is not taken
            if pool.alone:  # the file that was read alone is done: all readers again
                pool.close()
                pool = None
            yield head.key, received
    finally:
        if pool is not None:
            pool.close()


def _received(outcome: _Outcome, path: Path) -> PreparedFile | TrackDataError:
    """A reader's outcome for `path` in this process: its log records handed to this
    process's loggers (at their levels), then the prepared file or its TrackDataError."""
    for record in outcome.records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    if outcome.failure is not None:
        return TrackDataError(*outcome.failure)
    try:
        return handover.unpack(outcome.prepared)
    except OSError as err:  # its shared memory removed meanwhile (by hand?), or no memory to map it
        return TrackDataError(path, f"its reader's result was lost ({type(err).__name__}: {err})")
