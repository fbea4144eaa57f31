"""Prediction: tag every time step of every larva of track files, write LarvaTagger `.label` files.

In: a tagger or an ensemble folder (`maggotflow train` / `maggotflow ensemble`) and track
files (`.spine`, `trx.mat`, FIMTrack `.csv`) or per-file intermediates (`.h5` from
`maggotflow isolate`, which keep the track file's metadata, name and sha1: both give
byte-identical `.label` files).
Out: one `.label` per input (metadata of the track file, `dependencies` = its basename and
sha1, the model's label names and colours, per larva the track's own times rounded to 1 ms
and one label per time step), written atomically; which outputs may be replaced
(`check_replaceable`) and where they go (`output_paths`) is decided here too.

What the model does with segments is the model's own: a tagger (`ModelInstance`) and an
ensemble (`maggotflow.ensemble.Ensemble`) both name the segment specs they need
(`segment_specs`) and map one batch of segments per spec to class indices (`predict`; the
ensemble's does the majority vote). `Predictor` only loads, streams, batches and runs:
- the model is loaded once per call; files are read by `maggotflow.readers.prepare_file`
  (read one input, check it, measure its larvae), one after another in a producer thread or
  in reader processes (`readers`; `maggotflow.threads.reader_split` shares the job's cores
  between them and torch: on CUDA every core but one reads (from 3 cores), on the CPU
  torch takes them all), in input order. The producer thread cuts every larva's time steps into fixed-size
  chunks (spanning larvae and files) and builds the chunk's segments of every spec
  (`maggotflow.segments.build_segments_torch`, batched over the chunk's larvae; every time
  step a centre, edge steps with edge-clamped windows), so reading and segment building
  overlap the forward passes (speed matters: thousands of files, ~1 million segments per big
  file). On CUDA the producer only cuts; each chunk's segments are built on the GPU from the
  raw spines.
  `segments="numpy"` builds them per larva with `maggotflow.segments.build_segments` instead
  (the same labels);
- chunks span larvae and files (small files do not leave batches half empty); forward
  passes of `batch_size` segments run under `torch.inference_mode`, float32 on CPU,
  float16 autocast on CUDA;
- a tagger's temporal decoder, if its decision has one (`maggotflow.decoding`: an HMM
  fitted at training), decodes each larva's whole sequence of calibrated class
  probabilities once all its steps are predicted (calibration offsets alone act per step,
  inside the model's `predict`);
- the model's post-rule, if any (`maggotflow.postrule.apply_post_rule`), is applied per larva;
- the domain check (`maggotflow.domain`): the segments of the model's first spec also give
  per-segment normal scores of their kinematic features (on the model's device), summed per
  larva; each file's record (`metadata.maggotflow.domain_check`: verdict `ok` or
  `unlike_training`, its score and threshold, per larva relative scores) is written into its
  label, and a file judged unlike the training data is named in a warning. A model without
  a domain reference records `{"verdict": null, "reason": ...}`: not checked.

A larva whose spine has zero length (all points coincide over most of the track) cannot be
normalised: it is left out of the `.label` file with a warning naming the file. A file that
cannot be read, or holds no larva to tag, raises TrackDataError naming it (`on_error` /
`--keep-going` skips it and carries on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from maggotflow.atomic import OutputExistsError, refuse_foreign, remove_stale_temporaries
from maggotflow.ensemble import Ensemble, load_model
from maggotflow.formats import ReadOptions
from maggotflow.formats.label import (
    LabelFile,
    default_colors,
    is_maggotflow_label,
    label_file_for_run,
    provenance_mark,
    write_label_file,
)
from maggotflow.domain import N_FEATURES, RECORD_KEY, describe, not_checked
from maggotflow.instance import ModelInstance, check_kind, fingerprint
from maggotflow.isolation import Intermediate
from maggotflow.model import select_device
from maggotflow import progress
from maggotflow.postrule import apply_post_rule
from maggotflow.readers import PreparedFile, is_intermediate, prepare_run, prepared_files
from maggotflow.segments import build_segments, build_segments_torch, segment_builder
from maggotflow.threads import allocated_cores, reader_split, torch_threads
from maggotflow.tracks import Run, TrackDataError, printable_path

log = logging.getLogger(__name__)

# Segments per forward pass. On CPU small batches are much faster (measured ~2.5x between
# 128 and 4096 with the default encoder: the activations of a batch then stay in cache);
# GPUs want large ones.
DEFAULT_BATCH_SIZE = {"cpu": 128, "cuda": 8192}
# Segments are built in chunks of at least this many rows (numpy overhead amortised over
# many segments); each chunk is then classified batch by batch.
MIN_CHUNK = 4096
PREFETCH_CHUNKS = 3  # chunks the producer thread may build ahead of the model


# ---------------------------------------------------------------------------- inputs
def prediction_mark(model_path: str | Path | None, read_options: ReadOptions | dict | None,
                    model_sha1: str | None = None) -> dict[str, Any]:
    """The mark of a label predict_files writes (`metadata.maggotflow`): maggotflow's version,
    the model folder's name and fingerprint (`instance.fingerprint`: config and weights), and
    the read options that shaped the tracks (a track file's as given, an intermediate's as
    recorded at isolation; `outlines` is always false: tagging reads spines only). Everything
    that decides a label's content besides the track's bytes (its `dependencies.sha1`), so
    that a rerun tells a current label from a stale one (`maggotflow.shards`); no time or
    file-system detail (same inputs, same bytes). `model_sha1`: the fingerprint when known.
    """
    model_path = None if model_path is None else Path(model_path)
    if model_sha1 is None and model_path is not None:
        model_sha1 = fingerprint(model_path)
    if isinstance(read_options, ReadOptions):
        read_options = dataclasses.asdict(read_options)
    read = None
    if read_options is not None:  # in ReadOptions' field order (an intermediate stores them sorted)
        names = [f.name for f in dataclasses.fields(ReadOptions)]
        read = {k: read_options[k] for k in names if k in read_options}
        read.update(sorted((k, v) for k, v in read_options.items() if k not in names))
        read["outlines"] = False
    return provenance_mark(model=model_path.name if model_path else None, model_sha1=model_sha1, read=read)


def source_name(path: str | Path) -> str:
    """Basename of the track file behind `path` (for an intermediate: the file it was made from)."""
    path = Path(path)
    if is_intermediate(path):
        with Intermediate(path) as intermediate:
            return intermediate.source_name or path.name
    return path.name


def default_output_name(path: str | Path) -> str:
    """`<track file stem>.label`: `a@b@c.spine` -> `a@b@c.label`, `trx.mat` -> `trx.label`.

    An intermediate that cannot be opened is named after itself (`x.h5` -> `x.label`): it
    fails later, when read, like any bad input (so `on_error` / `--keep-going` skip it).
    """
    try:
        return Path(source_name(path)).stem + ".label"
    except TrackDataError:
        return Path(path).stem + ".label"


FOREIGN_LABEL = ("exists and was not written by maggotflow (hand-made labels?); it is never replaced: "
                 "tag into another folder (--out)")
OWN_LABEL = "exists (an earlier maggotflow prediction); give --overwrite to replace it"


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Raise OutputExistsError unless `out` is absent, or is maggotflow's own prediction and `overwrite`.

    A `.label` without maggotflow's provenance mark (`formats.label.is_maggotflow_label`)
    is a lab's file and is never replaced, whatever `overwrite` says; so is anything at
    `out` that is not a regular file.
    """
    if not os.path.lexists(out):
        return
    refuse_foreign(out, is_maggotflow_label, FOREIGN_LABEL)
    if not overwrite:
        raise OutputExistsError(out, OWN_LABEL)


