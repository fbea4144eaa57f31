"""LarvaTagger .label files: absurd input is one line naming the file (issue 20), never a
traceback; a good file still reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maggotflow.formats.label import read_label_file
from maggotflow.tracks import TrackDataError


def label_text(data: list[dict], units: str = "s") -> str:
    doc = {"metadata": {"id": "20200101_120000"}, "units": {"t": units}, "labels": ["run", "cast"], "data": data}
    return json.dumps(doc)


def refused(tmp_path: Path, text: str, *fragments: str) -> str:
    path = tmp_path / "reference labels.label"
    path.write_text(text)
    with pytest.raises(TrackDataError) as info:
        read_label_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < len(str(path)) + 200, message  # quoted values are shortened
    return message


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_json_nested_too_deeply(tmp_path, opening, closing):
    depth = 100_000
    text = '{"metadata": {"id": "x"}, "labels": ["run"], "data": ' + opening * depth + "1" + closing * depth + "}"
    message = refused(tmp_path, text)
    assert message.endswith("is not a LarvaTagger .label file: its JSON is nested too deeply")


def test_times_going_backwards_name_the_larva(tmp_path):
    data = [
        {"id": "1", "t": [0.0, 0.1, 0.2], "labels": ["run", "run", "cast"]},
        {"id": "7", "t": [0.0, 0.1, 0.5, 0.4, 0.6], "labels": ["run"] * 5},
    ]
    message = refused(tmp_path, label_text(data))
    assert message.endswith("larva 7: times go backwards at step 3 (0.400 s after 0.500 s)")


def test_times_in_ms_going_backwards(tmp_path):
    data = [{"id": "3", "t": [0, 100, 50], "labels": ["run"] * 3}]
    refused(tmp_path, label_text(data, units="ms"), "larva 3: times go backwards at step 2 (0.050 s after 0.100 s)")


def test_equal_neighbouring_times_are_kept(tmp_path):
    """Rounded to 1 ms, two close track times may become equal: not backwards."""
    path = tmp_path / "rounded.label"
    path.write_text(label_text([{"id": "2", "t": [0.0, 0.001, 0.001, 0.002], "labels": ["run"] * 4}]))
    t, steps = read_label_file(path).tracks["2"]
    np.testing.assert_array_equal(t, [0.0, 0.001, 0.001, 0.002])
    assert steps == [("run",)] * 4


@pytest.mark.parametrize(
    "times, fragment",
    [
        ([0.0, "0.1"], "larva 1: 't' must be a list of numbers (s)"),
        ([[0.0], [0.1, 0.2]], "larva 1: 't' must be a list of numbers (s)"),  # ragged
        ([0.0, None], "larva 1: 't' must be a list of numbers (s)"),
        ([True, False], "larva 1: 't' must be a list of numbers (s)"),
        ([0.0, 10**30], "larva 1: 't' must be a list of numbers (s)"),  # beyond int64
        ([0.0, float("nan")], "larva 1: 't' has NaN or infinite times"),
        ([0.0, float("inf")], "larva 1: 't' has NaN or infinite times"),
    ],
    ids=["string", "ragged", "null", "booleans", "huge-integer", "nan", "infinity"],
)
def test_absurd_times(tmp_path, times, fragment):
    refused(tmp_path, label_text([{"id": "1", "t": times, "labels": ["run", "run"]}]), fragment)


def test_integer_with_thousands_of_digits(tmp_path):
    text = label_text([{"id": "1", "t": [0.0], "labels": ["run"]}]).replace('"1"', "1" * 5000)
    refused(tmp_path, text, "is not valid JSON (Exceeds the limit (4300 digits) for integer string conversion)")


def test_big_label_value_is_quoted_short(tmp_path):
    value = [[[[[[["run"] * 1000]]]]]]
    refused(tmp_path, label_text([{"id": "1", "t": [0.0], "labels": [value]}]),
            "larva 1, step 0: label [[[[[...]]]]] is not a name or a list of names")


def test_odd_digit_ids_do_not_crash(tmp_path):
    path = tmp_path / "ids.label"
    path.write_text(label_text([{"id": "²", "t": [0.0], "labels": ["run"]}, {"id": "0012", "t": [0.0], "labels": ["cast"]}]))
    assert list(read_label_file(path).tracks) == ["²", "12"]


def test_good_file_still_reads(tmp_path):
    path = tmp_path / "good.label"
    path.write_text(label_text([{"id": "4", "t": [0.0, 0.033, 0.067], "labels": ["run", ["run", "cast"], []]}]))
    t, steps = read_label_file(path).tracks["4"]
    np.testing.assert_allclose(t, [0.0, 0.033, 0.067])
    assert steps == [("run",), ("run", "cast"), ()]
