"""Labelled larva simulator: determinism, behaviour statistics, kinematics, tracker effects,
no label leak, files read back with their labels, and the `maggotflow simulate` CLI."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maggotflow.cli import main
from maggotflow.formats import ReadOptions, read_run
from maggotflow.formats.label import attach_labels, read_label_file
from maggotflow.simulation import (
    BEHAVIOURS_6,
    BEHAVIOURS_7,
    REGIMES,
    TO_6,
    SimulationConfig,
    behaviour_bouts,
    file_run,
    label_file_path,
    regime_config,
    simulate,
    simulate_larva,
    simulate_run,
)

FIM_OPTIONS = ReadOptions(framerate=30.0, pixelsize_um=100.0)
SHORT = SimulationConfig(duration_s=15.0, larvae=(3, 4))


@pytest.fixture(scope="module")
def runs() -> list:
    """Six default (60 s, 8-15 larvae) in-memory runs: the statistics tests share them."""
    config = SimulationConfig()
    return [simulate_run(np.random.default_rng([7, i]), config, {"id": f"run{i}"}) for i in range(6)]


def step_names(track) -> np.ndarray:
    assert all(len(step) == 1 for step in track.labels)  # one behaviour per step
    return np.array([step[0] for step in track.labels])


def bouts(track):
    """(name, first step, last step) of each run of identical labels."""
    names = step_names(track)
    change = np.flatnonzero(names[1:] != names[:-1]) + 1
    starts, ends = np.r_[0, change], np.r_[change, names.size] - 1
    return [(names[a], a, b) for a, b in zip(starts, ends)]


def _chord_angle(spine, a, b):
    v = spine[:, b] - spine[:, a]
    return np.arctan2(v[:, 1], v[:, 0])


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def bout_features(track, i: int, j: int) -> dict[str, float]:
    """Simple kinematic features of steps i..j measured from the (noisy) spines.

    forward / lateral: displacement of the middle point along / across the mean body axis
    (mm/s); length_ratio: shortest spine length over the track's median; head_bend: spread
    (90th - 10th percentile, rad) of the anterior-minus-posterior bend, which is large for
    head sweeps and cancels for a uniformly bent (C-shaped) body; head_speed: path length of
    the head sampled every 0.2 s, per s.
    """
    t, spine = track.t[i : j + 1], track.spine[i : j + 1]
    duration = t[-1] - t[0]
    k = spine.shape[1]
    mid = k // 2
    axis = (spine[:, -1] - spine[:, 0]).mean(axis=0)
    axis /= np.linalg.norm(axis)
    d = spine[-1, mid] - spine[0, mid]
    posterior = _wrap(_chord_angle(spine, 3, mid + 2) - _chord_angle(spine, 0, 3))
    anterior = _wrap(_chord_angle(spine, mid + 2, k - 1) - _chord_angle(spine, 3, mid + 2))
    asym = anterior - posterior
    grid = np.arange(t[0], t[-1] + 1e-9, 0.2)
    head = np.stack([np.interp(grid, t, spine[:, -1, c]) for c in (0, 1)], axis=1)
    return {
        "forward": float(d @ axis / duration),
        "lateral": float(abs(d[0] * -axis[1] + d[1] * axis[0]) / duration),
        "length_ratio": float(track.spine_lengths()[i : j + 1].min() / np.median(track.spine_lengths())),
        "head_bend": float(np.percentile(asym, 90) - np.percentile(asym, 10)),
        "head_speed": float(np.linalg.norm(np.diff(head, axis=0), axis=1).sum() / duration),
    }


# ----------------------------------------------------------------------------- behaviours


def test_every_behaviour_present_with_plausible_proportions(runs):
    counts = Counter(name for run in runs for track in run.tracks for name in step_names(track))
    total = sum(counts.values())
    fraction = {name: counts[name] / total for name in BEHAVIOURS_7}
    assert set(counts) == set(BEHAVIOURS_7)
    assert 0.45 < fraction["run_large"] < 0.7
    assert 0.1 < fraction["cast_large"] < 0.25
    assert 0.05 < fraction["stop_large"] + fraction["small_motion"] < 0.2
    assert max(fraction, key=fraction.get) == "run_large"
    assert min(fraction, key=fraction.get) == "roll_large"
    # rare but learnable: a few hundred roll steps in six files
    assert counts["roll_large"] > 200


def test_bout_durations_are_behaviour_specific(runs):
    durations: dict[str, list[float]] = {}
    for run in runs:
        for track in run.tracks:
            inner = bouts(track)[1:-1]  # the first and last bouts are cut by the track's ends
            for name, a, b in inner:
                durations.setdefault(name, []).append(track.t[b] - track.t[a])
    median = {name: np.median(v) for name, v in durations.items()}
    assert 2.0 < median["run_large"] < 6.0
    assert 0.8 < median["cast_large"] < 3.0
    assert 0.3 < median["hunch_large"] < 1.0
    assert median["hunch_large"] < median["back_large"] < median["run_large"]


def test_kinematics_match_each_behaviour(runs):
    features: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for track in run.tracks:
            for name, a, b in bouts(track):
                if track.t[b] - track.t[a] < 0.4:
                    continue
                for key, value in bout_features(track, a, b).items():
                    features.setdefault(key, {}).setdefault(name, []).append(value)
    median = {key: {name: np.median(v) for name, v in per.items()} for key, per in features.items()}

    def ranked(key):
        return sorted(median[key], key=median[key].get)

    assert ranked("forward")[-1] == "run_large"  # fastest forward along the body axis
    assert median["forward"]["run_large"] > 0.4  # mm/s
    assert ranked("forward")[0] == "back_large" and median["forward"]["back_large"] < -0.1
    assert ranked("length_ratio")[0] == "hunch_large"  # strongest contraction
    assert median["length_ratio"]["hunch_large"] < 0.85 < min(
        v for name, v in median["length_ratio"].items() if name != "hunch_large"
    )
    assert ranked("head_bend")[-1] == "cast_large"  # largest head sweeps
    assert ranked("lateral")[-1] == "roll_large"  # sideways
    assert median["lateral"]["roll_large"] > 5 * max(
        v for name, v in median["lateral"].items() if name != "roll_large"
    )
    assert ranked("head_speed")[0] == "stop_large"  # stillest
    # small motions move the head without moving the body
    assert median["head_speed"]["small_motion"] > 1.5 * median["head_speed"]["stop_large"]
    assert abs(median["forward"]["small_motion"]) < 0.1


def test_body_sizes_and_postures_are_plausible(runs):
    lengths = np.array([np.median(tr.spine_lengths()) for run in runs for tr in run.tracks])
    assert 2.3 < lengths.min() and lengths.max() < 5.3  # mm
    assert lengths.std() > 0.3  # varies per larva
    track = max(runs[0].tracks, key=lambda tr: tr.n_steps)
    assert track.n_points == 11
    # outline: a closed contour of 20-40 points around the spine, 0.3-0.6 mm wide in the middle
    outline = track.outline
    counts = np.isfinite(outline[:, :, 0]).sum(axis=1)
    assert 16 <= counts.min() and counts.max() <= 40
    centre = track.spine[:, 5]
    distance = np.linalg.norm(outline - centre[:, None, :], axis=2)
    assert 0.1 < np.nanmedian(np.nanmin(distance, axis=1)) < 0.35  # half-width at the middle


# ---------------------------------------------------------------------------- tracker


def test_frame_times_gaps_and_track_lengths(runs):
    rates = []
    for run in runs:
        ts = [track.t for track in run.tracks]
        for t in ts:
            dt = np.diff(t)
            assert np.all(dt > 0)
            assert np.allclose(t, np.round(t, 3), atol=1e-9, rtol=0)  # 1 ms, as trackers write
        interval = np.median(np.concatenate([np.diff(t) for t in ts]))
        rates.append(1.0 / interval)
        # jitter: intervals vary by a few % of the nominal interval, not more
        dt = np.concatenate([np.diff(t) for t in ts])
        regular = dt[dt < 1.5 * interval]
        assert 0.0 < regular.std() / interval < 0.1
        # dropped frames and gaps of several frames
        assert np.any(dt > 1.5 * interval)
        assert np.any(dt > 3.5 * interval)
        # larvae enter and leave: tracks of different lengths
        assert len({t.size for t in ts}) > 1
    assert all(10.0 <= r <= 30.5 for r in rates)
    assert max(rates) - min(rates) > 3.0  # each file has its own frame rate


def test_short_tracks_and_exact_frame_grid():
    config = SimulationConfig(duration_s=20.0, short_track_probability=1.0)
    rng = np.random.default_rng(3)
    lengths = [simulate_larva(rng, config, str(i), frame_rate_hz=25.0).n_steps for i in range(20)]
    assert 3 <= min(lengths) and max(lengths) <= 8
    fim = file_run(2, seed=5, fmt="fimtrack", config=SHORT)
    for track in fim.tracks:
        frames = track.t * 30.0
        assert np.allclose(frames, np.round(frames), atol=1e-9)  # no timestamps: exact grid
        assert track.outline is None
    assert [track.id for track in fim.tracks] == [str(i) for i in range(len(fim.tracks))]


def test_simulating_ten_larvae_for_a_minute_is_fast():
    config = SimulationConfig(larvae=(10, 10))
    start = time.process_time()
    run = simulate_run(np.random.default_rng(0), config, {"id": "x"}, frame_rate_hz=30.0)
    assert time.process_time() - start < 1.0
    assert len(run.tracks) == 10


# ---------------------------------------------------------------------------- no leak


def test_tracker_noise_does_not_depend_on_the_label():
    # Same seed, noise on or off: every draw is identical except the noise's scale, so the
    # difference is exactly the tracker noise, which must look the same under every label.
    quiet = SimulationConfig(tracker_noise_mm=(0.0, 0.0))
    noisy = SimulationConfig(tracker_noise_mm=(0.04, 0.04))
    residual: dict[str, list[np.ndarray]] = {}
    for i in range(4):
        a = simulate_run(np.random.default_rng([11, i]), quiet, {"id": "x"})
        b = simulate_run(np.random.default_rng([11, i]), noisy, {"id": "x"})
        for ta, tb in zip(a.tracks, b.tracks):
            assert ta.labels == tb.labels
            r = np.linalg.norm(tb.spine - ta.spine, axis=2).mean(axis=1)
            for name, value in zip(step_names(ta), r):
                residual.setdefault(name, []).append(value)
    overall = np.mean(np.concatenate([np.asarray(v) for v in residual.values()]))
    assert overall == pytest.approx(0.04 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh mean
    for name, values in residual.items():
        assert np.mean(values) == pytest.approx(overall, rel=0.1), name


def test_absolute_heading_and_plate_position_do_not_predict_the_label(runs):
    heading, x, names = [], [], []
    for run in runs:
        for track in run.tracks:
            axis = track.spine[:, -1] - track.spine[:, 0]
            heading.append(np.arctan2(axis[:, 1], axis[:, 0]))
            x.append(track.spine[:, 5, 0])
            names.append(step_names(track))
    heading, x, names = np.concatenate(heading), np.concatenate(x), np.concatenate(names)
    is_run = names == "run_large"
    overall = is_run.mean()
    quadrant = np.floor((heading + np.pi) / (np.pi / 2)).astype(int) % 4
    for q in range(4):
        assert abs(is_run[quadrant == q].mean() - overall) < 0.1
    left = x < np.median(x)
    assert abs(is_run[left].mean() - is_run[~left].mean()) < 0.1


def test_six_label_set_merges_small_motion_into_stop():
    seven = file_run(0, seed=2, fmt="spine", config=SHORT)
    six = file_run(0, seed=2, fmt="spine", config=SimulationConfig(duration_s=15.0, larvae=(3, 4), label_set="6"))
    for t7, t6 in zip(seven.tracks, six.tracks):
        assert np.array_equal(t7.spine, t6.spine)
        assert t6.labels == [(TO_6[step[0]],) for step in t7.labels]
    assert set(six.label_names) <= set(BEHAVIOURS_6)
    assert "small_motion" not in six.label_names


# ---------------------------------------------------------------------------- files


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_are_deterministic_and_independent_of_file_count(tmp_path):
    three = simulate(tmp_path / "a", 3, seed=4, config=SHORT)
    five = simulate(tmp_path / "b", 5, seed=4, config=SHORT)
    simulate(tmp_path / "c", 3, seed=4, config=SHORT)
    other = simulate(tmp_path / "d", 3, seed=5, config=SHORT)
    assert [p.relative_to(tmp_path / "a") for p in three] == [p.relative_to(tmp_path / "b") for p in five[:3]]
    a, b, c = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b"), _tree_bytes(tmp_path / "c")
    assert a == c  # same seed: identical bytes, README included
    for name, data in a.items():
        if name != "README.txt":
            assert b[name] == data, name  # file i does not depend on n_files
    assert not set(a) & set(_tree_bytes(tmp_path / "d")) - {"README.txt"}
    assert other[0].read_bytes() != three[0].read_bytes()


def test_layout_metadata_and_readme(tmp_path):
    paths = simulate(tmp_path, 5, seed=1, config=SHORT)
    rel = [p.relative_to(tmp_path).parts for p in paths]
    # formats cycle spine, trx, fimtrack; trackers alternate t5 / t15
    assert paths[0].suffix == ".spine" and rel[0][0] == "t5"
    assert paths[1].name == "trx.mat" and rel[1][0] == "t15" and len(rel[1]) == 5
    assert rel[2][0] == "fimtrack" and paths[2].name == f"{rel[2][1]}.csv"
    assert paths[3].suffix == ".spine" and rel[3][0] == "t15"
    assert paths[4].name == "trx.mat" and rel[4][0] == "t5"
    assert paths[0].with_suffix(".outline").is_file()
    assert (paths[1].parent / "trx.label").is_file()
    date_times = [read_run(p, FIM_OPTIONS).metadata["date_time"] for p in paths]
    assert len(set(date_times)) == 5
    spine_meta = read_run(paths[0]).metadata
    assert spine_meta["tracker"] == "t5" and spine_meta["genotype"] and spine_meta["protocol"]
    readme = (tmp_path / "README.txt").read_text()
    assert "framerate = 30 fps" in readme and "pixelsize_um = 100" in readme


def test_written_files_read_back_with_the_generated_labels(tmp_path):
    formats = ("spine", "trx", "fimtrack")
    paths = simulate(tmp_path, 3, seed=8, config=SHORT)
    for i, (path, fmt) in enumerate(zip(paths, formats)):
        expected = file_run(i, seed=8, fmt=fmt, config=SHORT)
        run = read_run(path, FIM_OPTIONS)
        label_path = label_file_path(path)
        label_file = read_label_file(label_path)
        assert label_file.names == list(BEHAVIOURS_7)
        labelled = attach_labels(run, label_file, label_path)  # checks the sha1 dependency
        assert [tr.id for tr in labelled.tracks] == [tr.id for tr in expected.tracks]
        for got, want in zip(labelled.tracks, expected.tracks):
            assert np.allclose(got.t, want.t, atol=1e-6, rtol=0)
            assert np.allclose(got.spine, want.spine, atol=1e-3, rtol=0)
            assert got.labels == want.labels
        if fmt == "trx":  # the behaviour flags inside trx.mat say the same
            for got, want in zip(run.tracks, expected.tracks):
                assert got.labels == want.labels
        if fmt == "spine":
            for got, want in zip(run.tracks, expected.tracks):
                assert np.allclose(got.outline, want.outline, atol=1e-3, equal_nan=True)


def test_cli_writes_six_label_files(tmp_path, capsys):
    code = main([
        "simulate", str(tmp_path), "--files", "2", "--seed", "3", "--duration", "8",
        "--larvae", "2-3", "--formats", "trx,spine", "--labels", "6",
    ])
    assert code == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    assert [p.suffix for p in printed] == [".mat", ".spine"]
    for path in printed:
        label_file = read_label_file(label_file_path(path))
        assert label_file.names == list(BEHAVIOURS_6)
        assert 2 <= len(label_file.tracks) <= 3


@pytest.mark.parametrize(
    "argument",
    [["--larvae", "5-2"], ["--formats", "spine,avi"], ["--labels", "5"], ["--files", "0"], ["--regime", "D"]],
)
def test_cli_rejects_bad_arguments(tmp_path, argument, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path), *argument])
    assert exit_info.value.code == 2
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------- regimes


def run_digest(run) -> str:
    """sha1 of every track's times, spine, outline and labels (exact bytes)."""
    h = hashlib.sha1()
    for track in run.tracks:
        h.update(track.t.tobytes())
        h.update(track.spine.tobytes())
        h.update("|".join(step[0] for step in track.labels).encode())
        if track.outline is not None:
            h.update(track.outline.tobytes())
    return h.hexdigest()