class OutputClashError(FileExistsError):
    """Several inputs would write the same `.label` file (or an input would be overwritten).

    A FileExistsError, like the other refusals of an output (the CLI exits 1).
    """


def output_paths(inputs: Sequence[Path], out_dir: Path | None, out_paths: Sequence[Path] | None) -> list[Path]:
    """The `.label` path of every input; OutputClashError when two coincide or hit an input."""
    inputs = [Path(p) for p in inputs]
    if (out_dir is None) == (out_paths is None):
        raise ValueError("give either an output directory or one output path per input")
    if out_paths is not None:
        outs = [Path(p) for p in out_paths]
        if len(outs) != len(inputs):
            raise ValueError(f"{len(outs)} output paths for {len(inputs)} inputs")
    else:
        outs = [Path(out_dir) / default_output_name(p) for p in inputs]
    seen: dict[Path, Path] = {}
    for src, out in zip(inputs, outs):
        key = out.resolve()
        if key in seen:
            hint = ("; give one output path per input (--out-paths), e.g. mirroring the input folders"
                    if out_paths is None else "")
            raise OutputClashError(f"{seen[key]} and {src} would both be tagged into {out}{hint}")
        seen[key] = src
    resolved_inputs = {p.resolve() for p in inputs}
    for out in outs:
        if out.resolve() in resolved_inputs:
            raise OutputClashError(f"{out}: is an input file and will not be overwritten by its labels")
    return outs


