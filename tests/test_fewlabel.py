"""The few-label benchmark's data helpers (benchmarks/fewlabel.py): which larvae, and their dataset."""

from __future__ import annotations

from benchmarks.fewlabel import (
    build_adaptation_dataset,
    choose_larvae,
    eligible_larvae,
    labelled_seconds,
    write_adaptation_set,
)
from maggotflow.dataset import Dataset
from maggotflow.isolation import isolate, read_isolated
from maggotflow.simulation import label_file_path, regime_config, simulate


def test_chosen_larvae_alone_make_the_dataset_and_a_single_larva_validates_on_a_time_block(tmp_path):
    config = regime_config("B", duration_s=40.0, larvae=(6, 6), partial_track_probability=0.0,
                           short_track_probability=0.0)
    (track,) = simulate(tmp_path / "data", 1, seed=5, formats=("spine",), config=config)
    intermediate = tmp_path / "pool.h5"
    isolate(track, intermediate, label_file_path(track))

    pool = eligible_larvae([intermediate], min_labelled_s=30)
    assert len(pool) == 6
    five, two = choose_larvae(pool, 5, seed=1, regime="B"), choose_larvae(pool, 2, seed=1, regime="B")
    assert two == five[:2] and len(set(five)) == 5  # nested for one seed, no larva twice

    found = write_adaptation_set(two, tmp_path / "two.h5", block_s=None)
    ids = [t.id for t in read_isolated(tmp_path / "two.h5").tracks]
    assert ids == [f"0-{larva}" for _, larva in two]
    labels = sorted(found)
    assert build_adaptation_dataset(tmp_path / "two.h5", tmp_path / "two-ds.h5", labels, seed=0) in ("larva", "none")

    one = write_adaptation_set(five[:1], tmp_path / "one.h5", block_s=10.0)
    blocks = read_isolated(tmp_path / "one.h5").tracks
    assert len(blocks) == 4 and all(b.id.startswith(f"0-{five[0][1]}-b") for b in blocks)
    assert sum(labelled_seconds(b) for b in blocks) <= labelled_seconds(
        next(t for t in read_isolated(intermediate).tracks if t.id == five[0][1]))
    split = build_adaptation_dataset(tmp_path / "one.h5", tmp_path / "one-ds.h5", sorted(one), seed=0)
    with Dataset.load(tmp_path / "one-ds.h5") as ds:
        validating = set(ds.larva_keys()[ds.val_indices()].tolist())
        assert (split, len(validating)) in (("larva", 1), ("none", 0))
        assert not validating & set(ds.larva_keys()[ds.train_indices()].tolist())
