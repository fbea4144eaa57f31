# Tagger presets: `--config tagger=<name>` layers config/taggers/<name>.yaml over
# config/config.yaml. Precedence, lowest first: config/config.yaml < the preset < your
# --configfile files < --config (as a module: < the config the including workflow gives).
# So a preset fixes the tagger's design, and anything you give explicitly (e.g. a smaller
# budget for a trial run) still wins.

from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

PRESET_DIR = MAGGOTFLOW_DIR / "config" / "taggers"  # MAGGOTFLOW_DIR: the Snakefile's folder (not workflow.basedir)


def apply_preset(config, name):
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise WorkflowError(f"tagger={name}: no such preset in {PRESET_DIR} (known: {known})")
    with open(path, encoding="utf-8") as f:
        preset = yaml.safe_load(f) or {}
    update_config(config, preset)
    update_config(config, USER_CONFIG)  # the user's own settings win (Snakefile: --config, or a module's config)


if config.get("tagger") is not None:
    apply_preset(config, str(config["tagger"]))
    config["tagger"] = str(config["tagger"])  # --config tagger=20230129 arrives as a number
