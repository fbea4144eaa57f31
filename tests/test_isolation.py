"""Per-file isolation: simulate -> write each format -> read -> isolate -> read back."""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from maggotflow.cli import main as cli
from maggotflow.formats import ReadOptions, file_sha1, read_run
from maggotflow.isolation import isolate, isolated_label_names, read_isolated, split_labelled
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


def test_split_labelled_by_the_labels_an_intermediate_carries(simulated, tmp_path, caplog):
    paths = {name: tmp_path / f"{name}.h5" for name in ("spine_labelled", "spine_bare", "trx_flags", "csv_bare")}
    isolate(simulated[".spine"], paths["spine_labelled"], label_file_path(simulated[".spine"]))
    isolate(simulated[".spine"], paths["spine_bare"])
    isolate(simulated[".mat"], paths["trx_flags"])  # no .label file: its behaviour flags label it
    isolate(simulated[".csv"], paths["csv_bare"], options=FIM)
    labelled, unlabelled = split_labelled([str(p) for p in paths.values()])
    assert labelled == [paths["spine_labelled"], paths["trx_flags"]]
    assert unlabelled == [paths["spine_bare"], paths["csv_bare"]]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m.split(":")[0] for m in warned] == [str(paths["spine_bare"]), str(paths["csv_bare"])]
    assert all("no behaviour labels" in m for m in warned)


def test_label_file_for_another_track_file_is_refused(simulated, tmp_path):
    other = tmp_path / "other.h5"
    with pytest.raises(TrackDataError, match="sha1"):
        isolate(simulated[".spine"], other, label_file_path(simulated[".csv"]), FIM)
    assert not other.exists()
    assert not list(tmp_path.glob(".*part"))


SPINE_TEXT = b"".join(b"20200101_000000 1 %.1f 1 2 3 4\n" % (0.1 * i) for i in range(5))
SPINE = "20200101_000000@g@e@t15@p@1.spine"


@pytest.mark.parametrize(
    "name,content,problem",
    [
        (SPINE, b"", "empty"),
        (SPINE, b"\x00\x01\x02garbage\xff" * 50, "not a Choreography"),
        (SPINE, b"20200101_000000 1 0.0 1 2 3\n", "coordinate"),
        (SPINE, gzip.compress(SPINE_TEXT, mtime=0), f"is gzip-compressed; decompress it first (mv {SPINE} {SPINE}.gz"),
        (SPINE + ".gz", gzip.compress(SPINE_TEXT, mtime=0), f"is gzip-compressed; decompress it first (gunzip {SPINE}.gz)"),
        ("20200101_000000.csv.gz", gzip.compress(b",larva(0)\nhead_x(0),1\n", mtime=0), "gunzip 20200101_000000.csv.gz"),
        ("trx.mat.gz", gzip.compress(b"\x89HDF\r\n\x1a\n" + bytes(600), mtime=0), "is gzip-compressed"),
        ("trx.mat", gzip.compress(b"\x89HDF\r\n\x1a\n" + bytes(600), mtime=0), "is gzip-compressed"),
        (SPINE + ".gz", SPINE_TEXT, "is named .gz but is not gzip-compressed"),
    ],
    ids=["empty", "binary", "coordinate", "gzip-as-spine", "spine.gz", "csv.gz", "mat.gz", "gzip-as-mat", "fake-gz"],
)
def test_broken_files_fail_cleanly_without_output(tmp_path, name, content, problem):
    bad = tmp_path / "dir with spaces é" / name
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
    assert cli(["isolate", str(src), str(tmp_path / "o.h5"), "--framerate", "30", "--pixelsize-um", "100"]) == 0
    assert sha(src) == before
    assert read_isolated(tmp_path / "o.h5").format == "fimtrack"


def test_cli_pixelsize_um_as_in_the_config_and_the_earlier_spelling_still_works(simulated, tmp_path, capsys):
    """`--pixelsize-um` is `read.pixelsize_um` and `ReadOptions.pixelsize_um`; `--pixelsize`,
    its earlier spelling, still works for existing scripts but is not shown in --help."""
    for option in ("--pixelsize-um", "--pixelsize"):
        out = tmp_path / f"{option}.h5"
        assert cli(["isolate", str(simulated[".csv"]), str(out), "--framerate", "30", option, "100"]) == 0
        assert read_isolated(out).read_options["pixelsize_um"] == 100.0
    with pytest.raises(SystemExit):
        cli(["isolate", "--help"])
    shown = capsys.readouterr().out
    assert "--pixelsize-um" in shown and "--pixelsize " not in shown


def test_read_isolated_rejects_foreign_file(tmp_path):
    foreign = tmp_path / "f.h5"
    foreign.write_bytes(b"hello")
    with pytest.raises(TrackDataError, match="intermediate"):
        read_isolated(foreign)