def test_default_regime_is_unchanged():
    # Digest taken from the simulator before the body/gait constants became SimulationConfig
    # fields and the regimes were added: the default config must still draw the same random
    # numbers in the same order and produce the same bytes (times, spines, outlines, labels).
    run = simulate_run(np.random.default_rng(7), SimulationConfig(duration_s=20, larvae=(3, 3)), {"id": "x"})
    assert run_digest(run) == "0d62cce7251340c9a77a2304ac9fd5dd4ebec527"


def _time_fractions(behaviours, bounds, t_end) -> np.ndarray:
    """Fraction of [0, t_end] s spent in each behaviour (BEHAVIOURS_7 order)."""
    spans = np.diff(np.clip(bounds, 0.0, t_end))
    return np.bincount(behaviours, weights=spans, minlength=7) / t_end


def test_bout_duration_scale_shifts_the_class_balance():
    run, cast, stop = 0, 1, 5
    t_end = 20000.0  # s: thousands of bouts
    default = _time_fractions(*behaviour_bouts(np.random.default_rng(1), 0.0, t_end), t_end)
    longer_runs = _time_fractions(
        *behaviour_bouts(np.random.default_rng(1), 0.0, t_end, duration_scale=(1.5, 0.7, 1, 1, 1, 1, 1)), t_end
    )
    longer_stops = _time_fractions(
        *behaviour_bouts(np.random.default_rng(1), 0.0, t_end, duration_scale=(0.7, 1.4, 1, 1, 1, 1.5, 1.3)), t_end
    )
    assert 0.55 < default[run] < 0.63
    assert longer_runs[run] > default[run] + 0.08 and longer_runs[cast] < default[cast] - 0.05
    assert longer_stops[run] < default[run] - 0.1
    assert longer_stops[cast] > default[cast] + 0.05 and longer_stops[stop] > default[stop] + 0.02
    # A track starts in the behaviour of the scaled chain's long-run time fractions (the first
    # bout is drawn from them), not of the unscaled one (run 59 %).
    scale = (3.0, 1, 1, 1, 1, 1, 1)
    long_run = _time_fractions(*behaviour_bouts(np.random.default_rng(2), 0.0, t_end, duration_scale=scale), t_end)
    rng = np.random.default_rng(3)
    first = np.array([behaviour_bouts(rng, 0.0, 0.01, duration_scale=scale)[0][0] for _ in range(2000)])
    assert long_run[run] > 0.75
    assert np.mean(first == run) == pytest.approx(long_run[run], abs=0.04)


