"""The manifest: one row per track file of an input directory tree, as a TSV file.

The workflow never globs directories while it builds its job graph: every cluster job
re-reads the Snakefile, and a glob over tens of thousands of files on a network filesystem
costs seconds per job. Instead the tree is scanned once per workflow invocation (or not at
all, when the user supplies a manifest) and every job reads `results/manifest.tsv`.

Columns (a `maggotflow.tsv` table: tab separated, one header line, UTF-8, a cell with a tab,
line break or quote in double quotes; rows sorted by `relpath`)::

    id         safe unique name derived from the relative path, only [A-Za-z0-9_.-]
               (every Janelia file is called trx.mat: identity comes from the path)
    path       absolute path of the track file
    relpath    path relative to the scanned root (mirrored by the output trees, so never
               absolute and never climbing out with '..': see `relpath_problem`)
    format     spine | trx | fimtrack
    size       bytes
    label      absolute path of the paired LarvaTagger .label file, or "" (see below)
    tracker, genotype, effector, protocol, date_time
               metadata from the path, "" when unknown (filters such as "one tracker only")

Label pairing, for a track file `DIR/STEM.EXT`: `DIR/STEM.label` (so `trx.mat` pairs with
`trx.label`); otherwise a `.label` in DIR whose `dependencies` name the track file. Exported
predictions (`predicted.label`, `*.predicted.label`, see `exported_label_path`) are never
taken as ground truth.

Also here: loading a folder's manifest as the workflow does (`load_manifest`). The names
derived from paths (ids, output label paths, prediction runs) are `maggotflow.names`; the
held-out split is `maggotflow.heldout`; the prediction shards are `maggotflow.sharding`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from maggotflow import tsv
from maggotflow.atomic import write_text_atomic
from maggotflow.names import is_exported_prediction, relpath_problem, safe_name, unique_ids
from maggotflow.tracks import (
    DATE_TIME, METADATA_COLUMNS, TrackDataError, choreography_metadata, metadata_matches, printable_path,
)

log = logging.getLogger(__name__)

COLUMNS = ("id", "path", "relpath", "format", "size", "label", *METADATA_COLUMNS)
# Janelia files are always called trx.mat; other .mat files in experiment folders are not tracks.
DEFAULT_PATTERNS = ("*.spine", "trx.mat", "*.csv")
_FORMAT_BY_SUFFIX = {".spine": "spine", ".mat": "trx", ".csv": "fimtrack"}


@dataclass
class Manifest:
    """Rows (dicts of column -> str) in `relpath` order, with a lookup by id.

    `root` is the scanned directory (None for a user manifest without one).
    """

    rows: list[dict[str, str]]
    root: Path | None = None
    # Entries of a scanned tree that are not taken as track files: (relpath, reason).
    skipped: list[tuple[str, str]] = field(default_factory=list, repr=False)
    by_id: dict[str, dict[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = sorted(self.rows, key=lambda r: (r["relpath"], r["id"]))
        self.by_id = {}
        for row in self.rows:
            if row["id"] in self.by_id:
                raise ValueError(f"manifest id {row['id']!r} appears twice")
            self.by_id[row["id"]] = row

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self.rows)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    def where(self, **equals: str | Sequence[str]) -> "Manifest":
        """Rows whose columns equal the given values (a list means any of them)."""
        return Manifest([dict(r) for r in self.rows if metadata_matches(r, equals)], self.root)

    def subset(self, ids: Iterable[str]) -> "Manifest":
        keep = set(ids)
        return Manifest([dict(r) for r in self.rows if r["id"] in keep], self.root)

    def to_tsv(self) -> str:
        """The manifest as TSV text (`maggotflow.tsv`): COLUMNS, then any extra column sorted."""
        columns = list(COLUMNS) + sorted({c for r in self.rows for c in r} - set(COLUMNS))
        return tsv.format_rows(columns, self.rows)


# --------------------------------------------------------------------------------------
# Scanning a tree


def build_manifest(root: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS, *,
                   file_links_outside: bool = False) -> Manifest:
    """Scan `root` for track files whose names match `patterns` (fnmatch, case-insensitive).

    Hidden folders are skipped. A symbolic link is followed only when its target lies
    inside `root` (each folder is listed once; see `_walk`): a link to `/` or to another
    disk is skipped, not scanned, so to tag files that live elsewhere, scan their own
    folder or list them in a manifest. With `file_links_outside`, links to *files*
    anywhere are taken as well (a folder of links to track files kept elsewhere, as a
    program staging its inputs makes one); links to folders outside never are. Every other entry that is not a track file is listed
    in `Manifest.skipped` as (relpath, reason) (`skipped_reason`), except hidden files,
    `.label` files and the `.outline` of a `.spine`, which are expected there. Names with
    tabs, line breaks or quotes are kept as they are (`maggotflow.tsv` writes them); names
    that are not valid UTF-8 are skipped, shown escaped.
    Raises TrackDataError when `root` is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise TrackDataError(root, "is not a folder of track files")
    root_abs = Path(os.path.abspath(root))
    if not _is_utf8(str(root_abs)):
        raise TrackDataError(printable_path(str(root_abs)), "folder name is not valid UTF-8 (shown with \\x "
                                                            "escapes); rename it, or scan a link to it")
    lowered = [p.lower() for p in patterns]
    tracks: list[tuple[str, os.DirEntry]] = []
    label_dirs: dict[str, list[str]] = {}  # relative folder -> .label names
    skipped: list[tuple[str, str]] = []
    for reldir, entries, others in _walk(root_abs, skipped, file_links_outside):
        labels = []
        names = {entry.name for entry in entries}
        for entry in entries:
            name = entry.name
            lname = name.lower()
            if lname.endswith(".label"):
                labels.append(name)
                continue
            if lname.endswith(".outline") and name[: -len(".outline")] + ".spine" in names:
                continue  # read with its .spine: expected, not skipped
            reason = None
            if not any(fnmatch.fnmatchcase(lname, p) for p in lowered):
                reason = skipped_reason(name, patterns)
            elif Path(lname).suffix not in _FORMAT_BY_SUFFIX:
                reason = "not a track file format (.spine, .mat or .csv)"
            elif lname.endswith(".csv") and not _looks_like_fimtrack(entry):
                reason = _NOT_FIMTRACK
            if reason:
                skipped.append((os.path.join(reldir, name), reason))
            else:
                tracks.append((reldir, entry))
        skipped += [(os.path.join(reldir, name), why) for name, why in others]
        if labels:
            label_dirs[reldir] = labels
    not_fimtrack = [p for p, reason in skipped if reason == _NOT_FIMTRACK]
    if not_fimtrack:
        log.warning("%s: skipped %d .csv file(s) that are not FIMTrack tables (first: %s)",
                    root, len(not_fimtrack), not_fimtrack[0])
    if skipped:
        log.info("%s: skipped %d entries that are not track files (first: %s: %s)", root, len(skipped), *skipped[0])
    relpaths = [os.path.join(d, e.name) if d else e.name for d, e in tracks]
    ids = unique_ids(relpaths)
    rows = []
    unpaired: dict[str, list[int]] = {}
    for k, ((reldir, entry), relpath, ident) in enumerate(zip(tracks, relpaths, ids)):
        path = root_abs / relpath
        fmt = _FORMAT_BY_SUFFIX[Path(entry.name.lower()).suffix]
        label = ""
        same_stem = Path(entry.name).stem + ".label"
        if same_stem in label_dirs.get(reldir, ()):
            label = str(path.with_name(same_stem))
        else:
            unpaired.setdefault(reldir, []).append(k)
        row = {"id": ident, "path": str(path), "relpath": relpath, "format": fmt,
               "size": str(entry.stat().st_size), "label": label}
        row.update(path_metadata(path, fmt))
        rows.append(row)
    for reldir, indices in unpaired.items():
        candidates = [n for n in label_dirs.get(reldir, ()) if not is_exported_prediction(n)]
        if candidates:
            _pair_by_dependencies(root_abs / reldir, candidates, [rows[k] for k in indices])
    return Manifest(rows, root_abs, sorted(skipped))


