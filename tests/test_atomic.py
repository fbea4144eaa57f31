"""Atomic outputs: modes under the user's umask, temporaries of killed writers, write failures."""

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from maggotflow.atomic import (OutputError, atomic_path, remove_stale_temporaries, write_bytes_atomic,
                               write_text_atomic)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_umask_mode(tmp_path, umask022):
    target = tmp_path / "new" / "deeper" / "x.label"
    write_text_atomic(target, "{}\n")
    assert mode(target) == 0o644
    assert mode(target.parent) == 0o755 and mode(target.parent.parent) == 0o755
    os.umask(0o027)
    write_bytes_atomic(tmp_path / "y.bin", b"1")
    assert mode(tmp_path / "y.bin") == 0o640


def test_a_killed_writer_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    target = tmp_path / "trx.label"
    code = (
        "import os, sys\n"
        "from maggotflow.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os._exit(9)\n"  # killed mid-write: no cleanup runs
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(left) == 1 and left[0].name.startswith(".trx.label.") and not target.exists()
    other = tmp_path / ".other.label.host-1.abc.part"
    other.write_text("not ours")
    # Not all owners: the dead pid of this host is recognised as abandoned.
    assert remove_stale_temporaries([target]) == left
    assert not left[0].exists() and other.exists()  # a temporary of another target stays


def test_a_live_writers_temporary_is_kept_unless_all_owners(tmp_path):
    target = tmp_path / "a.h5"
    with atomic_path(target) as tmp:
        tmp.write_text("in progress")
        assert remove_stale_temporaries([target]) == []
        assert tmp.exists()
    assert target.read_text() == "in progress"
    stray = tmp_path / ".a.h5.elsewhere-12.xyz.part"
    stray.write_text("x")
    assert remove_stale_temporaries([target], all_owners=True) == [stray]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError) as err:
            write_text_atomic(folder / "x.label", "{}")
    finally:
        folder.chmod(0o755)
    assert str(err.value) == f"{folder / 'x.label'}: cannot write (Permission denied); choose a folder you can write to"


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "x.label"
    with pytest.raises(OutputError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == f"{target}: cannot write (No space left on device); free some space and run again"
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_of_a_folder(tmp_path):
    (tmp_path / "results").write_text("a file")
    with pytest.raises(OutputError, match="results: cannot write .*in the way"):
        write_text_atomic(tmp_path / "results" / "x.tsv", "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_real_enospc_from_dev_full(tmp_path):
    # /dev/full answers every write with ENOSPC: the same path a full disk takes.
    with pytest.raises(OutputError, match="No space left on device"):
        with atomic_path(tmp_path / "x.bin"):
            with open("/dev/full", "wb") as f:
                f.write(b"x" * 100000)
                f.flush()
    assert list(tmp_path.iterdir()) == []