# ---------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class _Stretch:
    """Consecutive time steps of one larva within a chunk: steps `first:first + count` of
    track `track` of job `job_id` are rows `row:row + count` of the chunk."""

    job_id: int
    track: int
    first: int
    row: int
    count: int


@dataclass
class _Job:
    """One input in flight: its run and the predictions received so far."""

    key: Any
    run: Run
    classes: dict[int, np.ndarray]  # track index -> (n,) int64 class per step, for the larvae tagged
    remaining: int  # steps still waiting for a prediction
    # track index -> (n, K) float32 log-probabilities, kept only for a temporal decoder
    scores: dict[int, np.ndarray] | None = None
    # track index -> (F,) float64 sum of its segments' domain signatures (a domain check only)
    domain: dict[int, np.ndarray] | None = None

    def receive(self, stretch: _Stretch, classes: np.ndarray, scores: np.ndarray | None,
                signatures: np.ndarray | None) -> None:
        """Take one stretch's predictions from a chunk's arrays (classes, log-probabilities,
        domain signatures: one row per row of the chunk)."""
        rows = slice(stretch.row, stretch.row + stretch.count)
        steps = slice(stretch.first, stretch.first + stretch.count)
        self.classes[stretch.track][steps] = classes[rows]
        if scores is not None:
            self.scores[stretch.track][steps] = scores[rows]
        if signatures is not None:
            self.domain[stretch.track] += signatures[rows].sum(axis=0, dtype=np.float64)
        self.remaining -= stretch.count


@dataclass
class _Requests:
    """The segments of one chunk, to be built on the model's device: (track, length, centres)
    per stretch (`maggotflow.segments.build_segments_torch`)."""

    pieces: list


@dataclass
class _PendingChunk:
    """The chunk the producer is filling: what to build, and whose steps the rows are."""

    requests: list = dataclasses.field(default_factory=list)  # (track, length, centres) per stretch
    stretches: list[_Stretch] = dataclasses.field(default_factory=list)
    filled: int = 0


# The producer's messages to the consumer, in order: per input a _FileFailed, or a
# _FileStarted and then its steps in _Chunks (a chunk spans larvae and files).
@dataclass
class _FileFailed:
    """An input that could not be read, or holds no larva to tag."""

    key: Any
    error: TrackDataError


@dataclass
class _FileStarted:
    """A file's job, announced before the chunks that hold its steps."""

    job_id: int
    job: _Job


@dataclass
class _Chunk:
    """The segments of `size` time steps: one (size, 2, P, W) float32 array per spec of the
    model, or, when they are built on the model's device, the `_Requests` to build there."""

    segments: list[np.ndarray] | _Requests
    size: int
    stretches: list[_Stretch]


