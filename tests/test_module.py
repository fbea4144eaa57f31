"""maggotflow reused the way Snakemake workflows are: included by another workflow with the
`module` directive, formatted as `snakefmt` wants, described for the workflow catalog.

The module tests build a bare project folder holding only an including Snakefile, its own
config file and simulated track files, and point the module at this checkout's Snakefile:

    configfile: "my_config.yaml"
    module maggotflow:
        snakefile: "<checkout>/Snakefile"
        config: config
    use rule * from maggotflow as mf_*

Tagging needs a model folder (the workflow fingerprints it before planning): a tiny tagger
is trained once for the module (a few seconds).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maggotflow.dataset import build_dataset
from maggotflow.formats import ReadOptions
from maggotflow.isolation import isolate
from maggotflow.simulation import SimulationConfig, label_file_path, simulate
from maggotflow.training import TrainConfig, train_tagger

from helpers import SNAKEMAKE, SPEC, local_env

REPO = Path(__file__).resolve().parents[1]
SNAKEFMT = Path(sys.executable).with_name("snakefmt")
SMALL = SimulationConfig(duration_s=10, larvae=(2, 3))

INCLUDING_SNAKEFILE = f"""\
configfile: "my_config.yaml"


module maggotflow:
    snakefile:
        {str(REPO / "Snakefile")!r}
    config:
        config


use rule * from maggotflow as mf_*


# The including workflow's config after the module is loaded (maggotflow works on a copy).
print("including config keys:", " ".join(sorted(config)))
"""

# The including workflow's own settings: maggotflow's config/config.yaml gives the rest.
MY_CONFIG = """\
inputs:
  track_dir: data/train
predict_dir: data/screen
read:
  pixelsize_um: 100
device: cpu
predict:
  files_per_job: 2