def test_simulated_labels_follow_the_configured_bout_durations():
    def run_fraction(config):
        run = simulate_run(np.random.default_rng(5), config, {"id": "x"})
        return np.mean(np.concatenate([step_names(track) for track in run.tracks]) == "run_large")

    base = SimulationConfig(duration_s=60.0, larvae=(6, 6))
    longer = SimulationConfig(duration_s=60.0, larvae=(6, 6), bout_duration_scale=(3.0, 1, 1, 1, 1, 1, 1))
    assert run_fraction(longer) > run_fraction(base) + 0.1


@pytest.mark.parametrize(
    "field, value",
    [
        ("stride_hz", (1.5, 1.0)),
        ("stride_length", (-0.1, 0.3)),
        ("length_oscillation", (0.02, 1.0)),
        ("wave_depth", (0.4, 0.2)),
        ("head_sway", (-0.1, 0.1)),
        ("cast_frequency", (0.9, 0.4)),
        ("bend_start", 1.0),
        ("bend_start", -0.1),
        ("bend_exponent", 0.0),
        ("cast_amplitude", -0.5),
        ("bout_duration_scale", (1.0,) * 6),
        ("bout_duration_scale", (1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0)),
    ],
)
def test_invalid_body_and_gait_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SimulationConfig(**{field: value})