@dataclass
class TaggedFile:
    """What `Predictor.stream` gives for one input: its key, then either `error` (the file's
    TrackDataError; the rest None) or its `run`, `classes` (track index -> (n,) int64 class per
    time step, post-rule applied; larvae that could not be tagged are absent) and
    `domain_check` (the file's record, `maggotflow.domain`)."""

    key: Any
    run: Run | None = None
    classes: dict[int, np.ndarray] | None = None
    domain_check: dict | None = None
    error: TrackDataError | None = None


class Predictor:
    """A tagger or an ensemble of taggers loaded once, applied to many runs.

    model: a tagger or ensemble folder, or a loaded ModelInstance / Ensemble (the two share
    `segment_specs` and `predict(segments) -> (classes, probabilities)`; the ensemble's
    `predict` does its vote). device: "auto", "cpu", "cuda", ... batch_size: segments per
    forward pass (default 128 on CPU, 8192 on CUDA). prefetch: build segments in a
    background thread while the model runs. segments: who builds the segments: "auto" or
    "torch" (torch, batched over each chunk's larvae: on CUDA by the consumer on the GPU, on
    CPU in the producer thread), or "numpy" (per larva, in the producer thread). The
    Predictor loads the model, streams runs
    into batches of segments, runs them on the device and applies the post-rule.
    Attributes: `instance` (the ModelInstance or Ensemble), `labels`, `colors`, `post_rule`,
    `specs` (the segment specs the model needs, each built once per chunk), `device`,
    `batch_size`, `domain` (the model's `maggotflow.domain.DomainReference`, or None: files
    are then recorded as not checked, `not_checked_reason` says why).
    """

    def __init__(
        self,
        model: str | Path | ModelInstance | Ensemble,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        prefetch: bool = True,
        segments: str = "auto",
    ):
        self.device = select_device(device)
        # On CPU "auto" is torch too, chunk by chunk in the producer thread: batched over a
        # chunk's larvae it builds ~1.15x as many segments/s as numpy (4,096 centres, one
        # thread: `python -m benchmarks io`); on CUDA it builds them on the GPU.
        self.builder = "torch" if segments == "auto" else segment_builder(self.device, segments)
        self.build_on_device = self.builder == "torch" and self.device.type != "cpu"
        if isinstance(model, (ModelInstance, Ensemble)):
            check_kind(model.path, model.kind)
            self.instance = model.to(self.device)
        else:
            self.instance = load_model(model, device=self.device)
        self.specs = list(self.instance.segment_specs)
        self.labels = list(self.instance.labels)
        self.colors = list(self.instance.colors) if self.instance.colors else default_colors(self.labels)
        self.post_rule = self.instance.post_rule
        decision = getattr(self.instance, "decision", None)  # ensembles vote per step
        self.decision = decision if decision is not None and decision.temporal else None
        self.batch_size = int(batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, 128))
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        self.prefetch = prefetch
        self._steps = tuple((name,) for name in self.labels)
        self.domain = getattr(self.instance, "domain", None)  # an ensemble's: its first member's
        self.not_checked_reason = (
            "the model folder holds no domain reference (trained before maggotflow's domain check, or without "
            "validation samples): this file was not compared with the training data")

    # -- model
    def classify(self, segments: Sequence[np.ndarray], log_probabilities: np.ndarray | None = None) -> np.ndarray:
        """Class indices (N,) int64, `batch_size` segments at a time (per-step argmax).

        segments: one (N, 2, P, W) float32 array per spec of `self.specs` (same N), numpy
        or a torch tensor (already on the device when built there).
        log_probabilities: an (N, K) float32 array that receives the calibrated class
        log-probabilities (for a temporal decoder). Forward passes run under
        `torch.inference_mode`, float16 autocast on CUDA.
        """
        n = segments[0].shape[0]
        out = np.empty(n, dtype=np.int64)
        for i in range(0, n, self.batch_size):
            xs = [a[i:i + self.batch_size].to(self.device, non_blocking=True) if isinstance(a, torch.Tensor)
                  else torch.from_numpy(np.ascontiguousarray(a[i:i + self.batch_size], dtype=np.float32))
                  .to(self.device, non_blocking=True) for a in segments]
            autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
                        else contextlib.nullcontext())
            with torch.inference_mode(), autocast:
                classes, probabilities = self.instance.predict(xs)
            out[i:i + self.batch_size] = classes.to("cpu").numpy()
            if log_probabilities is not None:
                log_probabilities[i:i + self.batch_size] = probabilities.clamp_min(1e-30).log().to("cpu").numpy()
        return out

    # -- runs
    def predict_run(self, run: Run) -> dict[str, list[str]]:
        """Label names per time step for every larva of `run` (larva id -> list, one per step)."""
        (result,) = self._tag([(None, prepare_run(run))])
        return {run.tracks[i].id: [self.labels[c] for c in cls.tolist()] for i, cls in result.classes.items()}

    def label_steps(self, classes: np.ndarray) -> list[tuple[str, ...]]:
        """Class indices -> LarvaTagger steps (one-name tuples)."""
        steps = self._steps
        return [steps[c] for c in classes.tolist()]

    def stream(self, inputs: Iterable[tuple[Any, str | Path]], read_options: ReadOptions | None = None,
               readers: int = 0) -> Iterator[TaggedFile]:
        """Tag files as they are read; yield one `TaggedFile` per (key, path) of `inputs`.

        Each file (a track file or an intermediate) is read by `readers.prepare_file`: in the
        producer thread (`readers=0`) or in that many reader processes
        (`maggotflow.readers.prepared_files`; the same labels, logs and errors). One that
        cannot be read, or holds no larva to tag, is yielded with its TrackDataError as
        `error` without stopping the others. Results come in input order except that errors
        may be reported before earlier inputs finish.
        """
        return self._tag(prepared_files(inputs, read_options, readers))

    def feed(self, inputs: Iterable[tuple[Any, str | Path]], read_options: ReadOptions | None = None,
             readers: int = 0) -> Iterator[int]:
        """The producer alone, as `stream` runs it but with no model behind it: the number of
        time steps of each chunk it would hand to the model, in order. What the reading side
        of a job delivers (`python -m benchmarks feed`)."""
        for message in self._produce(prepared_files(inputs, read_options, readers)):
            if isinstance(message, _Chunk):
                yield message.size

    def _tag(self, files: Iterable[tuple[Any, PreparedFile | TrackDataError]]) -> Iterator[TaggedFile]:
        """The consumer: classify the producer's chunks (`_produce`, in a background thread
        with `prefetch`) and yield each file once all its steps are predicted."""
        source = self._produce(files)
        messages = _threaded(source, PREFETCH_CHUNKS) if self.prefetch else _inline(source)
        jobs: dict[int, _Job] = {}
        try:
            for message in messages:
                if isinstance(message, _FileFailed):
                    yield TaggedFile(message.key, error=message.error)
                elif isinstance(message, _FileStarted):
                    jobs[message.job_id] = message.job
                    if message.job.remaining == 0:
                        yield self._finish(jobs.pop(message.job_id))
                else:
                    for job_id in self._classify_chunk(message, jobs):
                        yield self._finish(jobs.pop(job_id))
        finally:
            messages.close()

    def _classify_chunk(self, chunk: _Chunk, jobs: dict[int, _Job]) -> list[int]:
        """Classify one chunk, hand every stretch its predictions; the ids of the jobs now complete."""
        scores = np.empty((chunk.size, len(self.labels)), dtype=np.float32) if self.decision is not None else None
        segments = chunk.segments
        if isinstance(segments, _Requests):  # built here, on the model's device
            segments = [build_segments_torch(segments.pieces, spec, self.device) for spec in self.specs]
        predicted = self.classify(segments, scores)
        signatures = (self.domain.segment_signatures(segments[0]).to("cpu").numpy()
                      if self.domain is not None else None)  # (n, F) float32
        done = []
        for stretch in chunk.stretches:
            job = jobs[stretch.job_id]
            job.receive(stretch, predicted, scores, signatures)
            if job.remaining == 0:
                done.append(stretch.job_id)
        return done

    def _finish(self, job: _Job) -> TaggedFile:
        """A complete job: temporal decoding and post-rule, then the file's result."""
        if job.scores is not None:  # the temporal decoder: each larva's whole sequence at once
            tracks = list(job.scores)
            decoded = self.decision.smooth_many([job.scores[i] for i in tracks],
                                                [job.run.tracks[i].t for i in tracks])
            job.classes.update(zip(tracks, decoded))
            job.scores = None
        if self.post_rule is not None:
            for i in job.classes:
                job.classes[i] = apply_post_rule(job.classes[i])
        return TaggedFile(job.key, job.run, job.classes, self._domain_check(job))

    def _domain_check(self, job: _Job) -> dict:
        """The file's `domain_check` record (`maggotflow.domain.DomainReference.check`)."""
        if self.domain is None:
            return not_checked(self.not_checked_reason)
        tracks = job.run.tracks
        larvae = {tracks[i].id: (job.domain[i], job.classes[i].size, float(tracks[i].t[-1] - tracks[i].t[0]))
                  for i in job.domain}
        simulated = None
        if self.domain.trained_on_simulated:
            from maggotflow.report import is_simulated

            simulated = job.run.source is not None and is_simulated([job.run.source])
        return self.domain.check(larvae, file_simulated=simulated)

    def _produce(self, files: Iterable[tuple[Any, PreparedFile | TrackDataError]],
                 ) -> Iterator[_FileFailed | _FileStarted | _Chunk]:
        """The producer: per input a `_FileFailed`, or a `_FileStarted` and then its larvae's
        time steps cut into chunks of whole forward batches (spanning larvae and files: small
        files do not leave batches half empty; the last chunk may be shorter)."""
        size = self.batch_size * max(1, -(-MIN_CHUNK // self.batch_size))
        pending = _PendingChunk()
        for job_id, (key, prepared) in enumerate(files):
            if isinstance(prepared, TrackDataError):
                yield _FileFailed(key, prepared)
                continue
            yield _FileStarted(job_id, self._new_job(key, prepared))
            for i in prepared.tagged:
                track, start = prepared.run.tracks[i], 0
                while start < track.n_steps:
                    count = min(size - pending.filled, track.n_steps - start)
                    pending.requests.append((track, prepared.lengths[i], track.t[start:start + count]))
                    pending.stretches.append(_Stretch(job_id, i, start, pending.filled, count))
                    pending.filled += count
                    start += count
                    if pending.filled == size:
                        yield self._chunk(pending)
                        pending = _PendingChunk()
        if pending.filled:
            yield self._chunk(pending)

    def _new_job(self, key: Any, prepared: PreparedFile) -> _Job:
        """The job of one prepared file: empty predictions for each tagged larva."""
        run = prepared.run
        classes = {i: np.empty(run.tracks[i].n_steps, dtype=np.int64) for i in prepared.tagged}
        scores = ({i: np.empty((c.size, len(self.labels)), dtype=np.float32) for i, c in classes.items()}
                  if self.decision is not None else None)
        domain = {i: np.zeros(N_FEATURES) for i in classes} if self.domain is not None else None
        return _Job(key, run, classes, sum(c.size for c in classes.values()), scores, domain)

    def _chunk(self, pending: _PendingChunk) -> _Chunk:
        """The chunk's segments, one array per spec (several for an ensemble), or what the
        consumer is to build on the model's device."""
        if self.build_on_device:
            return _Chunk(_Requests(pending.requests), pending.filled, pending.stretches)
        if self.builder == "torch":  # batched over the chunk's larvae
            arrays = [build_segments_torch(pending.requests, spec).numpy() for spec in self.specs]
            return _Chunk(arrays, pending.filled, pending.stretches)
        arrays = [np.empty((pending.filled, 2, spec.n_points, spec.window), dtype=np.float32) for spec in self.specs]
        row = 0
        for track, length, centres in pending.requests:  # straight into the chunk: no concatenation
            for array, spec in zip(arrays, self.specs):
                array[row:row + centres.size] = build_segments(track, spec, length=length, centres=centres)
            row += centres.size
        return _Chunk(arrays, pending.filled, pending.stretches)


class _inline:
    """Run a message generator in the calling thread (same interface as `_threaded`)."""

    def __init__(self, source: Iterator):
        self.source = source

    def __iter__(self):
        return self.source

    def close(self) -> None:
        self.source.close()


class _threaded:
    """Run a message generator in a background thread, `depth` messages ahead.

    Exceptions raised by the generator are re-raised in the consumer; closing (or an
    exception in the consumer) stops the thread at its next message.
    """

    _END = object()

    def __init__(self, source: Iterator, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source,), name="maggotflow-segments", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator) -> None:
        try:
            for message in source:
                if not self._put(("ok", message)):
                    return
            self._put(("end", None))
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(("raise", err))
        finally:
            source.close()

    def __iter__(self):
        while True:
            status, value = self.queue.get()
            if status == "end":
                return
            if status == "raise":
                raise value
            yield value

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------- files
def predict_files(
    model: str | Path | ModelInstance | Ensemble | Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    out_paths: Sequence[str | Path] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    read_options: ReadOptions | None = None,
    segments: str = "auto",
    overwrite: bool = False,
    on_error: Callable[[Path, Exception], None] | None = None,
    readers: int | str = "auto",
    cores: int | None = None,
) -> list[Path]:
    """Tag `inputs` (track files or intermediates) and write one `.label` per input.

    Outputs: `out_paths` (one per input, in order), or `<out_dir>/<track file stem>.label`
    (`trx.mat` -> `trx.label`; inputs whose names coincide raise OutputClashError before any
    work: give `out_paths` then). The model (a tagger or ensemble folder, a loaded
    ModelInstance / Ensemble, or a Predictor) is loaded once.
    Existing outputs: a `.label` that maggotflow did not write (a lab's hand-made labels:
    no provenance mark) is never replaced; maggotflow's own earlier prediction is replaced
    only with `overwrite=True`. Either refusal is an OutputExistsError (one line), raised
    before any work, or with `on_error` reported for that input, which is skipped.
    Every `.label` written carries the mark (`metadata.maggotflow`: version and model) and
    the file's domain check (`metadata.maggotflow.domain_check`, `maggotflow.domain`); a file
    judged `unlike_training` is named in a warning, and their number in a last one.
    A bad input raises TrackDataError naming it, unless `on_error` is given: it is then
    called with (input path, error) and the input skipped. Temporaries that a killed
    earlier run left next to the outputs are removed first (`atomic.remove_stale_temporaries`).
    segments: who builds the segments (see `Predictor`).
    cores: the cores this call may use (default: torch's thread count, which `maggotflow
    --threads`, a job's `threads:` or the caller set; never more than the job's allocation,
    `threads.allocated_cores`). readers: reader processes, or "auto": `threads.reader_split`
    shares the cores between readers and torch's threads (on CUDA from 3 cores all but one
    read; on the CPU torch gets them all); torch's threads are set for the call and put
    back. The labels do not depend on either.
    Returns the `.label` paths written, in input order.
    """
    inputs = [Path(p) for p in inputs]
    outs = output_paths(inputs, None if out_dir is None else Path(out_dir),
                        None if out_paths is None else [Path(p) for p in out_paths])
    remove_stale_temporaries(outs)
    refused = {i for i, out in enumerate(outs) if not _replaceable(inputs[i], out, overwrite, on_error)}
    predictor = (model if isinstance(model, Predictor)
                 else Predictor(model, device=device, batch_size=batch_size, segments=segments))
    model_sha1 = fingerprint(predictor.instance.path) if predictor.instance.path else None
    cores = allocated_cores(torch.get_num_threads() if cores is None else cores)
    split = reader_split(cores, predictor.device.type, readers)
    files = _FileProgress(total=len(inputs) - len(refused))
    todo = [(i, p) for i, p in enumerate(inputs) if i not in refused]
    with torch_threads(split.torch_threads):
        written, unlike = _write_labels(predictor, model_sha1, todo, outs, files, read_options, split.readers,
                                        overwrite, on_error)
    _log_summary(files, len(written), unlike, predictor.device)
    return [written[i] for i in sorted(written)]


def _write_labels(predictor: Predictor, model_sha1: str | None, todo: list[tuple[int, Path]], outs: list[Path],
                  files: "_FileProgress", read_options: ReadOptions | None, readers: int, overwrite: bool,
                  on_error: Callable[[Path, Exception], None] | None) -> tuple[dict[int, Path], list[Path]]:
    """Tag the (index, input) pairs of `todo` and write their labels to `outs[index]`:
    (the labels written by index, the inputs unlike the training data)."""
    inputs = dict(todo)
    written: dict[int, Path] = {}
    unlike: list[Path] = []
    for result in predictor.stream(todo, read_options, readers):
        path, out = inputs[result.key], outs[result.key]
        files.report(path)
        if result.error is not None:
            if on_error is None:
                raise result.error
            on_error(path, result.error)
            continue
        label_file = _label_file(predictor, result, model_sha1)
        if not _replaceable(path, out, overwrite, on_error):  # again: a file may have appeared meanwhile
            continue
        write_label_file(out, label_file)
        written[result.key] = out
        n = sum(cls.size for cls in result.classes.values())
        files.steps += n
        log.info("%s: %d larvae, %d time steps -> %s", path, len(result.classes), n, out)
        if result.domain_check.get("verdict") == "unlike_training":
            unlike.append(path)
            log.warning("%s: %s", printable_path(str(path)), describe(result.domain_check))
    return written, unlike


def _replaceable(path: Path, out: Path, overwrite: bool, on_error: Callable[[Path, Exception], None] | None) -> bool:
    """Whether input `path` may be tagged into `out` (`check_replaceable`); a refusal is raised,
    or with `on_error` reported for the input (False)."""
    try:
        check_replaceable(out, overwrite)
    except OutputExistsError as err:
        if on_error is None:
            raise
        on_error(path, err)
        return False
    return True


def _label_file(predictor: Predictor, result: TaggedFile, model_sha1: str | None) -> LabelFile:
    """The `.label` of one tagged file: the model's names and colours, one label per time
    step of every larva tagged, the provenance mark and the file's domain check."""
    steps = {result.run.tracks[i].id: predictor.label_steps(cls) for i, cls in result.classes.items()}
    mark = prediction_mark(predictor.instance.path, result.run.read_options, model_sha1=model_sha1)
    return label_file_for_run(result.run, names=predictor.labels, colors=predictor.colors, labels=steps,
                              provenance={**mark, RECORD_KEY: result.domain_check})


@dataclass
class _FileProgress:
    """A prediction's progress: files done of `total` (progress lines with an ETA) and time
    steps tagged, since `start` (s, `time.perf_counter`)."""

    total: int
    done: int = 0
    steps: int = 0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def report(self, path: Path) -> None:
        """One more file done: 'file n/N (p%) name, ETA ...' (`maggotflow.progress`)."""
        self.done += 1
        eta = (time.perf_counter() - self.start) / self.done * (self.total - self.done)
        progress.report(self.done, self.total, "file %d/%d (%d%%) %s, ETA %s", self.done, self.total,
                        100 * self.done // max(self.total, 1), path.name, progress.duration_text(eta))


def _log_summary(files: _FileProgress, n_written: int, unlike: list[Path], device: torch.device) -> None:
    """The closing lines: how many files are unlike the training data, and the speed."""
    if unlike:
        log.warning("%d of %d file(s) tagged are unlike the tagger's training data (domain check; first: %s): "
                    "check their labels before trusting them, or label a few of their larvae and fine-tune",
                    len(unlike), n_written, printable_path(str(unlike[0])))
    elapsed = time.perf_counter() - files.start
    if files.steps:
        log.info("tagged %d time steps in %d file(s) in %.1f s (%.0f steps/s on %s)",
                 files.steps, n_written, elapsed, files.steps / max(elapsed, 1e-9), device)