_NOT_FIMTRACK = "a .csv file that is not a FIMTrack table"
_COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zip": "zip", ".7z": "7z", ".zst": "zstd"}


def skipped_reason(name: str, patterns: Sequence[str] = DEFAULT_PATTERNS) -> str:
    """Why a regular file called `name` is not taken as a track file (its name alone decides)."""
    suffix = Path(name.lower()).suffix
    if suffix in _COMPRESSED:
        return f"{_COMPRESSED[suffix]}-compressed: decompress it first"
    if suffix == ".outline":
        return "a Choreography .outline without its .spine (outlines are read with their .spine file)"
    if suffix in _FORMAT_BY_SUFFIX:
        return f"its name matches none of the patterns {', '.join(patterns)}"
    return f"unknown extension {suffix or '(none)'}: not a .spine, trx.mat or .csv track file"


def _walk(root: Path, skipped: list[tuple[str, str]] | None = None, file_links_outside: bool = False
          ) -> Iterator[tuple[str, list[os.DirEntry], list[tuple[str, str]]]]:
    """(relative folder, regular-file entries, [(name, reason)] of other entries) for every
    folder under root, sorted, no hidden ones. Folders that cannot be listed go to `skipped`.

    A symbolic link (to a folder or a file) is followed only when its target lies inside
    the tree (`os.path.realpath` of both): a link to `/` or to another disk is an entry of
    `others` ("symbolic link to /: outside the scanned folder"), so the scan never wanders
    into /proc or a whole file system. Each real folder is listed once: links to folders
    are taken after the tree itself, and one whose folder was listed already (a link to an
    ancestor, or a second name for a folder) is an entry of `others` too, so no link makes
    a loop and no file is listed twice through a folder link. With `file_links_outside`, a
    link to a file is followed wherever the file is. Names that are not valid
    UTF-8 cannot be written in the TSV tables: such entries (a folder with all it holds)
    are in `others`, their names escaped (`printable_path`).
    """
    real_root = os.path.realpath(root)
    seen: dict[str, str] = {}  # real folder -> the relative folder it was listed as
    links: list[tuple[str, str, str]] = []  # folder links inside the tree: (reldir, name, target)
    stack = [""]
    while stack or links:
        if not stack:  # the tree is done: the folder links not listed yet, in order
            reldir, name, target = links.pop(0)
            if target in seen:
                where = seen[target] or "the scanned folder itself"
                yield reldir, [], [(name, f"symbolic link to a folder scanned already ({where})")]
            else:
                stack.append(os.path.join(reldir, name) if reldir else name)
            continue
        reldir = stack.pop()
        folder = root / reldir if reldir else root
        real = os.path.realpath(folder)
        if real in seen:  # a second name for a folder (e.g. a bind mount): listed once
            if skipped is not None:
                skipped.append((reldir, f"a folder scanned already ({seen[real] or 'the scanned folder itself'})"))
            continue
        seen[real] = reldir
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            log.warning("%s: cannot list folder (%s); skipped", folder, err.strerror)
            if skipped is not None and reldir:
                skipped.append((reldir, f"folder cannot be listed ({err.strerror})"))
            continue
        files = []
        others = []
        subdirs: list[str] = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name == "__pycache__":
                continue
            if not _is_utf8(name):
                others.append((printable_path(name), "name is not valid UTF-8 (shown with \\x escapes): "
                                                     "rename it to have it scanned"))
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not os.path.exists(target):
                        others.append((name, "a broken symbolic link"))
                        continue
                    if not _is_inside(target, real_root) and not (file_links_outside and os.path.isfile(target)):
                        others.append((name, f"symbolic link to {target}: outside the scanned folder"))
                        continue
                    if os.path.isdir(target):
                        links.append((reldir, name, target))
                        continue
                if entry.is_dir():
                    subdirs.append(os.path.join(reldir, name) if reldir else name)
                elif entry.is_file():
                    files.append(entry)
                else:  # FIFO, socket, device: reading one would block or make no sense
                    others.append((name, "not a regular file"))
            except OSError as err:
                others.append((name, f"cannot be read ({err.strerror})"))
        yield reldir, files, others
        stack.extend(reversed(subdirs))


