"""Labelled larva simulator: synthetic experiments in every track format, with ground truth.

This is the project's demo data and test-fixture factory: taggers are trained and evaluated
on it, so the kinematics are meant to be realistic enough and the task not trivially
separable. Everything is in millimetres and seconds.

This module is the simulator's entry point: it gathers the public names of its parts, each
in a module of its own under `maggotflow.sim`:

- `sim.behaviour`: the behaviour names (`BEHAVIOURS_7`, `BEHAVIOURS_6`, `TO_6`) and the
  semi-Markov bout sequence (`behaviour_bouts`);
- `sim.config`: what to simulate (`SimulationConfig`) and the named regimes (`REGIMES`,
  `regime_config`): "A", the reference lab (the defaults); "B", small fast larvae and a
  coarse noisy tracker; "C", large slow larvae and a fine fast tracker;
- `sim.body`: a larva's body and gait, the posture signals each behaviour drives, the spine
  and outline built from them;
- `sim.tracker`: frame times (jittered, rounded to 1 ms) and the frames at which a larva is
  tracked (late entry, early exit, dropped frames, gaps);
- `sim.experiment`: one labelled larva (`simulate_larva`), one labelled experiment
  (`simulate_run`), in memory;
- `sim.files`: the files on disk (`simulate`, `simulate_file`, `file_run`, the layout of
  each of `SIMULATED_FORMATS`, `label_file_path`);
- `sim.readme`: the README.txt of a simulated folder, which marks it as the simulator's.

None of the tracker's effects depends on the behaviour: the label is recoverable from posture
dynamics only. `simulate(outdir, n_files, seed)` writes file i with `formats[i % len(formats)]`,
content drawn from `np.random.default_rng([seed, i])` (independent of `n_files`). Command line:
`maggotflow simulate` (`maggotflow.cli.simulate`).
"""

from __future__ import annotations

from maggotflow.sim.behaviour import (
    BACK,
    BEHAVIOURS_6,
    BEHAVIOURS_7,
    CAST,
    HUNCH,
    ROLL,
    RUN,
    SMALL,
    STOP,
    TO_6,
    behaviour_bouts,
)
from maggotflow.sim.config import (
    FIMTRACK_FRAME_RATE_HZ,
    FIMTRACK_PIXELSIZE_UM,
    LABEL_SETS,
    REGIMES,
    SimulationConfig,
    regime_config,
)
from maggotflow.sim.experiment import simulate_larva, simulate_run
from maggotflow.sim.files import (
    EFFECTORS,
    GENOTYPES,
    PROTOCOLS,
    SIMULATED_FORMATS,
    TRACKERS,
    file_metadata,
    file_run,
    label_file_path,
    simulate,
    simulate_file,
    track_file_path,
)
from maggotflow.sim.tracker import frame_times

__all__ = [
    "BACK", "BEHAVIOURS_6", "BEHAVIOURS_7", "CAST", "EFFECTORS", "FIMTRACK_FRAME_RATE_HZ", "FIMTRACK_PIXELSIZE_UM",
    "GENOTYPES", "HUNCH", "LABEL_SETS", "PROTOCOLS", "REGIMES", "ROLL", "RUN", "SIMULATED_FORMATS", "SMALL", "STOP",
    "TO_6", "TRACKERS", "SimulationConfig", "behaviour_bouts", "file_metadata", "file_run", "frame_times",
    "label_file_path", "regime_config", "simulate", "simulate_file", "simulate_larva", "simulate_run",
    "track_file_path",
]
