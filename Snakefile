# maggotflow: tag every time step of every larva with a MaggotUBA-style tagger.
#
#   isolate (one job per track file) -> dataset, pretrain (per window) -> train_model (per
#     model: window, member) -> tagger -> predict_shard (jobs of predict.files_per_job
#     files; run `heldout` for the evaluation files) -> predict_summary -> screen_summary,
#     evaluate -> report_overview, ethograms -> report
#
# Targets: all (default: train + held-out evaluation + report material), train, evaluate,
# predict (--config predict_dir=DIR [model=PATH]: tags a folder, never trains, and
# summarises it), summary (the screen summary of predict_dir's run), report (then
# `snakemake --report results/report.html`, opening on overview.rst once it is written).
# Settings: config/config.yaml, explained in config/README.md; tagger presets: --config tagger=NAME (config/taggers/, presets.smk;
# ensembles are several models, see train.smk); decisions in workflow/rules/common.smk,
# rules in workflow/rules/, thin job scripts in workflow/scripts/.

import copy
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, update_config, validate

from maggotflow.configcheck import check_config_or_exit

min_version("9.20")


# maggotflow's own files (default config, schema, presets) are found next to this Snakefile,
# not in workflow.basedir: that is the main Snakefile's folder, which is another workflow's
# when maggotflow is used with the `module` directive (docs: config/README.md). Rules,
# scripts, envs and the report are found by Snakemake itself, relative to their own file.
MAGGOTFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=False))
if not (MAGGOTFLOW_DIR / "Snakefile").is_file():
    raise WorkflowError(
        f"maggotflow from {MAGGOTFLOW_DIR}: not a local folder; give the module the path of the Snakefile "
        "of a clone of the repository (its job scripts, config and presets are read from there)"
    )
AS_MODULE = Path(workflow.main_snakefile).resolve() != (MAGGOTFLOW_DIR / "Snakefile").resolve()

# Run directly: the working folder's config/config.yaml, else the one next to this Snakefile
# (so that `snakemake -s /path/to/maggotflow/Snakefile` works from any folder). As a module:
# always maggotflow's own (the including workflow's config/config.yaml is its own business).
BASE_CONFIG = "config/config.yaml"
if AS_MODULE or not Path(BASE_CONFIG).is_file():
    BASE_CONFIG = str(MAGGOTFLOW_DIR / BASE_CONFIG)


GIVEN_CONFIG = copy.deepcopy(config)  # a module's `config:` (the configfile directive skips it)


configfile: BASE_CONFIG


# The user's own settings, which win over a tagger preset (presets.smk): --config and
# --configfile; as a module, the config the including workflow gives (none: --config, as
# Snakemake does), laid over maggotflow's config/config.yaml in a copy (so that defaults and
# presets never change the including workflow's config).
USER_CONFIG = workflow.config_settings.overwrite_config
if AS_MODULE:
    USER_CONFIG = GIVEN_CONFIG or USER_CONFIG
    with open(BASE_CONFIG, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    update_config(config, copy.deepcopy(USER_CONFIG))


include: "workflow/rules/presets.smk"


# One line per unknown key (with its nearest name) or bad value; then validate fills in defaults.
check_config_or_exit(config, MAGGOTFLOW_DIR / "config/config.schema.yaml")
validate(config, "config/config.schema.yaml")


# The report's landing page: the one `snakemake report` wrote from the results (numbers and
# tables), else the generic description. (Absolute: `report:` paths are joined to this
# file's folder, the generated page is in the working folder.)
OVERVIEW = Path("results/report/overview.rst")


report: str(OVERVIEW.resolve()) if OVERVIEW.is_file() else "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/isolate.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        all_targets,


# The console hooks and the handlers are the main workflow's: as a module, maggotflow prints
# no end-of-run lines (Snakemake registers a module's onsuccess/onerror nowhere anyway).
if not AS_MODULE:
    use_console_hooks()


# The handlers only print (Snakemake owns the books: they never write, delete or force an output).
onsuccess:
    print_failed_files(WORKFLOW_START)
    print_prediction_state()
    print_produced()


onerror:
    print_failed_files(WORKFLOW_START)
    print_prediction_state()
