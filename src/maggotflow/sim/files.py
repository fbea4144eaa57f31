"""Simulated experiments on disk: formats, file layout, metadata, the labelled files.

`simulate(outdir, n_files, seed)` writes file i with `formats[i % len(formats)]`, content
drawn from `np.random.default_rng([seed, i])` (independent of `n_files`):

- spine:    `OUTDIR/<tracker>/<date_time>@<genotype>@<effector>@<tracker>@<protocol>@100.spine`
            (+ `.outline`) and `<same stem>.label`;
- trx:      `OUTDIR/<tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat` (behaviour
            flags inside) and `trx.label` next to it;
- fimtrack: `OUTDIR/fimtrack/<date_time>/<date_time>.csv` (30 fps, 100 um per pixel) and
            `<date_time>.label`.

The tracker name alternates between t5 and t15 with the file index.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from maggotflow.sim.config import SimulationConfig
from maggotflow.sim.experiment import simulate_run
from maggotflow.sim.readme import README_NAME, is_simulator_readme, readme_text
from maggotflow.tracks import METADATA_KEYS, Run

log = logging.getLogger(__name__)

GENOTYPES = ("FCF_attP2", "GMR_SS01816", "GMR_72F11_AE_01", "attP2")
EFFECTORS = ("UAS_TNT_2_0003", "UAS_CsChrimson_Uas", "UAS_Shi_ts1_3_0001")
PROTOCOLS = ("r_LED100_30s2x15s30s#n#n#n", "p_8_45s1x30s0s#p_8_105s10x2s10s#n#n")
TRACKERS = ("t5", "t15")


# --------------------------------------------------------------------------------------
# Formats: where each one's track file goes and how it is written


def _spine_path(outdir: Path, m: dict[str, str]) -> Path:
    stem = "@".join([*(m[key] for key in METADATA_KEYS), "100"])  # the Choreography name
    return outdir / m["tracker"] / f"{stem}.spine"


def _trx_path(outdir: Path, m: dict[str, str]) -> Path:
    return outdir / m["tracker"] / f"{m['genotype']}@{m['effector']}" / m["protocol"] / m["date_time"] / "trx.mat"


def _fimtrack_path(outdir: Path, m: dict[str, str]) -> Path:
    return outdir / "fimtrack" / m["date_time"] / f"{m['date_time']}.csv"


def _write_spine(run: Run, path: Path, config: SimulationConfig) -> None:
    from maggotflow.formats.spine import write_spine

    write_spine(run, path, spine_order="head_first", write_outline=True)


def _write_trx(run: Run, path: Path, config: SimulationConfig) -> None:
    """Flags inside, for every name of the label set."""
    from maggotflow.formats.trx import write_trx

    write_trx(run, path, label_names=list(config.label_names))


def _write_fimtrack(run: Run, path: Path, config: SimulationConfig) -> None:
    from maggotflow.formats.fimtrack import write_fimtrack

    write_fimtrack(run, path, framerate=config.fimtrack_frame_rate_hz, pixelsize_um=config.fimtrack_pixelsize_um)


@dataclass(frozen=True)
class _Layout:
    """One simulated format: its track file's path under the output folder, and its writer."""

    path: Callable[[Path, dict[str, str]], Path]
    write: Callable[[Run, Path, SimulationConfig], None]


_LAYOUTS = {
    "spine": _Layout(_spine_path, _write_spine),
    "trx": _Layout(_trx_path, _write_trx),
    "fimtrack": _Layout(_fimtrack_path, _write_fimtrack),
}
SIMULATED_FORMATS = tuple(_LAYOUTS)


def _layout(fmt: str) -> _Layout:
    """The layout of format `fmt`; a ValueError naming the simulated formats if there is none."""
    if fmt not in _LAYOUTS:
        raise ValueError(f"unknown track format {fmt!r}; expected one of {', '.join(SIMULATED_FORMATS)}")
    return _LAYOUTS[fmt]


# --------------------------------------------------------------------------------------
# Files


def file_metadata(rng: np.random.Generator, index: int) -> dict[str, str]:
    """Metadata of simulated file `index`: a distinct date_time (one day per index, time of
    day from `rng`), tracker alternating t5/t15, genotype, effector and protocol."""
    start = _dt.datetime(2021, 1, 4) + _dt.timedelta(days=int(index), seconds=int(rng.integers(8 * 3600, 19 * 3600)))
    date_time = start.strftime("%Y%m%d_%H%M%S")
    return {
        "id": date_time,
        "tracker": TRACKERS[index % len(TRACKERS)],
        "genotype": str(rng.choice(GENOTYPES)),
        "effector": str(rng.choice(EFFECTORS)),
        "protocol": str(rng.choice(PROTOCOLS)),
        "date_time": date_time,
    }


