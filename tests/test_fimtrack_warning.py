"""The FIMTrack `pixel size unknown` warning: only when no pixel size was given."""

from __future__ import annotations

import logging

from maggotflow.formats import ReadOptions, read_run
from maggotflow.simulation import SimulationConfig, simulate

SIM = SimulationConfig(duration_s=5.0, larvae=(1, 2))


def fimtrack_file(tmp_path):
    simulate(tmp_path, 3, seed=2, config=SIM)
    return next(tmp_path.rglob("*.csv"))


def test_warning_only_without_a_pixel_size(tmp_path, caplog):
    path = fimtrack_file(tmp_path)
    with caplog.at_level(logging.WARNING):
        read_run(path, ReadOptions(pixelsize_um=SIM.fimtrack_pixelsize_um))
    assert not [r for r in caplog.records if "pixel size unknown" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        read_run(path, ReadOptions())
    assert [r for r in caplog.records if "pixel size unknown" in r.getMessage()]