def _is_inside(path: str, folder: str) -> bool:
    """True when the absolute `path` is `folder` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os gives them as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _looks_like_fimtrack(entry: os.DirEntry) -> bool:
    """True for a FIMTrack csv, and for an empty file (which then fails loudly when read)."""
    try:
        with open(entry.path, "rb") as f:
            head = f.read(256)
    except OSError:
        return True
    first = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf")
    return not head.strip() or b"larva(" in first[:64]


def path_metadata(path: str | Path, fmt: str) -> dict[str, str]:
    """tracker, genotype, effector, protocol, date_time from a track file's path ("" if unknown).

    trx.mat: `<tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat`; other
    formats: the `@`-separated file name `date_time@genotype@effector@tracker@protocol@...`.
    """
    if fmt == "trx":
        from maggotflow.formats.trx import trx_metadata_from_path

        meta = trx_metadata_from_path(path)
    else:
        name = Path(path).name
        meta = choreography_metadata(name) if "@" in name else {}
        if not meta and DATE_TIME.fullmatch(Path(name).stem):  # FIMTrack '<date_time>.csv'
            meta = {"date_time": Path(name).stem}
    return {k: str(meta.get(k, "")) for k in METADATA_COLUMNS}


def _pair_by_dependencies(folder: Path, label_names: list[str], rows: list[dict[str, str]]) -> None:
    """Pair rows (track files of `folder`) with .label files whose dependencies name them."""
    wanted = {Path(r["path"]).name: r for r in rows}
    found: dict[str, list[str]] = {}
    for name in label_names:
        for filename in _label_dependencies(folder / name):
            if filename in wanted:
                found.setdefault(filename, []).append(name)
    for filename, names in found.items():
        if len(names) > 1:
            log.warning("%s: %d label files name %s (%s); using %s", folder, len(names), filename,
                        ", ".join(names), names[0])
        wanted[filename]["label"] = str(folder / names[0])


def _label_dependencies(path: Path) -> list[str]:
    """Track file names in a .label file's `dependencies` (read from its head; [] if unreadable)."""
    from maggotflow.formats.label import header_value

    value = header_value(path, "dependencies")
    deps = value if isinstance(value, list) else [value]
    return [str(d["filename"]) for d in deps if isinstance(d, dict) and d.get("filename")]


