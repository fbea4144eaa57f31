"""A user's files are sacred: no command replaces a file maggotflow did not write; outputs are readable.

Every command's output path is tried on a file of the user's (it must stay byte for byte
as it was, with a one-line error naming it) and on maggotflow's own earlier output (which
it may replace). Modes are checked under umask 022: 0644 files, 0755 folders.
"""

import os
import shutil
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


# ---------------------------------------------------------------------------- summarize
SUMMARY_ADVICE = "nothing is written there: write the summary into a new or empty folder, or move the file"


def test_summarize_never_replaces_a_users_groups_tsv(sim, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "groups.tsv").write_text("my own groups\n")
    line = one_line_error(capsys, ["summarize", str(label_file_path(sim)), "--out", str(out), "--no-plots"])
    assert line == f"maggotflow summarize: error: {out}: holds groups.tsv and no earlier summary of " \
                   f"maggotflow's; {SUMMARY_ADVICE}"
    assert sorted(p.name for p in out.iterdir()) == ["groups.tsv"]  # nothing written, not even the mark
    assert (out / "groups.tsv").read_text() == "my own groups\n"


def test_summarize_again_into_its_own_folder_but_not_beside_a_users_file(sim, tmp_path, capsys):
    labels = str(label_file_path(sim))
    out = tmp_path / "summary"  # new: the workflow's directory() output is deleted before its job
    assert cli(["summarize", labels, "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [".maggotflow", "bout_durations.png", "failed.tsv", "fraction_by_group.png", "groups.tsv",
                       "per_file.tsv", "per_larva.tsv", "transitions.png", "transitions.tsv"]
    assert mode(out) == 0o755 and {mode(p) for p in out.iterdir()} == {0o644}
    (out / ".DS_Store").write_bytes(b"Finder")  # a file browser's: no data of the user's
    assert cli(["summarize", labels, "--out", str(out), "--no-plots"]) == 0  # its own earlier summary
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("these groups look odd")
    line = one_line_error(capsys, ["summarize", labels, "--out", str(out)])
    assert line == f"maggotflow summarize: error: {out}: holds notes.txt, which maggotflow did not write; " \
                   f"{SUMMARY_ADVICE}"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["summarize", labels, "--out", str(empty), "--no-plots"]) == 0


def test_the_library_summary_refuses_too(sim, tmp_path):
    """The workflow's screen_summary job calls `screen.summarize`: the check is there, not in the CLI."""
    from maggotflow.atomic import OutputExistsError
    from maggotflow.screen import summarize

    out = tmp_path / "screen"
    out.mkdir()
    (out / "per_larva.tsv").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds per_larva.tsv and no earlier summary"):
        summarize([label_file_path(sim)], out, plots=False)
    assert (out / "per_larva.tsv").read_text() == "mine"


# ---------------------------------------------------------------------------- model folders
KEEP = "it is never deleted: save the model into another folder or move the file"


def tiny_tagger(labels=("run", "cast")):
    from maggotflow.instance import ModelInstance
    from maggotflow.model import ClassifierConfig, EncoderConfig
    from maggotflow.segments import SegmentSpec

    encoder = EncoderConfig(window=6, n_points=3, latent_dim=4, filters=(4, 4), body_kernel=2)
    return ModelInstance("tagger", SegmentSpec(window=6, n_points=3), encoder, labels=list(labels),
                         classifier_config=ClassifierConfig(4, len(labels), layers=(3,)),
                         curves={"training": [{"step": 0, "val_loss": 1.0}, {"step": 1, "val_loss": 0.5}]})


def tree(folder):
    """Every entry under `folder`: relative path -> bytes (None for a folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_train_and_pretrain_never_delete_a_file_added_to_a_model_folder(command, tmp_path, capsys):
    model = tiny_tagger().save(tmp_path / "models" / "x")
    (model / "notes.txt").write_text("trained on the March data; F1 0.8 on my own files")
    before = tree(model)
    argv = ([command, str(tmp_path / "no-dataset.h5")] if command == "train" else
            [command, "--train", str(tmp_path / "no-file.h5")]) + ["--out", str(model)]
    line = one_line_error(capsys, argv)  # refused before any input is read
    assert line == f"maggotflow {command}: error: {model}: holds notes.txt, which maggotflow did not write; {KEEP}"
    assert tree(model) == before


def test_a_model_folder_is_replaced_only_when_all_of_it_is_maggotflows(tmp_path):
    from maggotflow.atomic import OutputExistsError
    from maggotflow.ensemble import Ensemble
    from maggotflow.instance import ModelInstance, check_target

    model = tiny_tagger().save(tmp_path / "x")
    assert sorted(tree(model)) == ["classifier.pt", "config.json", "curves", "curves/training.csv",
                                   "curves/training.png", "encoder.pt", "provenance.json"]
    (model / ".DS_Store").write_bytes(b"Finder")  # a file browser's: no data of the user's
    tiny_tagger(("run", "hunch")).save(model)  # pure maggotflow: replaced
    assert ModelInstance.load(model).labels == ["run", "hunch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # nothing left beside it

    # (file added, entry named): a folder of the user's is named itself
    for added, named in (("curves/my_plot.png", "curves/my_plot.png"), ("eval/metrics.json", "eval"),
                         ("members/000/notes.txt", "members/000/notes.txt")):
        target = tmp_path / added.replace("/", "-")
        if added.startswith("members/"):
            Ensemble([tiny_tagger(), tiny_tagger()]).save(target)
        else:
            tiny_tagger().save(target)
        (target / added).parent.mkdir(parents=True, exist_ok=True)
        (target / added).write_text("mine")
        before = tree(target)
        with pytest.raises(OutputExistsError) as err:
            tiny_tagger().save(target)
        assert str(err.value) == f"{target}: holds {named}, which maggotflow did not write; {KEEP}"
        assert tree(target) == before
        if named == added:
            (target / named).unlink()
        else:
            shutil.rmtree(target / named)
        Ensemble([tiny_tagger()]).save(target)  # all maggotflow's again: replaced
        assert ModelInstance.load(target / "members" / "000").labels == ["run", "cast"]

    empty = tmp_path / "empty"
    empty.mkdir()
    check_target(empty)  # an empty folder takes a model
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "encoder.pt").write_bytes(b"their own network")  # our name, but no config.json of ours
    with pytest.raises(OutputExistsError) as err:
        check_target(theirs)
    assert str(err.value) == f"{theirs}: holds encoder.pt and is not a maggotflow model instance; not " \
                             "overwritten: save the model into another folder or move the file"