def test_regimes_are_named_and_unknown_ones_refused():
    assert set(REGIMES) == {"A", "B", "C"}
    assert regime_config("A") == SimulationConfig()
    assert regime_config("B", duration_s=5.0).duration_s == 5.0
    assert regime_config("C", n_spine_points=9).n_spine_points == 9  # overrides win
    with pytest.raises(ValueError, match="'D'.*A, B, C"):
        regime_config("D")


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_each_regime_simulates_within_its_ranges(name):
    config = regime_config(name, duration_s=20.0, larvae=(3, 4))
    lo_fps, hi_fps = config.frame_rate_hz
    lo_mm, hi_mm = config.body_length_mm
    for seed in range(3):
        run = simulate_run(np.random.default_rng([13, seed]), config, {"id": "x"})
        intervals = np.concatenate([np.diff(track.t) for track in run.tracks])
        assert 0.97 * lo_fps < 1.0 / np.median(intervals) < 1.03 * hi_fps
        for track in run.tracks:
            assert track.n_points == config.n_spine_points
            if track.n_steps >= 20:  # a few frames may all fall in a hunch
                assert 0.9 * lo_mm < np.median(track.spine_lengths()) < 1.1 * hi_mm
    # FIMTrack files keep their 30 fps in every regime
    fim = file_run(0, seed=1, fmt="fimtrack", config=config)
    assert all(np.allclose(track.t * 30.0, np.round(track.t * 30.0), atol=1e-9) for track in fim.tracks)