# --------------------------------------------------------------------------------------
# Reading and writing


def _write_if_changed(path: str | Path, text: str) -> bool:
    """Write `text` to `path` (atomic) unless it holds exactly that already; True if written.

    Leaving an unchanged file alone keeps its modification time, so rescanning an
    unchanged tree triggers nothing downstream.
    """
    path = Path(path)
    try:
        if path.read_bytes() == text.encode("utf-8"):  # bytes: a CR inside a cell counts
            return False
    except OSError:
        pass  # absent or unreadable: written below (a folder in the way fails there, one line)
    write_text_atomic(path, text)
    return True


def write_manifest(manifest: Manifest, path: str | Path) -> bool:
    """Write `manifest` to `path` (atomic) unless it holds exactly that already.

    Returns True when the file was (re)written (see `_write_if_changed`).
    """
    return _write_if_changed(path, manifest.to_tsv())


def skipped_file(manifest_file: str | Path) -> str:
    """Where the scan of a manifest lists its skipped entries: `skipped.tsv` beside it."""
    return str(Path(manifest_file).with_name("skipped.tsv"))


SKIPPED_COLUMNS = ("relpath", "reason")


def write_skipped(skipped: Sequence[tuple[str, str]], path: str | Path) -> bool:
    """Write the skipped entries of a scan as a TSV table with columns relpath, reason
    (`maggotflow.tsv`: any file name stays one cell), atomically, if changed."""
    return _write_if_changed(path, tsv.format_rows(SKIPPED_COLUMNS, skipped))


