"""LarvaTagger `.label` files (JSON): per-step behaviour labels for the larvae of one track file.

Layout (keys in this order; LarvaTagger recognises the file by its start)::

    {
    "metadata": {"id": "20140101_120000", "tracker": "t15", ..., "filename": "..."},
    "units": {"t": "s"},
    "labels": {"names": ["run", "cast"], "colors": ["#000000", "#e41a1c"]},
    "secondarylabels": ...,                                  (optional)
    "dependencies": {"filename": "<track file>", "sha1": "<hex sha1 of it>"},
    "data": [
    {"id": "1", "t": [0.0, 0.073, ...], "labels": ["run", ["run", "hunch"], [], ...]},
    ...
    ]
    }

`labels` may also be a plain list of names; `dependencies` a list of such dicts. A larva id is
a string holding an integer. `t` (s) is rounded to 1 ms and repeats the track file's own
time steps. A step's label is a name, a list of names (several at once) or `[]` (untagged);
in maggotflow a step is a tuple of names (`()`, `("run",)`, `("run", "hunch")`).

Provenance: a `.label` written by maggotflow's prediction carries `metadata.maggotflow`
(`{"version": ..., "model": ...}`, see `PROVENANCE_KEY`). That mark is how maggotflow
tells its own earlier predictions (which it may replace when asked) from a lab's hand-made
labels (which it never replaces): `is_maggotflow_label(path)`; in doubt (unreadable, no
mark), a file is the user's.

Reading refuses, with one line naming the file (TrackDataError): invalid or truncated JSON,
JSON nested deeper than Python's parser goes (~1000 levels; a label file needs 5), integers
of more than 4300 digits, a larva whose `t` is not a flat list of finite numbers or whose
times go backwards (equal neighbouring times, possible after rounding to 1 ms, are kept),
and labels that are not declared names. Values quoted in messages are shortened.

Writing puts one larva per line: valid JSON, compact, yet readable and diff-able. Output is
deterministic (same LabelFile -> same bytes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from maggotflow.atomic import atomic_path
from maggotflow.formats import file_sha1, read_input_bytes
from maggotflow.tracks import LabelStep, Run, TrackDataError

log = logging.getLogger(__name__)

# metadata key that marks a .label file as written by maggotflow (value: a dict with "version").
PROVENANCE_KEY = "maggotflow"

# Label and track times are the same time steps, the label file's rounded to 1 ms.
TIME_TOLERANCE = 1e-3 + 1e-9  # s

# Our choice of colours (a behaviour and its _large variant share one); LarvaTagger shows
# whatever `labels.colors` says, so users can change them in the file.
DEFAULT_COLORS: dict[str, str] = {
    "run": "#000000",
    "run_large": "#000000",
    "cast": "#e41a1c",
    "cast_large": "#e41a1c",
    "back": "#4daf4a",
    "back_large": "#4daf4a",
    "hunch": "#377eb8",
    "hunch_large": "#377eb8",
    "roll": "#ffd700",
    "roll_large": "#ffd700",
    "stop": "#984ea3",
    "stop_large": "#984ea3",
    "small_motion": "#a0a0a0",
}
# For names without a default colour, in order of appearance among such names.
FALLBACK_COLORS: tuple[str, ...] = (
    "#ff7f00", "#a65628", "#f781bf", "#1b9e77", "#66a61e", "#e6ab02",
    "#7570b3", "#d95f02", "#17becf", "#bcbd22", "#8c564b", "#e377c2",
)


def default_colors(names: list[str]) -> list[str]:
    """One '#rrggbb' colour per label name: DEFAULT_COLORS, else the fallback palette."""
    colors, unknown = [], 0
    for name in names:
        color = DEFAULT_COLORS.get(name)
        if color is None:
            color = FALLBACK_COLORS[unknown % len(FALLBACK_COLORS)]
            unknown += 1
        colors.append(color)
    return colors


@dataclass
class LabelFile:
    """Contents of a `.label` file.

    metadata: run metadata, first key "id". names: label names. tracks: larva id ->
    (t in s, one tuple of names per step). colors: '#rrggbb' per name or None.
    dependencies: [{"filename": ..., "sha1": ...}] (the track file(s) labelled) or None.
    """

    metadata: dict
    names: list[str]
    tracks: dict[str, tuple[np.ndarray, list[tuple[str, ...]]]]
    colors: list[str] | None = None
    dependencies: list[dict] | None = None
    secondary_labels: Any = None
    units: dict = field(default_factory=lambda: {"t": "s"})


def _canonical_id(value: Any) -> str:
    """'12', 12 and '012' are the same larva (LarvaTagger parses ids as integers)."""
    text = str(value).strip()
    if not text.isdecimal():  # isdigit() would let '²' through, which int() refuses
        return text
    try:
        return str(int(text))
    except ValueError:  # more than 4300 digits
        return text


# Values from a file quoted in messages: at most 80 characters, 4 levels of nesting.
_quoted = reprlib.Repr()
_quoted.maxlevel, _quoted.maxstring, _quoted.maxother = 4, 60, 60


# ----------------------------------------------------------------------------- reading


def _json_error(path: Path, text: str, err: json.JSONDecodeError) -> TrackDataError:
    if not text[err.pos :].strip() and err.pos > 0:
        return TrackDataError(path, f"is truncated: the JSON ends abruptly at line {err.lineno}")
    return TrackDataError(path, f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})")


def _names_of(value: Any) -> list[str]:
    """Label names from a `labels` / `secondarylabels` value (list or {"names": [...]})."""
    if isinstance(value, dict):
        value = value.get("names", [])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


def _read_steps(path: Path, where: str, raw: Any) -> list[LabelStep]:
    if not isinstance(raw, list):
        raise TrackDataError(path, f"{where}: 'labels' must be a list with one entry per time step")
    cache: dict[str, LabelStep] = {}
    steps: list[LabelStep] = []
    for j, value in enumerate(raw):
        if isinstance(value, str):
            step = cache.get(value)
            if step is None:
                step = cache[value] = (value,)
        elif value is None:
            step = ()
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            step = tuple(value)
        else:
            raise TrackDataError(path, f"{where}, step {j}: label {_quoted.repr(value)} is not a name or a list of names")
        steps.append(step)
    return steps


def read_label_file(path: str | Path) -> LabelFile:
    """Read a LarvaTagger `.label` file.

    Accepts `labels` as a list or {"names", "colors"}, `dependencies` as a dict or a list,
    larva ids as strings or integers (normalised to strings like "12"), t in s (or ms).
    Raises TrackDataError (one line, naming the file) for invalid JSON, a truncated file,
    JSON nested too deeply, missing keys, wrong structure, times that are not finite numbers
    or go backwards, or label names that are not declared.
    """
    path = Path(path)
    doc = _label_document(path)
    metadata = doc["metadata"]
    if not isinstance(metadata, dict):
        raise TrackDataError(path, "'metadata' must be a JSON object")
    units, time_scale = _time_units(path, doc)
    names, colors = _label_names(path, doc["labels"])
    dependencies = _dependencies(path, doc.get("dependencies"))
    secondary = doc.get("secondarylabels")
    allowed = set(names) | set(_names_of(secondary))

    data = doc["data"]
    if not isinstance(data, list):
        raise TrackDataError(path, "'data' must be a list of larvae")
    tracks: dict[str, tuple[np.ndarray, list[LabelStep]]] = {}
    for i, item in enumerate(data):
        larva = _data_item_id(path, i, item)
        if larva in tracks:
            raise TrackDataError(path, f"larva id {larva} appears twice in 'data'")
        tracks[larva] = _larva_steps(path, f"larva {larva}", item, time_scale, names, allowed)

    return LabelFile(
        metadata=dict(metadata),
        names=names,
        tracks=tracks,
        colors=colors,
        dependencies=dependencies,
        secondary_labels=secondary,
        units=units,
    )


def _label_document(path: Path) -> dict:
    """The file's JSON object, with the keys every .label file has (metadata, labels, data)."""
    raw = read_input_bytes(path)  # refuses FIFOs, devices and gzip data with one line
    if not raw.strip():
        raise TrackDataError(path, "is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrackDataError(path, "is not a text file (not UTF-8): not a LarvaTagger .label file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _json_error(path, text, err) from None
    except RecursionError:
        raise TrackDataError(path, "is not a LarvaTagger .label file: its JSON is nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise TrackDataError(path, f"is not valid JSON ({str(err).split(':')[0]})") from None
    if not isinstance(doc, dict):
        raise TrackDataError(path, "is not a LarvaTagger .label file (the top level must be a JSON object)")
    for key in ("metadata", "labels", "data"):
        if key not in doc:
            raise TrackDataError(path, f"is not a LarvaTagger .label file: it has no '{key}' key")
    return doc


def _time_units(path: Path, doc: dict) -> tuple[dict, float]:
    """The `units` as read back (t always in s) and the factor that turns the file's times
    into seconds (1e-3 for ms)."""
    units = doc.get("units", {"t": "s"})
    if not isinstance(units, dict):
        raise TrackDataError(path, "'units' must be a JSON object like {\"t\": \"s\"}")
    time_unit = units.get("t", "s")
    if time_unit not in ("s", "ms"):
        raise TrackDataError(path, f"time unit {_quoted.repr(time_unit)} is not supported (expected 's')")
    if time_unit == "ms":
        return {**units, "t": "s"}, 1e-3
    return dict(units), 1.0


def _label_names(path: Path, labels: Any) -> tuple[list[str], list[str] | None]:
    """Label names and their colours (None when the file gives none) from `labels`, a list
    of names or {"names": [...], "colors": [...]}."""
    colors = None
    if isinstance(labels, dict):
        if "names" not in labels:
            raise TrackDataError(path, "'labels' has no 'names' list")
        colors = labels.get("colors")
        labels = labels["names"]
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise TrackDataError(path, "'labels' must be a list of label names (or {\"names\": [...], \"colors\": [...]})")
    names = list(labels)
    if colors is not None:
        if not isinstance(colors, list) or len(colors) != len(names) or not all(isinstance(c, str) for c in colors):
            raise TrackDataError(path, f"'labels.colors' must be a list of {len(names)} colour strings, one per name")
        colors = list(colors)
    return names, colors


def _dependencies(path: Path, dependencies: Any) -> list[dict] | None:
    """`dependencies` (an object or a list of objects) as a list of dicts, None if absent."""
    if isinstance(dependencies, dict):
        dependencies = [dependencies]
    if dependencies is not None and not (
        isinstance(dependencies, list) and all(isinstance(d, dict) for d in dependencies)
    ):
        raise TrackDataError(path, "'dependencies' must be an object or a list of objects")
    return None if dependencies is None else [dict(d) for d in dependencies]


def _data_item_id(path: Path, i: int, item: Any) -> str:
    """The larva id of `data` item `i` (checked to have id, t and labels), as a string."""
    if not isinstance(item, dict):
        raise TrackDataError(path, f"data item {i} is not a JSON object")
    for key in ("id", "t", "labels"):
        if key not in item:
            raise TrackDataError(path, f"data item {i} has no '{key}' key")
    if isinstance(item["id"], bool) or not isinstance(item["id"], (str, int)):
        raise TrackDataError(path, f"data item {i}: larva id {_quoted.repr(item['id'])} is not a string or integer")
    return _canonical_id(item["id"])


def _larva_steps(path: Path, where: str, item: dict, time_scale: float, names: list[str],
                 allowed: set[str]) -> tuple[np.ndarray, list[LabelStep]]:
    """One larva's times (s: finite, never going backwards) and its labels, one step per time,
    each name among the `allowed` (primary and secondary) names."""
    try:
        times = np.asarray(item["t"]) if isinstance(item["t"], list) else None
    except ValueError:  # ragged nested lists
        times = None
    if times is None or times.ndim != 1 or (times.size and times.dtype.kind not in "iuf"):
        raise TrackDataError(path, f"{where}: 't' must be a list of numbers (s)")
    t = times.astype(np.float64) * time_scale
    if not np.all(np.isfinite(t)):
        raise TrackDataError(path, f"{where}: 't' has NaN or infinite times")
    backwards = np.flatnonzero(np.diff(t) < 0)
    if backwards.size:
        j = int(backwards[0]) + 1
        raise TrackDataError(path, f"{where}: times go backwards at step {j} ({t[j]:.3f} s after {t[j - 1]:.3f} s)")
    steps = _read_steps(path, where, item["labels"])
    if len(steps) != t.size:
        raise TrackDataError(path, f"{where} has {len(steps)} labels for {t.size} time steps")
    unknown = {name for step in set(steps) for name in step} - allowed
    if unknown:
        raise TrackDataError(
            path, f"{where} uses label {sorted(unknown)[0]!r}, which is not among the label names {names}"
        )
    return t, steps


# ----------------------------------------------------------------------------- writing


def _plain(value: Any) -> Any:
    """JSON form of values readers may put in metadata (numpy scalars/arrays, paths)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_plain)


def _step_json(step: LabelStep) -> str:
    if len(step) == 0:
        return "[]"
    if len(step) == 1:
        return _dumps(step[0])
    return json.dumps(list(step), ensure_ascii=False, separators=(",", ":"))


def _track_line(larva: str, t: np.ndarray, steps: list[LabelStep]) -> str:
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"larva {larva}: times must be finite")
    if len(steps) != t.size:
        raise ValueError(f"larva {larva}: {len(steps)} labels for {t.size} time steps")
    # round(., 3) then repr gives '0.033', not '0.033000000000000002'
    times = json.dumps(np.round(t, 3).tolist(), separators=(",", ":"))
    cache: dict[LabelStep, str] = {}
    parts = []
    for step in steps:
        text = cache.get(step)
        if text is None:
            text = cache[step] = _step_json(tuple(step))
        parts.append(text)
    return f'{{"id": {_dumps(str(larva))}, "t": {times}, "labels": [{",".join(parts)}]}}'


def label_file_text(label_file: LabelFile) -> str:
    """The JSON text `write_label_file` writes (deterministic, one larva per line)."""
    return "".join(_label_file_pieces(label_file))


def _label_file_pieces(label_file: LabelFile) -> Iterator[str]:
    """The JSON text of `label_file` in pieces: the header, then one larva line at a time
    (a big file's text is never held whole: ~80 MB for 5 million steps)."""
    lf = label_file
    if "id" not in lf.metadata:
        raise ValueError("label file metadata needs an 'id' (LarvaTagger recognises files by it)")
    metadata = {"id": lf.metadata["id"], **{k: v for k, v in lf.metadata.items() if k != "id"}}
    if lf.colors is not None:
        if len(lf.colors) != len(lf.names):
            raise ValueError(f"{len(lf.colors)} colours for {len(lf.names)} label names")
        labels: Any = {"names": list(lf.names), "colors": list(lf.colors)}
    else:
        labels = list(lf.names)
    header = [f'"metadata": {_dumps(metadata)}', f'"units": {_dumps(lf.units)}', f'"labels": {_dumps(labels)}']
    if lf.secondary_labels is not None:
        header.append(f'"secondarylabels": {_dumps(lf.secondary_labels)}')
    if lf.dependencies is not None:
        deps: Any = lf.dependencies[0] if len(lf.dependencies) == 1 else list(lf.dependencies)
        header.append(f'"dependencies": {_dumps(deps)}')
    yield "{\n" + ",\n".join(header) + ",\n"
    if not lf.tracks:
        yield '"data": []\n}\n'
        return
    yield '"data": [\n'
    for i, (larva, (t, steps)) in enumerate(lf.tracks.items()):
        yield (",\n" if i else "") + _track_line(larva, t, steps)
    yield "\n]\n}\n"


def write_label_file(path: str | Path, label_file: LabelFile, overwrite: bool = True) -> None:
    """Write `label_file` to `path` as LarvaTagger JSON (UTF-8), atomically.

    With overwrite=False an existing file raises FileExistsError and is left untouched.
    """
    pieces = _label_file_pieces(label_file)
    first = next(pieces)  # the header's errors (no id, colours) before any file is made
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(first)
            for piece in pieces:
                f.write(piece)


def header_value(path: str | Path, key: str, head_bytes: int = 1 << 16) -> Any:
    """The value of a top-level header key (`metadata`, `dependencies`, ...) of a `.label`
    file, read from its head only (the header precedes the large `data` array), without
    parsing the whole file; None when unreadable or absent."""
    try:
        with open(path, "rb") as f:
            text = f.read(head_bytes).decode("utf-8", errors="replace")
    except OSError:
        return None
    at = text.find(f'"{key}"')
    colon = text.find(":", at + len(key) + 2) if at >= 0 else -1
    if colon < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[colon + 1:].lstrip())
    except ValueError:
        return None
    return value


def is_maggotflow_label(path: str | Path) -> bool:
    """True when `path` is a `.label` file that maggotflow wrote (its metadata carries the mark).

    Anything unreadable, not a label file, or without the mark is False: in doubt, a file
    belongs to the user.
    """
    metadata = header_value(path, "metadata")
    mark = metadata.get(PROVENANCE_KEY) if isinstance(metadata, dict) else None
    return isinstance(mark, dict) and "version" in mark


def provenance_mark(**fields: Any) -> dict[str, Any]:
    """The `metadata.maggotflow` value of a file maggotflow writes: version plus `fields`."""
    from maggotflow import __version__

    return {"version": __version__, **fields}


def label_file_for_run(
    run: Run,
    names: list[str] | None = None,
    colors: list[str] | None = None,
    labels: dict[str, list[tuple[str, ...]]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> LabelFile:
    """A LabelFile for the larvae of `run`.

    In: the run; per-larva labels from `labels` (larva id -> one tuple per time step) when
    given, else from each track's `.labels`. Larvae without labels are left out.
    names default: the names used, in order of first appearance; colors default:
    DEFAULT_COLORS (fallback palette for other names).
    provenance: the `metadata.maggotflow` mark (`provenance_mark(...)`) of a prediction.
    Out: metadata = run.metadata with "id" first (then the mark); dependencies = the run's track file
    (basename + sha1); per-larva t = the track's own times (s).
    """
    by_id = None if labels is None else {_canonical_id(k): v for k, v in labels.items()}
    tracks: dict[str, tuple[np.ndarray, list[LabelStep]]] = {}
    used: dict[str, None] = {}
    for track in run.tracks:
        steps = track.labels if by_id is None else by_id.get(_canonical_id(track.id))
        if steps is None:
            continue
        steps = [tuple(step) for step in steps]
        if len(steps) != track.n_steps:
            raise ValueError(f"larva {track.id}: {len(steps)} labels for {track.n_steps} time steps")
        for step in dict.fromkeys(steps):
            for name in step:
                used.setdefault(name, None)
        tracks[str(track.id)] = (track.t.copy(), steps)
    if names is None:
        names = list(used)
    else:
        missing = [name for name in used if name not in names]
        if missing:
            raise ValueError(f"labels {missing} are used but not among the label names {names}")
        names = list(names)
    if colors is None:
        colors = default_colors(names)

    metadata = dict(run.metadata)
    if "id" not in metadata:
        fallback = metadata.get("date_time") or (run.source.stem if run.source is not None else "unknown")
        metadata["id"] = fallback
    metadata = {"id": metadata["id"], **{k: v for k, v in metadata.items() if k != "id"}}
    if provenance is not None:
        metadata[PROVENANCE_KEY] = dict(provenance)
    else:
        metadata.pop(PROVENANCE_KEY, None)  # labels copied from a prediction are not one of ours

    dependencies = None
    if run.source is not None:
        source = Path(run.source)
        sha1 = run.sha1
        if sha1 is None and source.is_file():
            sha1 = file_sha1(source)
        dependency = {"filename": source.name}
        if sha1 is not None:
            dependency["sha1"] = sha1
        dependencies = [dependency]
    return LabelFile(
        metadata=metadata, names=names, tracks=tracks, colors=list(colors), dependencies=dependencies
    )


# ----------------------------------------------------------------------------- attaching


def attach_labels(run: Run, label_file: LabelFile, label_path: str | Path, check_sha1: bool = True) -> Run:
    """A copy of `run` whose tracks carry the labels of `label_file` (read from `label_path`).

    Checks (TrackDataError naming `label_path`): the label file was made for this track file
    (sha1 in `dependencies`, when both are known and `check_sha1`); every labelled larva exists
    in the run (or was left out by the reader, `Run.left_out`: its labels go unused); its
    times equal the track's time steps within 1 ms; its labels are declared names. Larvae of the run missing from the label file get labels
    None (logged).
    """
    label_path = Path(label_path)
    track_name = Path(run.source).name if run.source is not None else run.metadata.get("filename", "the track file")
    if check_sha1 and run.sha1 and label_file.dependencies:
        sha1s = {str(d["sha1"]).lower() for d in label_file.dependencies if d.get("sha1")}
        if sha1s and run.sha1.lower() not in sha1s:
            raise TrackDataError(label_path, f"was made for another track file (sha1 mismatch with {track_name})")

    allowed = set(label_file.names) | set(_names_of(label_file.secondary_labels))
    by_id = {_canonical_id(k): v for k, v in label_file.tracks.items()}
    run_ids = {_canonical_id(track.id) for track in run.tracks}
    # Larvae the reader left out (too short, corrupt; warned then) keep their labels unused.
    left_out = {_canonical_id(k) for k in run.left_out}
    extra = [larva for larva in by_id if larva not in run_ids and larva not in left_out]
    if extra:
        raise TrackDataError(label_path, f"larva {extra[0]} is in the label file but not in {track_name}")

    tracks = []
    unlabelled = []
    for track in run.tracks:
        entry = by_id.get(_canonical_id(track.id))
        if entry is None:
            unlabelled.append(track.id)
            tracks.append(track.replace(labels=None))
            continue
        t, steps = entry
        t = np.asarray(t, dtype=np.float64)
        if t.size != track.n_steps:
            raise TrackDataError(
                label_path,
                f"times of larva {track.id} do not match the track file "
                f"({t.size} label time steps, {track.n_steps} in {track_name})",
            )
        off = np.abs(t - track.t) > TIME_TOLERANCE
        if off.any():
            i = int(np.argmax(off))
            raise TrackDataError(
                label_path,
                f"times of larva {track.id} do not match the track file "
                f"(step {i}: {t[i]:.3f} s in the label file, {track.t[i]:.4f} s in {track_name})",
            )
        steps = [tuple(step) for step in steps]
        unknown = {name for step in set(steps) for name in step} - allowed
        if unknown:
            raise TrackDataError(
                label_path,
                f"larva {track.id} uses label {sorted(unknown)[0]!r}, which is not among the label names "
                f"{list(label_file.names)}",
            )
        tracks.append(track.replace(labels=steps))
    if unlabelled:
        shown = ", ".join(unlabelled[:10]) + (" ..." if len(unlabelled) > 10 else "")
        log.warning("%s: %d larva(e) of %s have no labels (ids %s)", label_path, len(unlabelled), track_name, shown)
    return dataclasses.replace(run, tracks=tracks)