"""


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory, one_torch_thread) -> Path:
    """A tagger trained for a few steps on 3 simulated files (not meant to be accurate)."""
    root = tmp_path_factory.mktemp("module-tagger")
    sim = SimulationConfig(duration_s=20, larvae=(2, 3))
    read = ReadOptions(framerate=sim.fimtrack_frame_rate_hz, pixelsize_um=sim.fimtrack_pixelsize_um)
    intermediates = []
    for i, track in enumerate(simulate(root / "sim", 3, seed=5, config=sim)):
        isolate(track, root / "iso" / f"{i}.h5", label_file_path(track), read)
        intermediates.append(root / "iso" / f"{i}.h5")
    build_dataset(intermediates, root / "dataset.h5", spec=SPEC, max_samples=600, seed=0).close()
    config = TrainConfig(stage1_steps=2, stage2_steps=2, batch_size=16, eval_every=10, device="cpu",
                         latent_dim=4, filters=(8, 8, 4, 4, 4, 4))
    train_tagger(root / "dataset.h5", root / "tagger", None, config, log=lambda message: None)
    return root / "tagger"


@pytest.fixture
def including(tmp_path) -> Path:
    """A bare folder with a workflow that includes maggotflow as a module: 6 labelled files
    to train on, 3 files to tag (2 per job: 2 prediction jobs)."""
    (tmp_path / "Snakefile").write_text(INCLUDING_SNAKEFILE)
    (tmp_path / "my_config.yaml").write_text(MY_CONFIG)
    simulate(tmp_path / "data" / "train", 6, seed=2, config=SMALL)
    simulate(tmp_path / "data" / "screen", 3, seed=3, config=SMALL)
    return tmp_path


def snakemake(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`snakemake ARGS --cores 2` in `folder` (its own Snakefile); stdout holds stderr too."""
    cmd = [str(SNAKEMAKE), *args, "--cores", "2"]
    return subprocess.run(cmd, cwd=folder, env=local_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def planned(output: str) -> dict[str, int]:
    """{rule: jobs} of the first 'Job stats' table of a run's output."""
    table = output.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_module_dry_run_plans_the_predict_jobs(including, tiny_tagger):
    result = snakemake(including, "-n", "mf_predict", "--config", f"model={tiny_tagger}")
    assert result.returncode == 0, result.stdout[-5000:]
    jobs = planned(result.stdout)
    # 3 files, predict.files_per_job 2 from my_config.yaml (maggotflow's default is 200)
    assert jobs == {"mf_predict_shard": 2, "mf_predict_summary": 1, "mf_screen_summary": 1, "mf_predict": 1}
    # The including workflow's config is its own: the module's defaults went to a copy.
    keys = "including config keys: " + " ".join(sorted([*yaml.safe_load(MY_CONFIG), "model"]))
    assert keys in result.stdout
    # Nothing ran and nothing was trained.
    assert not (including / "results" / "models").exists()


def test_module_default_target_is_maggotflows_training_and_evaluation(including, tiny_tagger):
    result = snakemake(including, "-n", "--config", f"model={tiny_tagger}")
    assert result.returncode == 0, result.stdout[-5000:]
    jobs = planned(result.stdout)
    # 6 files: 1 held out (evaluation.heldout_fraction 0.2 of config/config.yaml), 5 trained on
    assert jobs["mf_isolate"] == 5 and jobs["mf_train_model"] == 1 and jobs["mf_evaluate_heldout"] == 1
    assert jobs["mf_all"] == 1 and jobs["mf_predict_shard"] == 3  # held-out file + predict_dir's 2 jobs


def test_module_settings_are_checked_and_presets_found_in_maggotflow(including, tiny_tagger):
    # config/config.schema.yaml and config/taggers/ are maggotflow's, not the including folder's
    typo = snakemake(including, "-n", "mf_predict", "--config", "trian=3")
    assert typo.returncode != 0 and "trian: unknown key; did you mean train?" in typo.stdout
    preset = snakemake(including, "-n", "--config", "tagger=nope", f"model={tiny_tagger}")
    assert preset.returncode != 0
    assert f"tagger=nope: no such preset in {REPO / 'config' / 'taggers'}" in preset.stdout
    ok = snakemake(including, "-n", "mf_train", "--config", "tagger=20230129", f"model={tiny_tagger}")
    assert ok.returncode == 0, ok.stdout[-5000:]


@pytest.mark.slow
def test_module_predict_tags_the_folder(including, tiny_tagger):
    """The jobs run under the module too: job scripts and their config are maggotflow's."""
    result = snakemake(including, "mf_predict", "--config", f"model={tiny_tagger}")
    assert result.returncode == 0, result.stdout[-5000:]
    labels = sorted((including / "results" / "predict").glob("screen-*/labels/**/*.label"))
    assert len(labels) == 3


# ------------------------------------------------------------------------ snakefmt


def test_snakefile_and_rules_are_snakefmt_clean():
    if shutil.which(str(SNAKEFMT)) is None:
        pytest.skip(f"snakefmt is not installed in this environment ({SNAKEFMT}): pip install -e '.[test]'")
    # run from the repository root: snakefmt reads [tool.snakefmt] of pyproject.toml
    cmd = [str(SNAKEFMT), "--check", "--diff", "Snakefile", "workflow/rules/"]
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, f"{shlex.join(cmd[:1] + cmd[3:])} would reformat:\n{result.stdout[-5000:]}"


# ------------------------------------------------------------------------ workflow catalog


def test_catalog_file_describes_usage_with_the_readmes_flags():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert usage["mandatory-flags"]["desc"].strip()
    flags = usage["mandatory-flags"]["flags"]
    flags = flags if isinstance(flags, list) else [flags]
    readme = (REPO / "README.md").read_text()
    options = [word for flag in flags for word in shlex.split(flag) if word.startswith("--")]
    assert options and all(option in readme for option in options), options
    deployment = usage["software-stack-deployment"]
    assert deployment["conda"] is True and (REPO / "envs" / "maggotflow.yaml").is_file()
    assert all(isinstance(value, bool) for value in deployment.values())
    assert usage["report"] is True and "--report" in readme
    assert (REPO / "config" / "README.md").is_file()  # the catalog shows it as the settings' page