def read_skipped(path: str | Path) -> list[tuple[str, str]]:
    """The (relpath, reason) rows of a `write_skipped` file; [] when it is absent or unreadable."""
    try:
        rows = tsv.read_rows(path)
    except (OSError, UnicodeDecodeError):
        return []
    return [(row.get("relpath", ""), row.get("reason", "")) for row in rows]


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Read a manifest TSV: one written by `write_manifest`, or a user's own.

    A user manifest needs only a `path` column; relative paths are taken relative to `root`
    (the data folder; default: the manifest's folder). Missing columns are derived: `relpath`
    (relative to `root`, or to the files' common folder; a file outside `root` gets its
    absolute path without the leading '/'), `id`, `format` (from the extension), `size`,
    `label` (same-stem pairing only) and the metadata. A given `relpath` names where the
    file's outputs go (`mirrored_label_path`), so it must be relative and stay inside the
    data folder: an absolute one, or one that climbs out with '..', is refused. Cells are
    read by `maggotflow.tsv` (quoted cells keep tabs and line breaks); the cells of `path`,
    `relpath` and `label` are taken exactly, unless `path` does not exist as written and
    the cells have surrounding spaces (a hand-written table), which are then removed. Bad
    manifests raise TrackDataError naming the manifest and the row (the header is row 1).
    """
    path = Path(path)
    try:
        records = tsv.parse_lines(tsv.read_text(path))
    except FileNotFoundError:
        raise TrackDataError(path, "manifest not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TrackDataError(path, f"manifest cannot be read ({err})") from None
    if not records or "path" not in records[0]:
        raise TrackDataError(path, "manifest has no 'path' column (tab-separated, one header line)")
    columns = records[0]
    base = Path(os.path.abspath(root if root is not None else path.parent))
    rows, numbers = [], []
    for number, record in enumerate(records[1:], start=2):
        row = {c: (record[k] if k < len(record) else "") for k, c in enumerate(columns)}
        _strip_cells(row, base)
        if not row.get("path"):
            if any(row.values()):
                raise TrackDataError(path, f"row {number}: empty 'path'")
            continue
        track = Path(row["path"])
        track = track if track.is_absolute() else base / track
        row["path"] = os.path.normpath(track)
        rows.append(row)
        numbers.append(number)
    if not rows:
        raise TrackDataError(path, "manifest lists no track file")
    _complete(rows, path, base if root is not None else None, numbers)
    try:
        return Manifest(rows, base)
    except ValueError as err:
        raise TrackDataError(path, str(err)) from None


_PATH_CELLS = ("path", "relpath", "label")


def _strip_cells(row: dict[str, str], base: Path) -> None:
    """Strip surrounding whitespace from a row's cells, in place; file-name cells only when
    the file does not exist as written (a legal name may begin or end with a space)."""
    padded = False
    for key, value in row.items():
        stripped = value.strip()
        if stripped != value:
            if key in _PATH_CELLS:
                padded = True
            else:
                row[key] = stripped
    if padded and not (row["path"] and os.path.lexists(base / row["path"])):
        for key in _PATH_CELLS:
            if key in row:
                row[key] = row[key].strip()


def _complete(rows: list[dict[str, str]], manifest_path: Path, root: Path | None,
              numbers: Sequence[int] | None = None) -> None:
    """Derive the missing columns of a user manifest's rows, in place (see `read_manifest`);
    `numbers`: each row's row number in the file, for messages (default 2, 3, ...)."""
    numbers = list(numbers) if numbers is not None else list(range(2, len(rows) + 2))
    for number, r in zip(numbers, rows):
        if r.get("relpath"):  # the user's: where the outputs go, so inside the data folder
            problem = relpath_problem(r["relpath"])
            if problem:
                raise TrackDataError(manifest_path, f"row {number}: {problem}")
            r["relpath"] = os.path.normpath(r["relpath"])
    if any(not r.get("relpath") for r in rows):
        anchor = root
        if anchor is None:
            parents = [os.path.dirname(r["path"]) for r in rows]
            anchor = Path(os.path.commonpath(parents)) if parents else Path("/")
        for r in rows:
            if not r.get("relpath"):
                r["relpath"] = os.path.relpath(r["path"], anchor)
                if r["relpath"] == ".." or r["relpath"].startswith("../"):
                    # Outside root: unique and safe (`path` is absolute and normalised: no '..').
                    r["relpath"] = r["path"].lstrip("/")
    missing_ids = [r for r in rows if not r.get("id")]
    for r, ident in zip(missing_ids, unique_ids([r["relpath"] for r in missing_ids])):
        r["id"] = ident
    for number, r in zip(numbers, rows):
        if safe_name(r["id"]) != r["id"] or r["id"].startswith((".", "-")):
            raise TrackDataError(manifest_path, f"row {number}: id {r['id']!r} may only use A-Z a-z 0-9 _ . - "
                                                f"and not start with '.' or '-'")
        suffix = Path(r["path"]).suffix.lower()
        if not r.get("format"):
            if suffix not in _FORMAT_BY_SUFFIX:
                raise TrackDataError(manifest_path, f"row {number}: {printable_path(r['path'])} is not a .spine, "
                                                    f".mat or .csv track file")
            r["format"] = _FORMAT_BY_SUFFIX[suffix]
        if not r.get("size"):
            try:
                r["size"] = str(os.stat(r["path"]).st_size)
            except OSError:
                r["size"] = "0"  # missing file: its own job fails with a clear message
        if "label" not in r:
            sibling = Path(r["path"]).with_suffix(".label")
            r["label"] = str(sibling) if sibling.is_file() else ""
        elif r["label"] and not os.path.isabs(r["label"]):
            r["label"] = os.path.normpath(Path(r["path"]).parent / r["label"])
        if any(not r.get(k) for k in METADATA_COLUMNS):
            meta = path_metadata(r["path"], r["format"])
            for k in METADATA_COLUMNS:
                r[k] = r.get(k) or meta[k]


def load_manifest(track_dir: str | Path | None, manifest: str | Path | None, out: str | Path,
                  patterns: Sequence[str] = DEFAULT_PATTERNS, scan: bool = True, record: bool = True) -> Manifest:
    """The manifest of a folder (scanned) or of a user's TSV, recorded at `out`.

    `manifest` given: read it (relative paths taken from `track_dir`). Else, with `scan`, the
    folder is scanned; without it (a job process, or no rescan wanted), `out` is read as an
    earlier scan recorded it. With `record`, a scan's or a user TSV's result is written to
    `out` (if changed), and a scan's skipped entries to `skipped_file(out)`. Nothing is written
    before the inputs are known to be good: a run that stops on a missing or empty folder
    leaves no manifest behind for a later run to trust. TrackDataError (one line) otherwise.
    """
    if manifest:
        found = read_manifest(manifest, root=track_dir)
    elif not track_dir:
        raise TrackDataError(None, "no input: set a track_dir or a manifest (see config/README.md)")
    elif scan or not Path(out).is_file():
        found = build_manifest(track_dir, patterns)
        if not len(found):
            first, why = found.skipped[0] if found.skipped else ("", "")
            entries = "other entry" if len(found.skipped) == 1 else "other entries"
            skipped = f" ({len(found.skipped)} {entries} skipped, e.g. {printable_path(first)}: {why})" \
                if found.skipped else ""
            raise TrackDataError(track_dir, f"no track file matching {', '.join(patterns)}{skipped}")
    else:
        return read_manifest(out)
    if record:
        if not manifest:
            write_skipped(found.skipped, skipped_file(out))
        write_manifest(found, out)
    return found