def track_file_path(outdir: str | Path, fmt: str, metadata: dict[str, str]) -> Path:
    """Where a simulated track file of format `fmt` goes under `outdir` (see module doc)."""
    return _layout(fmt).path(Path(outdir), metadata)


def label_file_path(track_path: str | Path) -> Path:
    """The ground-truth `.label` next to a simulated track file (`trx.mat` -> `trx.label`)."""
    return Path(track_path).with_suffix(".label")


def file_run(index: int, seed: int = 0, fmt: str = "spine", config: SimulationConfig | None = None) -> Run:
    """The labelled in-memory `Run` of simulated file `index` in format `fmt` (not written).

    Depends only on (seed, index, fmt, config): drawn from `np.random.default_rng([seed, index])`.
    FIMTrack runs have exact 30 fps times (`config.fimtrack_frame_rate_hz`), larva ids 0, 1, ...
    and no outline; their metadata is only what the file name carries (id, date_time).
    """
    config = config or SimulationConfig()
    _layout(fmt)  # an unknown format is refused before anything is drawn
    rng = np.random.default_rng([seed, index])
    meta = file_metadata(rng, index)
    if fmt == "fimtrack":
        # FIMTrack writes frames, not times, and has no outline in its csv.
        meta = {"id": meta["id"], "date_time": meta["date_time"]}
        run = simulate_run(
            rng, config, meta, frame_rate_hz=config.fimtrack_frame_rate_hz,
            exact_times=True, outline=False, consecutive_ids=True,
        )
    else:
        run = simulate_run(rng, config, meta)
    run.format = fmt
    return run


def simulate_file(
    outdir: str | Path, index: int, seed: int = 0, fmt: str = "spine", config: SimulationConfig | None = None
) -> Path:
    """Simulate and write file `index` (format `fmt`) and its `.label`; return the track file.

    The content depends only on (seed, index, fmt, config); see `file_run`.
    """
    config = config or SimulationConfig()
    from maggotflow.formats import file_sha1
    from maggotflow.formats.label import label_file_for_run, write_label_file

    run = file_run(index, seed, fmt, config)
    meta = run.metadata
    names = list(config.label_names)
    path = track_file_path(outdir, fmt, meta)
    _layout(fmt).write(run, path, config)
    # The label file depends on the track file's exact bytes (LarvaTagger checks the sha1).
    run.metadata["filename"] = path.name
    run.source, run.format, run.sha1 = path, fmt, file_sha1(path)
    write_label_file(label_file_path(path), label_file_for_run(run, names=names))
    return path


def simulate(
    outdir: str | Path,
    n_files: int,
    seed: int = 0,
    formats: Sequence[str] = SIMULATED_FORMATS,
    config: SimulationConfig | None = None,
) -> list[Path]:
    """Write `n_files` simulated experiments with ground-truth labels under `outdir`.

    File i uses `formats[i % len(formats)]` and depends only on (seed, i): the first files of
    a larger simulation are identical to those of a smaller one. Existing files with the same
    names are replaced (atomically) only in a folder of an earlier simulation (its
    `README.txt` is the simulator's); any other non-empty folder is the user's and raises
    OutputExistsError before anything is written. Also writes
    `outdir/README.txt`.
    Returns the track files written (.spine, trx.mat, .csv), in file-index order.
    """
    config = config or SimulationConfig()
    formats = tuple(formats)
    if not formats:
        raise ValueError("no track format to simulate")
    for fmt in formats:  # every format is checked before anything is written
        _layout(fmt)
    if n_files < 0:
        raise ValueError(f"n_files must be >= 0, got {n_files}")
    outdir = Path(outdir)
    from maggotflow.atomic import OutputExistsError, refuse_foreign, write_text_atomic

    readme = outdir / README_NAME
    refuse_foreign(readme, is_simulator_readme)
    if not readme.exists() and outdir.is_dir() and any(outdir.iterdir()):
        # Not a folder of ours: its files (same names as ours, perhaps) are the user's.
        raise OutputExistsError(outdir, "is not empty and holds no earlier maggotflow simulation (README.txt); "
                                        "nothing is written there: choose an empty folder")
    paths = [simulate_file(outdir, i, seed, formats[i % len(formats)], config) for i in range(n_files)]

    write_text_atomic(readme, readme_text(config, seed, n_files))
    log.info("wrote %d simulated track files (+ .label) to %s", len(paths), outdir)
    return paths
