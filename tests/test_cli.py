"""`maggotflow` command line: the one mapping of errors to exit codes (maggotflow.cli.main).

Expected errors are one line `maggotflow <command>: error: <message>` on stderr, never a
traceback: bad input, a model folder or an output -> 1; a bad option value or setting -> 2.
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from maggotflow import cli
from maggotflow.atomic import OutputError, OutputExistsError
from maggotflow.cli import UsageError, main
from maggotflow.tracks import TrackDataError


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def failing_command(monkeypatch):
    """A `fail` command whose run_command raises the exception given to it (or returns 1)."""
    state: dict = {}

    def run_command(args):
        if state["error"] is None:
            return 1
        raise state["error"]

    module = types.ModuleType("maggotflow_test_fail")
    module.configure_parser = lambda parser: None
    module.run_command = run_command
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fail", (module.__name__, "raise an error (test)"))

    def run(error, *options):
        state["error"] = error
        return main([*options, "fail"])

    return run


@pytest.mark.parametrize(
    "error, code",
    [
        (TrackDataError("x.spine", "is empty"), 1),
        (OutputError("out.h5", "No space left on device"), 1),
        (OutputExistsError("out.h5", "exists and was not written by maggotflow"), 1),
        (FileExistsError("out.h5 exists"), 1),
        (UsageError("--layers must be comma-separated widths, got 'x'"), 2),
        (ValueError("batch_size must be >= 2"), 2),  # a settings dataclass's __post_init__
    ],
    ids=["input", "output", "output-exists", "file-exists", "usage", "settings"],
)
def test_expected_errors_are_one_line_with_their_exit_code(failing_command, capsys, error, code):
    assert failing_command(error) == code
    assert one_line(capsys) == f"maggotflow fail: error: {error}"


def test_a_model_folder_problem_exits_1(failing_command, capsys):
    from maggotflow.instance import InstanceError  # imports torch: only here

    error = InstanceError("models/x", "not a maggotflow model instance")
    assert failing_command(error) == 1
    assert one_line(capsys) == f"maggotflow fail: error: {error}"


def test_a_command_whose_inputs_partly_failed_returns_1_itself(failing_command, capsys):
    assert failing_command(None) == 1
    assert capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback(failing_command):
    with pytest.raises(RuntimeError, match="a bug"):
        failing_command(RuntimeError("a bug"))


def test_verbose_adds_the_traceback(failing_command, capsys):
    assert failing_command(TrackDataError("x.spine", "is empty"), "--verbose") == 1
    err = capsys.readouterr().err
    assert err.startswith("maggotflow fail: error: x.spine: is empty\n") and "Traceback" in err


# ---------------------------------------------------------------------------- real commands
def test_isolate_missing_or_garbage_file_exits_1(tmp_path, capsys):
    missing = tmp_path / "missing.spine"
    assert main(["isolate", str(missing), str(tmp_path / "o.h5")]) == 1
    assert one_line(capsys).startswith(f"maggotflow isolate: error: {missing}: ")
    garbage = tmp_path / "garbage.spine"
    garbage.write_bytes(b"\x00\x01 not a track file\n")
    assert main(["isolate", str(garbage), str(tmp_path / "o.h5")]) == 1
    assert str(garbage) in one_line(capsys)
    assert not (tmp_path / "o.h5").exists()


def test_isolate_bad_option_value_exits_2(tmp_path, capsys):
    track = tmp_path / "x.spine"
    track.write_text("20200101_000000 1 0.0 1 1 2 2 3 3\n")
    assert main(["isolate", str(track), str(tmp_path / "o.h5"), "--framerate", "0"]) == 2
    assert one_line(capsys) == "maggotflow isolate: error: framerate must be > 0 Hz, got 0.0"
    assert not (tmp_path / "o.h5").exists()


def test_help_and_light_commands_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from maggotflow.cli import main\n"
        f"assert main(['isolate', {str(tmp_path / 'missing.spine')!r}, {str(tmp_path / 'o.h5')!r}]) == 1\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_summarize_lists_every_file_it_wrote(tmp_path, capsys):
    import numpy as np

    from maggotflow.formats.label import LabelFile, write_label_file

    names = ["run", "cast"]
    for genotype in ("GEN_A", "GEN_B"):
        steps = [("run",)] * 6 + [("cast",)] * 4
        write_label_file(tmp_path / "labels" / f"20200101_120000@{genotype}@UAS_X@t5@p1@100.label",
                         LabelFile(metadata={"id": genotype}, names=names,
                                   tracks={"1": (np.arange(10) * 0.1, steps)}))
    out = tmp_path / "out"
    assert main(["summarize", str(tmp_path / "labels"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split(f"written to {out}:\n", 1)[1].split("\n\n", 1)[0]
    listed = [line.strip() for line in printed.splitlines()]
    # transitions.tsv and transitions.png share a name in ScreenSummary.tables/.plots: both listed
    assert "transitions.tsv" in listed and "transitions.png" in listed
    # every file of the folder but its hidden marker (the folder is the summary's: maggotflow.atomic)
    assert sorted(listed) == sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