def _run_bout_shapes(config) -> tuple[float, float]:
    """Median over run bouts (steps 0.3 s away from their ends) of the spine length's relative
    SD and of the longest-over-shortest segment ratio."""
    run = simulate_run(np.random.default_rng(17), config, {"id": "x"})
    spread, unevenness = [], []
    for track in run.tracks:
        lengths = track.spine_lengths()
        segments = np.linalg.norm(np.diff(track.spine, axis=1), axis=2)
        for name, a, b in bouts(track):
            inner = (track.t >= track.t[a] + 0.3) & (track.t <= track.t[b] - 0.3)
            if name != "run_large" or inner.sum() < 10:
                continue
            spread.append(lengths[inner].std() / lengths[inner].mean())
            unevenness.append(np.median(segments[inner].max(axis=1) / segments[inner].min(axis=1)))
    assert len(spread) >= 3
    return float(np.median(spread)), float(np.median(unevenness))


def test_no_peristalsis_keeps_the_running_body_even():
    # Noise-free, so that the spine is the body model's.
    base = {"duration_s": 30.0, "larvae": (4, 4), "tracker_noise_mm": (0.0, 0.0)}
    spread_a, uneven_a = _run_bout_shapes(regime_config("A", **base))
    spread_flat, uneven_flat = _run_bout_shapes(
        regime_config("A", length_oscillation=(0.0, 0.0), wave_depth=(0.0, 0.0), **base)
    )
    assert spread_a > 0.01  # the body length oscillates a few % over a stride
    assert spread_flat < 0.1 * spread_a
    assert uneven_a > 1.2  # the wave compresses the segments it passes
    assert uneven_flat < 1.01


def test_cli_regime_sets_the_tracker(tmp_path, capsys):
    code = main(["simulate", str(tmp_path), "--files", "1", "--duration", "5", "--larvae", "2", "--regime", "B"])
    assert code == 0
    (path,) = [Path(line) for line in capsys.readouterr().out.split()]
    run = read_run(path)
    assert {track.n_points for track in run.tracks} == {7}
