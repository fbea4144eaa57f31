"""Dataset building: labels, synonyms, split without leakage, balancing, layout, CLI."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from maggotflow.cli import main, parse_synonyms
from maggotflow.dataset import Dataset, build_dataset, check_class_weights, maggotuba_proportions, spread_evenly
from maggotflow.isolation import write_isolated
from maggotflow.segments import SegmentSpec, build_segments
from maggotflow.tracks import Run, Track, TrackDataError

SPEC = SegmentSpec(window=6, frame_interval=0.1, n_points=5)


def larva(larva_id, labels, fps=10.0, seed=0, k=7):
    """A crawling, wiggling larva with one label tuple (or None) per step."""
    n = len(labels) if labels is not None else 30
    rng = np.random.default_rng(seed)
    t = np.round(np.arange(n) / fps + 0.5, 4)
    s = np.linspace(0.0, 3.0, k)
    bend = 0.3 * np.sin(2.0 * t)[:, None]
    x = 0.5 * t[:, None] + s[None, :] * np.cos(bend * s[None, :] / 3)
    y = 0.1 * np.sin(t)[:, None] + s[None, :] * np.sin(bend * s[None, :] / 3)
    spine = np.stack([x, y], axis=-1) + rng.normal(0, 0.01, (n, k, 2))
    steps = None if labels is None else [() if v is None else (v,) if isinstance(v, str) else tuple(v)
                                         for v in labels]
    return Track(str(larva_id), t, spine, labels=steps)


def write(path, tracks, labelled=True):
    run = Run(metadata={"id": Path(path).stem, "tracker": "t15"}, tracks=tracks,
              source=Path(f"/screen/{Path(path).stem}.spine"), format="spine", sha1="0" * 40)
    write_isolated(run, path, label_source="x.label" if labelled else "")
    return Path(path)


def repeat(*pairs):
    """repeat(("run", 3), (None, 2)) -> ['run', 'run', 'run', None, None]."""
    return [v for v, n in pairs for _ in range(n)]


def test_split_by_file_keeps_every_file_on_one_side(tmp_path):
    files = [write(tmp_path / f"f{i}.h5",
                   [larva(j, repeat(("run", 8), ("cast", 4), (None, 2)), seed=10 * i + j) for j in range(1, 3)])
             for i in range(5)]
    ds = build_dataset(files, tmp_path / "d.h5", spec=SPEC, validation_fraction=0.4, seed=3)
    assert ds.split_by == "file"
    for f in range(len(ds.files)):
        assert np.unique(ds.split[ds.file == f]).size == 1
    val_files = np.unique(ds.file[ds.split == 1])
    assert val_files.size == 2  # round(0.4 * 5)
    assert np.unique(ds.file[ds.split == 0]).size == 3
    assert len(ds) == 5 * 2 * 12  # untagged steps dropped
    assert np.array_equal(np.sort(np.concatenate([ds.train_indices(), ds.val_indices()])), np.arange(len(ds)))
    sides = {rec["path"]: rec["split"] for rec in ds.sources}
    assert sorted(sides.values()).count("validation") == 2
    assert ds.files == sorted(str(f) for f in files)
    ds.close()


def test_segments_built_with_torch_equal_the_numpy_build(tmp_path, monkeypatch):
    """The CUDA path (all larvae of a file in one torch batch), here on CPU: same rows,
    segments equal to float32 rounding."""
    import maggotflow.dataset as dataset_module

    files = [write(tmp_path / f"f{i}.h5",
                   [larva(j, repeat(("run", 8), (None, 3), ("cast", 6)), seed=10 * i + j) for j in range(1, 4)])
             for i in range(3)]
    with build_dataset(files, tmp_path / "numpy.h5", spec=SPEC, seed=1, device="cpu") as reference:
        expected = reference.read_segments(np.arange(len(reference)))
        labels = reference.label.copy()
    monkeypatch.setattr(dataset_module, "segment_builder", lambda device: "torch")
    with build_dataset(files, tmp_path / "torch.h5", spec=SPEC, seed=1, device="cpu") as built:
        np.testing.assert_array_equal(built.label, labels)
        np.testing.assert_allclose(built.read_segments(np.arange(len(built))), expected, rtol=0, atol=2e-6)


def test_two_files_one_each_side_and_input_order_irrelevant(tmp_path):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("cast", 5), ("run", 5)), seed=1)])
    ds1 = build_dataset([a, b], tmp_path / "d1.h5", spec=SPEC, validation_fraction=0.01)
    ds2 = build_dataset([b, a], tmp_path / "d2.h5", spec=SPEC, validation_fraction=0.01)
    assert sorted(np.unique(ds1.split).tolist()) == [0, 1]
    assert np.array_equal(ds1.split, ds2.split) and ds1.files == ds2.files
    ds1.close(), ds2.close()


def test_single_file_splits_by_larva(tmp_path):
    f = write(tmp_path / "one.h5",
              [larva(j, repeat(("run", 6), ("cast", 3)), seed=j) for j in range(1, 11)])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, validation_fraction=0.3, seed=1)
    assert ds.split_by == "larva"
    for name in np.unique(ds.larva):
        assert np.unique(ds.split[ds.larva == name]).size == 1
    assert np.unique(ds.larva[ds.split == 1]).size == 3
    assert np.unique(ds.larva[ds.split == 0]).size == 7
    ds.close()


def test_rare_behaviour_in_a_single_file_stays_in_training(tmp_path):
    files = [write(tmp_path / f"f{i}.h5", [larva(1, repeat(("run", 6), ("cast", 6)), seed=i)]) for i in range(3)]
    files.append(write(tmp_path / "rolls.h5", [larva(1, repeat(("run", 6), ("roll", 2)), seed=9)]))
    for seed in range(6):
        ds = build_dataset(files, tmp_path / "d.h5", spec=SPEC, validation_fraction=0.5, seed=seed)
        roll = ds.labels.index("roll")
        assert ds.class_counts(0)[roll] == 2 and ds.class_counts(1)[roll] == 0
        ds.close()


def test_label_subset_order_and_multilabel_first_in_label_set_order(tmp_path):
    steps = repeat(("run", 4), (("hunch", "cast"), 3), ("hunch", 2), ("back", 1), (None, 2))
    f = write(tmp_path / "a.h5", [larva(1, steps)])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, labels=["run", "cast", "hunch"], validation_fraction=0)
    assert ds.labels == ["run", "cast", "hunch"]
    # (hunch, cast) -> cast, the first of its labels in label-set order; back and untagged dropped.
    assert ds.class_counts().tolist() == [4, 3, 2]
    ds.close()
    ds = build_dataset([f], tmp_path / "d2.h5", spec=SPEC, labels=["hunch", "run"], validation_fraction=0)
    assert ds.class_counts().tolist() == [5, 4]  # (hunch, cast) is hunch now; cast alone absent
    ds.close()


def test_label_set_discovered_in_first_seen_order_over_sorted_files(tmp_path):
    b = write(tmp_path / "b.h5", [larva(1, repeat(("roll", 3), ("run", 3)))])
    a = write(tmp_path / "a.h5", [larva(1, repeat(("cast", 3), ("run", 3)))])
    ds = build_dataset([b, a], tmp_path / "d.h5", spec=SPEC, validation_fraction=0)
    assert ds.labels == ["cast", "run", "roll"]
    ds.close()


def test_synonyms_merge_names(tmp_path):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run_large", 5), ("cast_large", 2)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 3), ("cast", 4)), seed=1)])
    syn = parse_synonyms("run_large=run,cast_large=cast")
    ds = build_dataset([a, b], tmp_path / "d.h5", spec=SPEC, synonyms=syn, validation_fraction=0)
    assert ds.labels == ["run", "cast"]
    assert ds.class_counts().tolist() == [8, 6]
    assert ds.synonyms == syn
    ds.close()
    assert parse_synonyms("six-from-seven")["roll_large"] == "roll"
    with pytest.raises(ValueError, match="name_in_file=task_name"):
        parse_synonyms("run_large")


def test_single_behaviour_target(tmp_path):
    steps = repeat(("roll", 3), ("run", 4), (("cast", "roll"), 2), ("hunch", 1), (None, 5))
    f = write(tmp_path / "a.h5", [larva(1, steps)])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, target="roll", validation_fraction=0)
    assert ds.labels == ["roll", "not_roll"] and ds.target == "roll"
    assert ds.class_counts().tolist() == [5, 5]  # untagged steps dropped
    ds.close()
    # With a label list, only those labels count as not_roll.
    ds = build_dataset([f], tmp_path / "d2.h5", spec=SPEC, target="roll", labels=["run"], validation_fraction=0)
    assert ds.class_counts().tolist() == [5, 4]
    ds.close()


def test_auto_weights_are_normalised_inverse_frequencies(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 6), ("cast", 3), ("roll", 1)))])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, validation_fraction=0)
    # counts 6, 3, 1 -> 1/6, 1/3, 1 (sum 3/2); times K / sum = 3 / 1.5 = 2 -> 1/3, 2/3, 2.
    assert ds.labels == ["run", "cast", "roll"]
    np.testing.assert_allclose(ds.class_weights, [1 / 3, 2 / 3, 2.0])
    assert ds.balancing == "auto"
    ds.close()


def test_auto_weights_count_training_samples_only(tmp_path):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run", 4), ("cast", 1), ("roll", 1)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 9), ("cast", 9)), seed=1)])
    ds = build_dataset([a, b], tmp_path / "d.h5", spec=SPEC, validation_fraction=0.5)
    # b cannot go to validation? It can: a keeps every class. Training = a: 4, 1, 1.
    assert ds.class_counts(0).tolist() == [4, 1, 1]
    inv = np.array([1 / 4, 1, 1])
    np.testing.assert_allclose(ds.class_weights, inv * 3 / inv.sum())
    ds.close()


def test_explicit_class_weights_override_and_are_checked(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 6), ("cast", 3)))])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, class_weights=[1.0, 2.5], validation_fraction=0)
    np.testing.assert_allclose(ds.class_weights, [1.0, 2.5])
    ds.close()
    with pytest.raises(ValueError, match="3 class weights given for 2 labels"):
        build_dataset([f], tmp_path / "e.h5", spec=SPEC, class_weights=[1, 2, 3])
    assert not (tmp_path / "e.h5").exists()


def test_check_class_weights_one_per_label_finite_not_all_zero():
    assert check_class_weights(np.array([1, 2.5]), ["run", "cast"]) == [1.0, 2.5]
    with pytest.raises(ValueError, match=r"^1 class weights given for 2 labels \(run, cast\)$"):
        check_class_weights([1.0], ["run", "cast"])
    for bad in ([1.0, -1.0], [0.0, 0.0], [1.0, float("nan")], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="finite, >= 0 and not all zero"):
            check_class_weights(bad, ["run", "cast"])


def test_none_balancing_keeps_all_with_unit_weights_and_max_samples_caps(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 30), ("cast", 10)))])
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, balancing="none", validation_fraction=0)
    assert len(ds) == 40 and ds.class_weights.tolist() == [1.0, 1.0]
    ds.close()
    ds = build_dataset([f], tmp_path / "d2.h5", spec=SPEC, balancing="none", validation_fraction=0,
                       max_samples=15, seed=2)
    assert len(ds) == 15
    ds.close()


def test_maggotuba_proportions():
    p = maggotuba_proportions(["run", "cast", "back", "hunch", "roll", "stop_large"])
    np.testing.assert_allclose(p, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125])
    np.testing.assert_allclose(maggotuba_proportions(["run_large", "cast_large", "roll_large", "small_motion"]),
                               [0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(maggotuba_proportions(["run", "cast"]), [0.5, 0.5])
    np.testing.assert_allclose(maggotuba_proportions(["back", "hunch", "roll"]), [1 / 3] * 3)
    np.testing.assert_allclose(maggotuba_proportions(["roll", "not_roll"], target="roll"), [0.5, 0.5])


def test_spread_evenly_water_fills():
    rng = np.random.default_rng(0)
    assert spread_evenly(90, np.array([100, 100, 10]), rng).tolist() == [40, 40, 10]
    assert spread_evenly(500, np.array([100, 100, 10]), rng).tolist() == [100, 100, 10]
    takes = spread_evenly(7, np.array([5, 0, 5]), rng)
    assert takes.sum() == 7 and sorted(takes.tolist()) == [0, 3, 4]


def test_maggotuba_balancing_proportions_and_spread_over_files(tmp_path):
    names = ["run", "cast", "back", "hunch", "roll", "stop_large"]
    # Three files; roll is the rarest (8 in all) -> total 8 / .125 = 64:
    # run 16, cast 16, back/hunch/roll/stop_large 8 each.
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run", 40), ("cast", 30), ("back", 12), ("hunch", 12),
                                                  ("roll", 4), ("stop_large", 12)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 40), ("cast", 30), ("back", 12), ("hunch", 12),
                                                  ("roll", 3), ("stop_large", 12)), seed=1)])
    c = write(tmp_path / "c.h5", [larva(1, repeat(("run", 2), ("cast", 30), ("back", 12), ("hunch", 12),
                                                  ("roll", 1), ("stop_large", 12)), seed=2)])
    ds = build_dataset([a, b, c], tmp_path / "d.h5", spec=SPEC, labels=names, balancing="maggotuba",
                       validation_fraction=0, seed=5)
    assert ds.class_counts().tolist() == [16, 16, 8, 8, 8, 8]
    assert ds.class_weights.tolist() == [1.0] * 6
    run_per_file = np.bincount(ds.file[ds.label == 0], minlength=3)
    assert run_per_file.tolist() == [7, 7, 2]  # c gives its 2 runs, a and b share the rest evenly
    roll_per_file = np.bincount(ds.file[ds.label == 4], minlength=3)
    assert roll_per_file.tolist() == [4, 3, 1]  # every roll is needed
    cast_per_file = np.bincount(ds.file[ds.label == 1], minlength=3)
    assert sorted(cast_per_file.tolist()) == [5, 5, 6]
    ds.close()
    # max_samples caps the total.
    ds = build_dataset([a, b, c], tmp_path / "d2.h5", spec=SPEC, labels=names, balancing="maggotuba",
                       validation_fraction=0, max_samples=32)
    assert ds.class_counts().tolist() == [8, 8, 4, 4, 4, 4]
    ds.close()


def test_segments_equal_build_segments_at_recorded_centre(tmp_path):
    tracks = [larva(j, repeat(("run", 10), ("cast", 8), (None, 4)), seed=j) for j in (3, 12)]
    f = write(tmp_path / "a.h5", tracks)
    ds = build_dataset([f], tmp_path / "d.h5", spec=SPEC, validation_fraction=0.5)
    assert ds.segments.shape == (36, 2, 5, 6) and ds.segments.dtype == np.float32
    for i in (0, 7, 17, 18, 35):
        track = next(tr for tr in tracks if tr.id == ds.larva[i])
        expected = build_segments(track, SPEC, centres=np.array([ds.t[i]]))[0]
        np.testing.assert_array_equal(ds.segments[i], expected)
        step = int(np.flatnonzero(track.t == ds.t[i])[0])
        assert track.labels[step] == (ds.labels[ds.label[i]],)
    picked = ds.read_segments(np.array([35, 0, 7]))
    np.testing.assert_array_equal(picked[0], ds.segments[35])
    np.testing.assert_array_equal(picked[2], ds.segments[7])
    ds.close()
    with Dataset.load(tmp_path / "d.h5", in_memory=True) as mem:
        assert isinstance(mem.segments, np.ndarray) and mem.spec == SPEC


def test_layout_and_deterministic_bytes(tmp_path):
    files = [write(tmp_path / f"f{i}.h5", [larva(1, repeat(("run", 7), ("cast", 5)), seed=i)]) for i in range(4)]
    build_dataset(files, tmp_path / "d1.h5", spec=SPEC, seed=7).close()
    build_dataset(files, tmp_path / "d2.h5", spec=SPEC, seed=7).close()
    assert (tmp_path / "d1.h5").read_bytes() == (tmp_path / "d2.h5").read_bytes()
    with h5py.File(tmp_path / "d1.h5") as h:
        assert h["segments"].dtype == np.float32 and h["segments"].chunks is not None
        assert h["segments"].compression is None
        assert h["label"].dtype == np.int16 and h["file"].dtype == np.int32
        assert h["t"].dtype == np.float64 and h["split"].dtype == np.uint8
        for key in ("labels", "class_weights", "balancing", "segment_spec", "split_by", "synonyms", "sources"):
            assert key in h.attrs
    assert not list(tmp_path.glob("*.part"))


def test_unlabelled_intermediate_is_rejected(tmp_path):
    good = write(tmp_path / "good.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    bare = write(tmp_path / "bare.h5", [larva(1, None)], labelled=False)
    with pytest.raises(TrackDataError, match="bare.h5: has no behaviour labels"):
        build_dataset([good, bare], tmp_path / "d.h5", spec=SPEC)
    assert not (tmp_path / "d.h5").exists()


def test_unknown_label_and_missing_training_class(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    with pytest.raises(ValueError, match="roll not found in any file"):
        build_dataset([f], tmp_path / "d.h5", spec=SPEC, labels=["run", "roll"])
    with pytest.raises(ValueError, match="target behaviour 'hunch' is not found"):
        build_dataset([f], tmp_path / "d.h5", spec=SPEC, target="hunch")
    only_run = write(tmp_path / "b.h5", [larva(1, repeat(("run", 5),))])
    with pytest.raises(ValueError, match="no training sample for not_run"):
        build_dataset([only_run], tmp_path / "d.h5", spec=SPEC, target="run")


def test_metadata_filter(tmp_path):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 3), ("cast", 3)))])
    c = write(tmp_path / "c.h5", [larva(1, repeat(("run", 4), ("cast", 4)))])
    ds = build_dataset([a, b, c], tmp_path / "d.h5", spec=SPEC, validation_fraction=0, filter={"id": "b"})
    assert ds.files == [str(b)] and len(ds) == 6
    ds.close()
    # A list means any of them (as the workflow's inputs.filter: tracks.metadata_matches).
    ds = build_dataset([a, b, c], tmp_path / "d.h5", spec=SPEC, validation_fraction=0,
                       filter={"id": ["a", "c"], "tracker": "t15"})
    assert ds.files == [str(a), str(c)]
    ds.close()
    with pytest.raises(ValueError, match="no intermediate has the metadata"):
        build_dataset([a, b], tmp_path / "e.h5", spec=SPEC, filter={"tracker": "t5"})


def test_cli_filter_by_metadata(tmp_path, capsys):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 3), ("cast", 3)))])
    c = write(tmp_path / "c.h5", [larva(1, repeat(("run", 4), ("cast", 4)))])
    out = tmp_path / "d.h5"
    # Repeating a key means any of its values; different keys must all match. --only is the
    # earlier spelling of --filter: it still works, alone or mixed with --filter.
    assert main(["dataset", str(out), str(a), str(b), str(c), "--filter", "id=a", "--only", "id=c",
                 "--filter", "tracker=t15", "--window", "6", "--validation-fraction", "0"]) == 0
    with Dataset.load(out) as ds:
        assert ds.files == [str(a), str(c)]
    assert main(["dataset", str(tmp_path / "e.h5"), str(a), "--filter", "tracker"]) == 2
    assert "--filter 'tracker' is not of the form KEY=VALUE" in capsys.readouterr().err
    assert main(["dataset", str(out), str(a), str(b), "--only", "id=b", "--window", "6",
                 "--validation-fraction", "0"]) == 0
    with Dataset.load(out) as ds:
        assert ds.files == [str(b)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["dataset", "--help"])
    shown = capsys.readouterr().out
    assert "--filter KEY=VALUE" in shown and "--only" not in shown


def test_cli(tmp_path, capsys):
    a = write(tmp_path / "a.h5", [larva(1, repeat(("run_large", 8), ("cast", 6), ("roll", 2)))])
    b = write(tmp_path / "b.h5", [larva(1, repeat(("run", 8), ("cast", 6), ("roll", 2)), seed=1)])
    out = tmp_path / "d.h5"
    code = main(["dataset", str(out), str(a), str(b), "--labels", "run,cast,roll", "--synonyms", "run_large=run",
                 "--class-weights", "1,2,3", "--window", "6", "--validation-fraction", "0", "--seed", "4"])
    assert code == 0
    with Dataset.load(out) as ds:
        assert ds.labels == ["run", "cast", "roll"] and ds.spec.window == 6
        assert ds.class_counts().tolist() == [16, 12, 4]
        assert ds.class_weights.tolist() == [1.0, 2.0, 3.0]
    assert "32 samples" in capsys.readouterr().out
    assert main(["dataset", str(tmp_path / "e.h5"), str(a), "--labels", "run,hunch"]) == 2
    assert "hunch not found in any file" in capsys.readouterr().err
    bare = write(tmp_path / "bare.h5", [larva(1, None)], labelled=False)
    assert main(["dataset", str(tmp_path / "e.h5"), str(bare)]) == 1
    assert "bare.h5: has no behaviour labels" in capsys.readouterr().err
    assert not (tmp_path / "e.h5").exists()


def test_load_rejects_foreign_file(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 5), ("cast", 5)))])
    with pytest.raises(TrackDataError, match="is not a maggotflow dataset"):
        Dataset.load(f)


def test_inputs_must_be_regular_readable_files(tmp_path):
    # Like every other input (formats.check_regular_file): a FIFO would block the open forever.
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    with pytest.raises(TrackDataError, match="fifo.h5: "):
        build_dataset([fifo], tmp_path / "d.h5", spec=SPEC)
    with pytest.raises(TrackDataError, match="fifo.h5: "):
        Dataset.load(fifo)
    with pytest.raises(TrackDataError, match="missing.h5: file not found"):
        Dataset.load(tmp_path / "missing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(TrackDataError, match="text.h5: is not a readable maggotflow intermediate"):
        build_dataset([text], tmp_path / "d.h5", spec=SPEC)
    with pytest.raises(TrackDataError, match="text.h5: is not a readable dataset file"):
        Dataset.load(text)


def test_degenerate_larva_names_the_file(tmp_path):
    flat = Track("4", np.arange(6) / 10, np.zeros((6, 5, 2)), labels=[("run",)] * 3 + [("cast",)] * 3)
    f = write(tmp_path / "flat.h5", [flat])
    with pytest.raises(TrackDataError, match="flat.h5: larva 4 has zero length"):
        build_dataset([f], tmp_path / "d.h5", spec=SPEC)
    assert not list(tmp_path.glob("d.h5*")) and not list(tmp_path.glob(".d.h5*"))


def test_too_small_max_samples(tmp_path):
    f = write(tmp_path / "a.h5", [larva(1, repeat(("run", 30), ("cast", 1)))])
    with pytest.raises(ValueError, match="max samples 1 is too small: no training sample left for cast"):
        build_dataset([f], tmp_path / "d.h5", spec=SPEC, validation_fraction=0, max_samples=1, seed=0,
                      balancing="maggotuba")
