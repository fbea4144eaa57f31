"""A user's files are sacred: no command replaces a file maggotflow did not write; outputs are readable.

Every command's output path is tried on a file of the user's (it must stay byte for byte
as it was, with a one-line error naming it) and on maggotflow's own earlier output (which
it may replace). Modes are checked under umask 022: 0644 files, 0755 folders.
"""

import os
import stat

import pytest

from maggotflow.cli import main as cli
from maggotflow.simulation import SimulationConfig, label_file_path, simulate

SMALL = SimulationConfig(duration_s=8, larvae=(2, 2))


@pytest.fixture(autouse=True)
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user-files") / "sim"
    old = os.umask(0o022)
    try:
        paths = simulate(folder, 1, seed=2, config=SMALL)  # one .spine file and its .label
    finally:
        os.umask(old)
    return paths[0]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def one_line_error(capsys, argv):
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_isolate_replaces_its_own_intermediate_only(sim, tmp_path, capsys):
    out = tmp_path / "x.h5"
    assert cli(["isolate", str(sim), str(out)]) == 0
    assert mode(out) == 0o644
    assert cli(["isolate", str(sim), str(out)]) == 0  # an earlier intermediate of ours: replaced
    user = tmp_path / "mine.h5"
    user.write_bytes(b"my own notes")
    line = one_line_error(capsys, ["isolate", str(sim), str(user)])
    assert line == f"maggotflow isolate: error: {user}: exists and was not written by maggotflow; it is never " \
                   "replaced: choose another output path"
    assert user.read_bytes() == b"my own notes"


def test_dataset_refuses_a_users_file(sim, tmp_path, capsys):
    iso = tmp_path / "x.h5"
    assert cli(["isolate", str(sim), str(iso), "--labels", str(label_file_path(sim))]) == 0
    user = tmp_path / "dataset.h5"
    user.write_text("a table of mine")
    line = one_line_error(capsys, ["dataset", str(user), str(iso)])
    assert str(user) in line and "not written by maggotflow" in line
    assert user.read_text() == "a table of mine"
    fresh = tmp_path / "fresh.h5"
    assert cli(["dataset", str(fresh), str(iso)]) == 0
    assert mode(fresh) == 0o644
    assert cli(["dataset", str(fresh), str(iso)]) == 0  # its own: replaced


def test_simulate_writes_into_empty_or_own_folders_only(tmp_path, capsys):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "trx.mat").write_bytes(b"a real experiment")
    line = one_line_error(capsys, ["simulate", str(folder), "--files", "1"])
    assert str(folder) in line and "choose an empty folder" in line
    assert sorted(p.name for p in folder.iterdir()) == ["trx.mat"]
    sim_dir = tmp_path / "sim"
    assert cli(["simulate", str(sim_dir), "--files", "1", "--seed", "3"]) == 0
    assert mode(sim_dir) == 0o755 and all(mode(p) == 0o644 for p in sim_dir.rglob("*") if p.is_file())
    assert cli(["simulate", str(sim_dir), "--files", "1", "--seed", "3"]) == 0  # its own folder


def test_evaluate_report_never_replaces_a_users_file(sim, tmp_path, capsys):
    truth = label_file_path(sim)
    out = tmp_path / "report"
    out.mkdir()
    (out / "per_label.csv").write_text("my spreadsheet")
    line = one_line_error(capsys, ["evaluate", "--predicted", str(truth), "--reference", str(truth),
                                   "--out", str(out)])
    assert str(out / "per_label.csv") in line and "not written by maggotflow" in line
    assert sorted(p.name for p in out.iterdir()) == ["per_label.csv"]  # nothing written
    assert (out / "per_label.csv").read_text() == "my spreadsheet"
    fresh = tmp_path / "fresh"
    argv = ["evaluate", "--predicted", str(truth), "--reference", str(truth), "--out", str(fresh)]
    assert cli(argv) == 0 and cli(argv) == 0  # a report of ours is replaced
    assert {mode(p) for p in fresh.iterdir()} == {0o644} and mode(fresh) == 0o755
