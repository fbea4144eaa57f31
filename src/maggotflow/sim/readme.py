"""The README.txt at the top of a simulated folder: its text, and how it is recognised.

Its first line, `SIMULATOR_MARK`, marks a folder as the simulator's: `simulate` replaces files
only in such a folder, and `maggotflow.report.is_simulated` (the report's warning, the domain
check) recognises simulated data by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maggotflow.sim.config import SimulationConfig

README_NAME = "README.txt"
SIMULATOR_MARK = "Simulated larva experiments (maggotflow simulate)"


def is_simulator_readme(path: str | Path) -> bool:
    """True when the file `path` exists and starts with `SIMULATOR_MARK`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(SIMULATOR_MARK)
    except OSError:
        return False


_README = SIMULATOR_MARK + "\n" + "=" * len(SIMULATOR_MARK) + """

Synthetic data written by `maggotflow simulate` (seed {seed}, {n_files} files): Drosophila
larvae crawling on a plate, with the true behaviour of every time step. Label set "{label_set}":
  {names}
Each file: {larvae_lo}-{larvae_hi} larvae, up to {duration:g} s each (some tracks start late or end
early), {rate_lo:g}-{rate_hi:g} fps (FIMTrack files {fim_rate:g} fps), {n_points} spine points.
The same seed and file index always give the same file.

Layout
------
- Choreography: <tracker>/<date_time>@<genotype>@<effector>@<tracker>@<protocol>@100.spine
  (+ .outline; points head first, mm, times in s) and <same stem>.label.
- Janelia:      <tracker>/<genotype>@<effector>/<protocol>/<date_time>/trx.mat
  (behaviour flags 1/0 inside) and trx.label next to it.
- FIMTrack:     fimtrack/<date_time>/<date_time>.csv and <date_time>.label.
  FIMTrack csv files carry no times and are in pixels: read them with
  framerate = {fim_rate:g} fps and pixelsize_um = {fim_px:g} (um per pixel): in the workflow's
  config read.framerate and read.pixelsize_um, on the command line --framerate and --pixelsize-um.

Ground truth
------------
Each .label file (LarvaTagger JSON) holds exactly one behaviour per time step of each larva,
at the track file's own time steps (frames the tracker dropped have no label); its
dependencies name the track file and its sha1. The trx.mat flags hold the same labels.
Point the workflow at this folder with `inputs.track_dir` (training) or
`evaluation.track_dir` (held-out files); see maggotflow's config/README.md.
"""



def readme_text(config: SimulationConfig, seed: int, n_files: int) -> str:
    """The README.txt of a folder of `n_files` files simulated with `config` and `seed`."""
    return _README.format(
        seed=seed, n_files=n_files, label_set=config.label_set, names=", ".join(config.label_names),
        fim_rate=config.fimtrack_frame_rate_hz, fim_px=config.fimtrack_pixelsize_um,
        larvae_lo=config.larvae[0], larvae_hi=config.larvae[1], duration=config.duration_s,
        rate_lo=config.frame_rate_hz[0], rate_hi=config.frame_rate_hz[1], n_points=config.n_spine_points,
    )
