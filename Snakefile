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

from pathlib import Path

from snakemake.utils import min_version, validate

from maggotflow.configcheck import check_config_or_exit

min_version("9.20")


# The working folder's config/config.yaml, else the one next to this Snakefile (so that
# `snakemake -s /path/to/maggotflow/Snakefile` works from any folder). Everything else
# (schema, presets, rules, scripts, envs, report) is found next to the Snakefile.
BASE_CONFIG = "config/config.yaml"
if not Path(BASE_CONFIG).is_file():
    BASE_CONFIG = str(Path(workflow.basedir) / BASE_CONFIG)


configfile: BASE_CONFIG


include: "workflow/rules/presets.smk"


# One line per unknown key (with its nearest name) or bad value; then validate fills in defaults.
check_config_or_exit(config, Path(workflow.basedir) / "config/config.schema.yaml")
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


use_console_hooks()


# The handlers only print (Snakemake owns the books: they never write, delete or force an output).
onsuccess:
    print_failed_files(WORKFLOW_START)
    print_prediction_state()
    print_produced()


onerror:
    print_failed_files(WORKFLOW_START)
    print_prediction_state()
