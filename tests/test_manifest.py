"""The manifest: scanning a tree of track files, ids, label pairing, splits and shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from maggotflow import heldout, names, sharding
from maggotflow import manifest as mf
from maggotflow.simulation import SimulationConfig, simulate
from maggotflow.tracks import TrackDataError

FIM_HEADER = ",larva(0),larva(1)\nhead_x(0),1,2\n"
SPINE_LINE = "20200101_120000 1 0.000 1 2 3 4\n"


def touch(path: Path, text: str = SPINE_LINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def label_json(track_name: str) -> str:
    return json.dumps({"metadata": {"id": "x"}, "units": {"t": "s"}, "labels": ["run"],
                       "dependencies": {"filename": track_name, "sha1": "0" * 40},
                       "data": [{"id": "1", "t": [0.0], "labels": ["run"]}]})


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate(root, 6, seed=3, config=SimulationConfig(duration_s=4, larvae=(1, 2)))
    return root


def test_simulated_tree_gives_one_row_per_track_file_with_paired_labels(simulated):
    m = mf.build_manifest(simulated)
    tracks = sorted(p for p in simulated.rglob("*") if p.suffix in (".spine", ".mat", ".csv"))
    assert len(m) == len(tracks) == 6
    assert sorted(Path(r["path"]) for r in m) == tracks
    assert {r["format"] for r in m} == {"spine", "trx", "fimtrack"}
    for row in m:
        path = Path(row["path"])
        assert path.is_absolute() and row["relpath"] == str(path.relative_to(simulated))
        assert int(row["size"]) == path.stat().st_size
        assert row["label"] == str(path.with_suffix(".label"))  # trx.mat -> trx.label too
        assert names.safe_name(row["id"]) == row["id"]
    trx = [r for r in m if r["format"] == "trx"]
    # Every Janelia file is called trx.mat: ids still differ and carry the path's metadata.
    assert len({r["id"] for r in trx}) == len(trx) == 2
    assert all(r["tracker"] in ("t5", "t15") and r["date_time"] and r["genotype"] for r in trx)
    spine = [r for r in m if r["format"] == "spine"]
    assert all(r["tracker"] in ("t5", "t15") and r["protocol"] for r in spine)
    assert [r["relpath"] for r in m] == sorted(r["relpath"] for r in m)


def test_ids_are_safe_unique_and_bounded():
    assert names.id_from_relpath("t15/GMR@UAS/p#n/20200101_120000/trx.mat") == \
        "t15__GMR-UAS__p-n__20200101_120000__trx.mat"
    ids = names.unique_ids(["a@b/trx.mat", "a#b/trx.mat", "c/trx.mat"])
    assert len(set(ids)) == 3 and ids[2] == "c__trx.mat"
    assert ids[0].startswith("a-b__trx.mat-") and ids[1].startswith("a-b__trx.mat-")
    long = names.id_from_relpath("x" * 400 + "/trx.mat")
    assert len(long) == names.MAX_ID_LENGTH and long != names.id_from_relpath("x" * 399 + "/trx.mat")
    assert not names.id_from_relpath(".hidden/a.spine").startswith(".")


def test_label_pairing_rules_and_predictions_never_taken_as_ground_truth(tmp_path):
    touch(tmp_path / "a" / "one.spine")
    touch(tmp_path / "a" / "two.spine")
    touch(tmp_path / "a" / "three.spine")
    touch(tmp_path / "a" / "one.label", label_json("one.spine"))           # same stem
    touch(tmp_path / "a" / "manual.label", label_json("two.spine"))        # by dependencies
    touch(tmp_path / "a" / "three.predicted.label", label_json("three.spine"))  # our export
    touch(tmp_path / "b" / "trx.mat", "\x89HDF\r\n\x1a\n")
    touch(tmp_path / "b" / "predicted.label", label_json("trx.mat"))
    labels = {Path(r["path"]).name: r["label"] for r in mf.build_manifest(tmp_path)}
    assert labels == {"one.spine": str(tmp_path / "a" / "one.label"),
                      "two.spine": str(tmp_path / "a" / "manual.label"),
                      "three.spine": "", "trx.mat": ""}


def test_scan_skips_hidden_folders_foreign_csv_and_other_mat_files(tmp_path, caplog):
    touch(tmp_path / "x" / "20200101_120000.csv", FIM_HEADER)
    touch(tmp_path / "x" / "statistics.csv", "name,value\nspeed,1\n")
    touch(tmp_path / "x" / "empty.csv", "")  # kept: it fails loudly in its own job
    touch(tmp_path / "x" / "other.mat", "\x89HDF\r\n\x1a\n")
    touch(tmp_path / ".snapshot" / "old.spine")
    m = mf.build_manifest(tmp_path)
    assert sorted(Path(r["path"]).name for r in m) == ["20200101_120000.csv", "empty.csv"]
    assert "not FIMTrack" in caplog.text and "statistics.csv" in caplog.text
    assert [r["date_time"] for r in m if r["relpath"].endswith("20200101_120000.csv")] == ["20200101_120000"]
    assert len(mf.build_manifest(tmp_path, patterns=["*.mat"])) == 1


def test_symlinked_folders_are_followed_once(tmp_path):
    touch(tmp_path / "data" / "a.spine")
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop")
    assert [r["relpath"] for r in mf.build_manifest(tmp_path)] == ["data/a.spine"]


def test_only_symbolic_links_inside_the_tree_are_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root / "b" / "real.spine")
    touch(root / ".hidden" / "kept.spine")
    touch(outside / "far.spine")
    os.symlink("/", root / "slash")                          # the whole file system: never entered
    os.symlink(outside, root / "elsewhere")                  # another folder
    os.symlink(outside / "far.spine", root / "far.spine")    # a file elsewhere
    os.symlink(root, root / "b" / "up")                      # an ancestor: no loop
    os.symlink(root / "b", root / "a_second_name")           # a folder listed already (sorted first)
    os.symlink(root / "b" / "real.spine", root / "b" / "alias.spine")  # a file inside: followed
    os.symlink(root / ".hidden", root / "shown")             # a hidden folder given a name: followed
    m = mf.build_manifest(root)
    assert [r["relpath"] for r in m] == ["b/alias.spine", "b/real.spine", "shown/kept.spine"]
    assert dict(m.skipped) == {
        "a_second_name": "symbolic link to a folder scanned already (b)",
        "b/up": "symbolic link to a folder scanned already (the scanned folder itself)",
        "elsewhere": f"symbolic link to {outside}: outside the scanned folder",
        "far.spine": f"symbolic link to {outside / 'far.spine'}: outside the scanned folder",
        "slash": "symbolic link to /: outside the scanned folder",
    }


def test_links_to_files_outside_are_followed_on_request_only(tmp_path):
    touch(tmp_path / "kept" / "far.spine")
    touch(tmp_path / "kept" / "sub" / "deep.spine")
    staged = tmp_path / "staged"
    staged.mkdir()
    os.symlink(tmp_path / "kept" / "far.spine", staged / "far.spine")
    os.symlink(tmp_path / "kept" / "sub", staged / "sub")
    os.symlink("/", staged / "slash")
    assert len(mf.build_manifest(staged)) == 0
    m = mf.build_manifest(staged, file_links_outside=True)
    assert [(r["relpath"], r["path"]) for r in m] == [("far.spine", str(staged / "far.spine"))]
    assert [p for p, _ in m.skipped] == ["slash", "sub"]  # folders outside: never


def test_a_folder_reached_through_a_symbolic_link_is_the_scanned_tree(tmp_path):
    touch(tmp_path / "real" / "x" / "a.spine")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path / "real" / "x", tmp_path / "real" / "y")
    m = mf.build_manifest(tmp_path / "link")
    assert [r["relpath"] for r in m] == ["x/a.spine"] and m.rows[0]["path"] == str(tmp_path / "link/x/a.spine")
    assert m.skipped == [("y", "symbolic link to a folder scanned already (x)")]


def test_bad_root_is_one_clear_error(tmp_path):
    with pytest.raises(TrackDataError, match="not a folder"):
        mf.build_manifest(tmp_path / "missing")


def test_write_is_skipped_when_unchanged_and_reads_back_identical(simulated, tmp_path):
    m = mf.build_manifest(simulated)
    out = tmp_path / "results" / "manifest.tsv"
    assert mf.write_manifest(m, out) is True
    before = out.stat().st_mtime_ns
    assert mf.write_manifest(mf.build_manifest(simulated), out) is False
    assert out.stat().st_mtime_ns == before  # nothing downstream is triggered
    back = mf.read_manifest(out)
    assert back.rows == m.rows
    assert back.to_tsv() == out.read_text()


def test_user_manifest_needs_only_paths(simulated, tmp_path):
    tracks = sorted(p for p in simulated.rglob("*") if p.suffix in (".spine", ".mat"))
    user = tmp_path / "mine.tsv"
    user.write_text("path\tcondition\n" + "".join(f"{os.path.relpath(p, tmp_path)}\tctrl\n" for p in tracks))
    m = mf.read_manifest(user)
    assert len(m) == len(tracks)
    for row in m:
        assert Path(row["path"]).is_file() and row["condition"] == "ctrl"
        assert row["label"] == str(Path(row["path"]).with_suffix(".label"))
        assert row["format"] in ("spine", "trx") and int(row["size"]) > 0 and row["tracker"]
    assert m.where(tracker="t5").ids == [r["id"] for r in m if r["tracker"] == "t5"]
    # Relative to a given root instead, with the user's own ids kept.
    user.write_text("id\tpath\nexp1\tt5\n")
    with pytest.raises(TrackDataError, match="not a .spine"):
        mf.read_manifest(user, root=simulated)


@pytest.mark.parametrize("text, problem", [
    ("file\nx.spine\n", "no 'path' column"),
    ("path\n", "lists no track file"),
    ("id\tpath\nbad id\tx.spine\n", "may only use"),
    ("id\tpath\nsame\ta.spine\nsame\tb.spine\n", "appears twice"),
])
def test_bad_user_manifests_name_the_problem(tmp_path, text, problem):
    user = tmp_path / "mine.tsv"
    user.write_text(text)
    with pytest.raises(TrackDataError, match=problem) as err:
        mf.read_manifest(user)
    assert str(user) in str(err.value)


@pytest.mark.parametrize("relpath, row, problem", [
    ("/tmp/x/EVIL.spine", 3, "relpath /tmp/x/EVIL.spine is absolute; manifest paths are relative to the data folder"),
    ("../../../EVIL.spine", 3, "relpath ../../../EVIL.spine climbs out of the data folder"),
    ("a/../../EVIL.spine", 3, "relpath a/../../EVIL.spine climbs out of the data folder"),
    ("a/..", 3, "relpath a/.. names no file"),
])
def test_user_relpaths_must_stay_inside_the_data_folder(tmp_path, relpath, row, problem):
    touch(tmp_path / "data" / "ok.spine")
    user = tmp_path / "my.tsv"
    user.write_text(f"path\trelpath\nok.spine\tok.spine\nok.spine\t{relpath}\n")
    with pytest.raises(TrackDataError) as err:
        mf.read_manifest(user, root=tmp_path / "data")
    assert str(err.value) == f"{user}: row {row}: {problem}"


def test_legitimate_user_relpaths_and_paths_outside_the_data_folder(tmp_path):
    data = tmp_path / "data"
    touch(data / "a" / "one.spine")
    touch(tmp_path / "elsewhere" / "two.spine")
    user = tmp_path / "my.tsv"
    user.write_text(f"path\trelpath\na/one.spine\ta/./x/../one.spine\n{tmp_path / 'elsewhere' / 'two.spine'}\t\n")
    rows = mf.read_manifest(user, root=data).rows
    # A given relpath is normalised; a file outside the data folder gets its absolute path,
    # less the leading '/': either way its label stays below the run's labels/ folder.
    assert sorted(r["relpath"] for r in rows) == sorted(["a/one.spine", str(tmp_path / "elsewhere" / "two.spine")[1:]])
    for r in rows:
        label = names.mirrored_label_path(r["relpath"])
        assert not os.path.isabs(label) and ".." not in Path(label).parts


@pytest.mark.parametrize("relpath", ["/tmp/x/EVIL.spine", "../EVIL.spine", "a/../../EVIL.spine", "a/../b.spine", ""])
def test_mirrored_label_paths_never_leave_their_folder(relpath):
    with pytest.raises(TrackDataError, match="relpath"):
        names.mirrored_label_path(relpath)


def test_heldout_split_is_stable_per_file():
    ids = [f"file{i:03d}" for i in range(200)]
    held = heldout.hash_split(ids, 0.25, seed=1)
    assert 30 < len(held) < 70
    more = heldout.hash_split(ids + [f"new{i}" for i in range(50)], 0.25, seed=1)
    assert more & set(ids) == held  # adding files never moves a file between sides
    assert heldout.hash_split(ids, 0.25, seed=2) != held
    assert len(heldout.hash_split(["a", "b"], 0.01)) == 1 and len(heldout.hash_split(["a", "b"], 0.99)) == 1
    assert heldout.hash_split(ids, 0.0) == set() and heldout.hash_split(["only"], 0.5) == set()


def test_shards_cover_every_file_once_and_adding_a_file_moves_one_shard():
    ids = [f"t15__exp{i:04d}__trx.mat" for i in range(1000)]
    shards = sharding.assign_shards(ids, 20)
    flat = [i for members in shards.values() for i in members]
    assert flat == sorted(ids)
    assert max(len(m) for m in shards.values()) <= 40
    assert 25 <= len(shards) <= 100  # about 1000 / 20
    # A new file changes the shard it joins (and, when it moves a boundary, a neighbour or
    # two), never the whole tail of the tree as fixed-size chunks of the sorted list would.
    for position in range(0, 1000, 50):
        grown = sharding.assign_shards(ids + [f"t15__exp{position:04d}a__trx.mat"], 20)
        changed = {k for k in grown if grown[k] != shards.get(k)}
        assert 1 <= len(changed) <= 3, position
    assert sharding.assign_shards(ids, 20) == shards  # deterministic
    assert all(len(m) == 1 for m in sharding.assign_shards(ids[:10], 1).values())
    with pytest.raises(ValueError):
        sharding.assign_shards(ids, 0)


def test_shards_of_large_files_are_capped_by_size_and_changes_stay_local():
    ids = [f"t15__exp{i:04d}__trx.mat" for i in range(1000)]
    sizes = {i: (900 if k % 7 == 0 else 100) for k, i in enumerate(ids)}  # bytes
    shards = sharding.assign_shards(ids, 200, sizes=sizes, max_bytes=1000)
    assert [i for members in shards.values() for i in members] == sorted(ids)
    for members in shards.values():
        # Closed as soon as the files reach the cap: everything but the last file is below it.
        assert sum(sizes[i] for i in members[:-1]) < 1000
    assert len(shards) > 1000 / 10  # files of >= 100 bytes: at most 10 per shard
    big = sharding.assign_shards(ids[:5], 200, sizes={i: 5000 for i in ids}, max_bytes=1000)
    assert all(len(m) == 1 for m in big.values())  # a file larger than the cap: a job of its own
    # Without sizes (or with a cap no shard reaches) the shards are the count-based ones.
    assert sharding.assign_shards(ids, 200, sizes=sizes, max_bytes=10**9) == sharding.assign_shards(ids, 200)
    # Growing the sizes of one file re-shards only around it.
    heavier = dict(sizes, **{ids[500]: 5000})
    changed = sharding.assign_shards(ids, 200, sizes=heavier, max_bytes=1000)
    differ = {k for k in changed if changed[k] != shards.get(k)}
    assert 1 <= len(differ) <= 5
    with pytest.raises(ValueError):
        sharding.assign_shards(ids, 20, sizes=sizes, max_bytes=0)


def test_run_names_keep_folders_and_models_apart(tmp_path):
    a, b = tmp_path / "lab1" / "screen", tmp_path / "lab2" / "screen"
    name = names.predict_run_name(a, "results/models/tagger")
    assert name.startswith("screen-") and names.safe_name(name) == name
    assert name == names.predict_run_name(str(a) + "/", "results/models/tagger")
    assert name != names.predict_run_name(b, "results/models/tagger")
    assert name != names.predict_run_name(a, "models/other")
    odd = names.predict_run_name(tmp_path / "my data@#2", "m")
    assert names.safe_name(odd) == odd


def test_output_label_names():
    assert names.mirrored_label_path("t5/a@b/X.spine") == "t5/a@b/X.label"
    assert names.mirrored_label_path("t5/g@e/p/d/trx.mat") == "t5/g@e/p/d/trx.label"
    assert names.exported_label_path("/d/trx.mat") == Path("/d/predicted.label")
    assert names.exported_label_path("/d/X.csv") == Path("/d/X.predicted.label")
    assert names.is_exported_prediction("predicted.label") and not names.is_exported_prediction("trx.label")


def test_scan_lists_what_it_skips_with_the_reason(tmp_path):
    touch(tmp_path / "a" / "one.spine")
    touch(tmp_path / "a" / "one.label", "{}")
    touch(tmp_path / "a" / "one.outline", "")  # read with one.spine: expected, not skipped
    touch(tmp_path / "a" / "orphan.outline", "")
    touch(tmp_path / "a" / "notes.txt", "")
    touch(tmp_path / "a" / "two.spine.gz", "")
    touch(tmp_path / "a" / "stats.csv", "name,value\n")
    touch(tmp_path / "a" / ".hidden.spine")
    touch(tmp_path / "a" / ".one.label.host-1.x.part", "")
    os.mkfifo(tmp_path / "a" / "pipe.spine")
    os.symlink(tmp_path / "nowhere.spine", tmp_path / "a" / "link.spine")
    m = mf.build_manifest(tmp_path)
    assert [r["relpath"] for r in m] == ["a/one.spine"]
    assert dict(m.skipped) == {
        "a/link.spine": "a broken symbolic link",
        "a/notes.txt": "unknown extension .txt: not a .spine, trx.mat or .csv track file",
        "a/orphan.outline": "a Choreography .outline without its .spine (outlines are read with their .spine file)",
        "a/pipe.spine": "not a regular file",
        "a/stats.csv": "a .csv file that is not a FIMTrack table",
        "a/two.spine.gz": "gzip-compressed: decompress it first",
    }
    out = tmp_path / "out" / "skipped.tsv"
    assert mf.write_skipped(m.skipped, out) is True and mf.write_skipped(m.skipped, out) is False
    assert out.read_text().splitlines()[1] == "a/link.spine\ta broken symbolic link"


@pytest.mark.parametrize("name", [
    "20200101_000000@FCF@UAS@t15@p@100.spine",  # Choreography layout: the name's parts count
    "trial@FCF@UAS@t15@p.spine",  # first part not a date_time: the parts are not genotype, ...
    "20200101_000000.spine",
])
def test_manifest_metadata_agrees_with_the_reader(tmp_path, name):
    """A filter on manifest rows (the workflow's inputs.filter) and on a run's metadata
    (`dataset --only`) see the same genotype, effector, tracker and protocol for a file."""
    from maggotflow.formats import read_run

    path = tmp_path / name
    path.write_text("".join(f"20200101_000000 1 {i / 10:.1f} {i}.0 0.0 {i + 4}.0 0.0\n" for i in range(40)))
    run = read_run(path)
    row = mf.path_metadata(path, "spine")
    for key in ("tracker", "genotype", "effector", "protocol"):
        assert row[key] == run.metadata.get(key, ""), key
