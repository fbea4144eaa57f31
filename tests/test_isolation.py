"""Per-file isolation: simulate -> write each format -> read -> isolate -> read back."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from maggotflow.cli import main as cli
from maggotflow.formats import ReadOptions, file_sha1, read_run
from maggotflow.isolation import isolate, isolated_label_names, read_isolated
from maggotflow.simulation import SimulationConfig, file_run, label_file_path, simulate
from maggotflow.tracks import TrackDataError

SMALL = SimulationConfig(duration_s=20, larvae=(3, 4))
FIM = ReadOptions(framerate=30.0, pixelsize_um=100.0)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    paths = simulate(out, 3, seed=11, config=SMALL)
    return {Path(p).suffix: Path(p) for p in paths}


def sha(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix,fmt", [(".spine", "spine"), (".mat", "trx"), (".csv", "fimtrack")])
def test_round_trip_preserves_tracks_and_labels(simulated, tmp_path, suffix, fmt):
    track_path = simulated[suffix]
    index = {".spine": 0, ".mat": 1, ".csv": 2}[suffix]
    truth = file_run(index, 11, fmt, SMALL)
    out = tmp_path / "iso.h5"
    isolate(track_path, out, label_file_path(track_path), FIM)
    run = read_isolated(out)
    assert run.format == fmt and run.sha1 == file_sha1(track_path)
    assert Path(run.source) == track_path
    by_id = {tr.id: tr for tr in truth.tracks}
    kept = [tr for tr in run.tracks]
    assert kept and len(kept) <= len(truth.tracks)
    for tr in kept:
        ref = by_id[tr.id]
        np.testing.assert_allclose(tr.t, ref.t, atol=1e-3)
        # Text formats keep 4 decimals (mm), FIMTrack pixels of 0.1 mm likewise in its csv.
        np.testing.assert_allclose(tr.spine, ref.spine, atol=2e-3)
        assert tr.labels == [tuple(step) for step in ref.labels]
    assert set(isolated_label_names(out)) <= set(SMALL.label_names)


def test_trx_flags_are_labels_without_label_file(simulated, tmp_path):
    out = tmp_path / "iso.h5"
    isolate(simulated[".mat"], out)
    run = read_isolated(out)
    with_file = tmp_path / "iso2.h5"
    isolate(simulated[".mat"], with_file, label_file_path(simulated[".mat"]))
    assert [tr.labels for tr in run.tracks] == [tr.labels for tr in read_isolated(with_file).tracks]


def test_identical_input_gives_identical_bytes(simulated, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        isolate(simulated[".spine"], out, label_file_path(simulated[".spine"]))
    assert sha(a) == sha(b)


def test_unlabelled_isolation(simulated, tmp_path):
    out = tmp_path / "u.h5"
    isolate(simulated[".spine"], out)
    assert isolated_label_names(out) == []
    assert all(tr.labels is None for tr in read_isolated(out).tracks)


def test_label_file_for_another_track_file_is_refused(simulated, tmp_path):
    other = tmp_path / "other.h5"
    with pytest.raises(TrackDataError, match="sha1"):
        isolate(simulated[".spine"], other, label_file_path(simulated[".csv"]), FIM)
    assert not other.exists()
    assert not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"", "empty"),
        (b"\x00\x01\x02garbage\xff" * 50, "not a Choreography"),
        (b"20200101_000000 1 0.0 1 2 3\n", "coordinate"),
    ],
)
def test_broken_files_fail_cleanly_without_output(tmp_path, content, problem):
    bad = tmp_path / "dir with spaces é" / "20200101_000000@g@e@t15@p@1.spine"
    bad.parent.mkdir()
    bad.write_bytes(content)
    out = tmp_path / "out.h5"
    with pytest.raises(TrackDataError) as err:
        isolate(bad, out)
    message = str(err.value)
    assert "\n" not in message and bad.name in message
    assert problem.lower() in message.lower()
    assert not out.exists() and not list(tmp_path.glob(".*part"))


def test_cli_reports_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "x.spine"
    bad.write_text("not a spine file\n")
    assert cli(["isolate", str(bad), str(tmp_path / "o.h5")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.spine" in err[0]


def test_cli_isolate_copies_nothing_back(simulated, tmp_path):
    src = tmp_path / "copy.csv"
    shutil.copy(simulated[".csv"], src)
    before = sha(src)
    assert cli(["isolate", str(src), str(tmp_path / "o.h5"), "--framerate", "30", "--pixelsize", "100"]) == 0
    assert sha(src) == before
    assert read_isolated(tmp_path / "o.h5").format == "fimtrack"


def test_read_isolated_rejects_foreign_file(tmp_path):
    foreign = tmp_path / "f.h5"
    foreign.write_bytes(b"hello")
    with pytest.raises(TrackDataError, match="intermediate"):
        read_isolated(foreign)
