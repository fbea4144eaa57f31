"""The configuration check (maggotflow.configcheck): every mistake, one line each, in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from maggotflow.configcheck import ConfigError, check_config, check_config_or_exit, config_errors

SCHEMA = Path(__file__).resolve().parents[1] / "config/config.schema.yaml"


def test_every_unknown_key_and_bad_value_is_reported_at_once():
    config = {"predcit_dir": "x", "train": {"stage1_step": 10, "stage2_steps": "many"}}
    with pytest.raises(SystemExit) as stopped:
        check_config_or_exit(config, SCHEMA)
    assert str(stopped.value).splitlines() == [
        "config: predcit_dir: unknown key; did you mean predict_dir? (the keys: config/README.md)",
        "config: train.stage1_step: unknown key; did you mean train.stage1_steps? (the keys: config/README.md)",
        "config: train.stage2_steps='many': must be an integer",
    ]


def test_bad_values_of_several_sections_and_keys_in_lists():
    config = {"device": "gpu", "threads": {"train": 0},
              "ensemble": {"members": [{"window": 1, "count": 1, "cuont": 2}]}}
    assert config_errors(config, SCHEMA) == [
        "ensemble.members.0.cuont: unknown key; did you mean ensemble.members.0.count? (the keys: config/README.md)",
        "device='gpu': must match ^(auto|cpu|cuda|cuda:[0-9]+)$",
        "ensemble.members.0.window=1: must be >= 2",
        "threads.train=0: must be >= 1",
    ]


def test_an_unknown_key_is_not_reported_again_as_a_bad_section():
    # ensemble is "object or null" with closed properties: its unknown key is one mistake
    config = {"ensemble": {"members": [{"window": 20, "count": 2}], "bootstrp": False}}
    assert config_errors(config, SCHEMA) == [
        "ensemble.bootstrp: unknown key; did you mean ensemble.bootstrap? (the keys: config/README.md)"]


def test_a_valid_configuration_passes():
    config = {"train": {"stage1_steps": 10}, "device": "cpu"}
    assert config_errors(config, SCHEMA) == []
    check_config(config, SCHEMA)
    assert check_config_or_exit(config, SCHEMA) is config
    with pytest.raises(ConfigError):
        check_config({"device": 3}, SCHEMA)