def test_every_reader_of_an_intermediate_refuses_a_foreign_hdf5_alike(simulated, tmp_path):
    """One reader (`isolation.Intermediate`): the dataset and prediction name a foreign or
    outdated HDF5 file in the same words as `read_isolated`."""
    from maggotflow.dataset import build_dataset
    from maggotflow.readers import read_input

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("tracks", data=np.zeros(3))
    outdated = tmp_path / "outdated.h5"
    isolate(simulated[".spine"], outdated, label_file_path(simulated[".spine"]))
    with h5py.File(outdated, "r+") as f:
        f.attrs["format_version"] = 0
    for path, found in ((foreign, "no format recorded"), (outdated, "found format 0")):
        expected = (f"{path}: is not a maggotflow intermediate of format 1 ({found}; "
                    "make it with `maggotflow isolate`)")
        readers = (read_isolated, read_input, lambda p: split_labelled([p]),
                   lambda p: build_dataset([p], tmp_path / "d.h5"))
        for read in readers:
            with pytest.raises(TrackDataError) as err:
                read(path)
            assert str(err.value) == expected


FIFO_CHECKS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from maggotflow.formats import ReadOptions
    from maggotflow.formats.fimtrack import read_fimtrack
    from maggotflow.formats.spine import read_spine
    from maggotflow.formats.trx import read_trx
    from maggotflow.isolation import isolate, read_isolated
    from maggotflow.tracks import TrackDataError

    d = Path(sys.argv[1])
    calls = [
        lambda: isolate(d / "pipe.spine", d / "out.h5"),
        lambda: read_spine(d / "pipe.spine"),
        lambda: isolate(d / "real.spine", d / "out.h5"),  # its sibling real.outline is a FIFO
        lambda: read_trx(d / "trx.mat"),
        lambda: isolate(d / "trx.mat", d / "out.h5"),
        lambda: read_fimtrack(d / "pipe.csv"),
        lambda: read_isolated(d / "pipe.h5"),
        lambda: isolate(d / "real2.spine", d / "out.h5", d / "pipe.label"),  # labels from a FIFO
        lambda: isolate("/dev/null", d / "out.h5"),
    ]
    for call in calls:
        try:
            call()
            print("NO ERROR")
        except TrackDataError as err:
            print(str(err).replace("\\n", "<newline>"))
    """
)


def test_fifo_and_devices_refused_at_once(tmp_path):
    """A FIFO named like a track file used to block forever: it must fail at once, in one line.

    Run in a subprocess with a timeout so that a regression fails instead of hanging."""
    for name in ("pipe.spine", "real.outline", "trx.mat", "pipe.csv", "pipe.h5", "pipe.label"):
        os.mkfifo(tmp_path / name)
    (tmp_path / "real.spine").write_bytes(SPINE_TEXT)
    (tmp_path / "real2.spine").write_bytes(SPINE_TEXT)
    try:
        done = subprocess.run(
            [sys.executable, "-c", FIFO_CHECKS, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO blocked instead of failing at once")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = ["pipe.spine", "pipe.spine", "real.outline", "trx.mat", "trx.mat", "pipe.csv", "pipe.h5",
                "pipe.label"]
    assert len(lines) == len(expected) + 1, done.stdout
    for line, name in zip(lines, expected):
        assert line == f"{tmp_path / name}: is a FIFO (named pipe), not a regular file"
    assert lines[-1] == "/dev/null: is a character device, not a regular file"
    assert not (tmp_path / "out.h5").exists() and not list(tmp_path.glob(".*part"))


def test_labels_of_larvae_the_reader_left_out_are_not_an_error(simulated, tmp_path, caplog):
    """A larva left out by the reader (one frame; mostly impossible frames) keeps its labels
    in the .label file: the file still isolates, the other larvae keep theirs."""
    from maggotflow.formats.label import label_file_for_run, read_label_file, write_label_file

    source = simulated[".spine"]
    lines = source.read_text().splitlines()
    first_id = lines[0].split()[1]
    rows = [i for i, line in enumerate(lines) if line.split()[1] == first_id]
    for i in rows[: len(rows) // 2]:  # half of the first larva's frames: 1e300
        fields = lines[i].split()
        fields[5] = "1e300"
        lines[i] = " ".join(fields)
    date_time = lines[0].split()[0]
    t_last = float(lines[rows[-1]].split()[2])
    lines.append(f"{date_time} 999 {t_last:.3f} " + " ".join(["1.0"] * (len(lines[0].split()) - 3)))  # one frame
    track = tmp_path / source.name
    track.write_text("\n".join(lines) + "\n")
    truth = read_label_file(label_file_path(source))
    truth.tracks["999"] = (np.array([round(t_last, 3)]), [(truth.names[0],)])
    run = read_run(track, ReadOptions(spine_order="head_first"))
    truth.dependencies = label_file_for_run(run).dependencies  # made for the edited file
    labels = tmp_path / (track.stem + ".label")
    write_label_file(labels, truth)
    assert set(run.left_out) == {first_id, "999"}
    out = tmp_path / "iso.h5"
    with caplog.at_level("WARNING"):
        isolate(track, out, labels)
    kept = read_isolated(out)
    assert first_id not in [tr.id for tr in kept.tracks] and kept.tracks
    assert all(tr.labels is not None for tr in kept.tracks)
    assert any(f"larva {first_id}:" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
