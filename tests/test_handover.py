"""Arrays handed over through shared memory come back equal, writable, and leave nothing behind."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from maggotflow import handover
from maggotflow.tracks import Run, Track


def leftovers(owner: str) -> list[str]:
    return [n for n in os.listdir(handover.SHARED_DIR) if n.startswith(f"maggotflow-handover-{owner}-")]


needs_shm = pytest.mark.skipif(not os.path.isdir(handover.SHARED_DIR), reason="no /dev/shm here")


def a_run() -> Run:
    big = np.arange(3 * 20000 * 2, dtype=np.float64).reshape(-1, 3, 2) / 7  # large: through shared memory
    tracks = [Track("1", np.arange(big.shape[0]) / 30.0, big),
              Track("2", np.arange(5) / 30.0, big[:5])]  # small: inside the pickle
    return Run({"id": "20200101_000000", "figures": [1.5, None]}, tracks, sha1="ab" * 20)


@needs_shm
def test_a_run_comes_back_equal_and_writable_and_its_file_is_gone():
    run, owner = a_run(), handover.new_owner()
    packed = handover.pack(run, owner)
    assert packed.path is not None and len(packed.data) < 10_000  # the arrays are not in the pickle
    assert leftovers(owner) == [os.path.basename(packed.path)]
    back = handover.unpack(packed)
    assert leftovers(owner) == []  # the name is removed once mapped
    assert back.metadata == run.metadata and back.sha1 == run.sha1
    for a, b in zip(back.tracks, run.tracks):
        assert a.id == b.id and np.array_equal(a.t, b.t) and np.array_equal(a.spine, b.spine)
        assert a.spine.dtype == b.spine.dtype and a.spine.shape == b.spine.shape
    back.tracks[0].spine[0, 0, 0] = -1.0  # copy-on-write: writable, the original untouched
    assert run.tracks[0].spine[0, 0, 0] == 0.0


@needs_shm
def test_a_view_that_is_not_contiguous_is_handed_over_as_it_reads():
    base = np.arange(40000, dtype=np.float32).reshape(200, 200)
    view = base[::2, 1::3]
    back = handover.unpack(handover.pack({"v": view}, handover.new_owner()))
    assert np.array_equal(back["v"], view) and back["v"].dtype == np.float32


def test_without_shared_memory_it_is_a_plain_pickle(monkeypatch, tmp_path):
    monkeypatch.setattr(handover, "SHARED_DIR", str(tmp_path / "missing"))
    run = a_run()
    packed = handover.pack(run, handover.new_owner())
    assert packed.path is None
    back = handover.unpack(packed)
    assert np.array_equal(back.tracks[0].spine, run.tracks[0].spine)
    assert pickle.loads(packed.data).tracks[1].id == "2"


def test_what_is_never_taken_and_what_dead_owners_left_is_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(handover, "SHARED_DIR", str(tmp_path))
    mine = handover.new_owner()
    handover.pack(a_run(), mine)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    (tmp_path / f"maggotflow-handover-{dead}.0000-x").write_bytes(b"left by a killed job")
    (tmp_path / f"maggotflow-handover-{os.getpid()}.1111-y").write_bytes(b"another run of this process")
    handover.remove_orphans()
    assert sorted(p.name.split("-")[2] for p in tmp_path.iterdir()) == sorted([mine, f"{os.getpid()}.1111"])
    handover.remove_owned(mine)
    assert [p.name for p in tmp_path.iterdir()] == [f"maggotflow-handover-{os.getpid()}.1111-y"]
