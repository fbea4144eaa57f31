"""The report's landing page (maggotflow.report.overview) as Snakemake's report renders it.

Snakemake renders the page with jinja2 then docutils (writer "html") and inserts the HTML in
its template; these tests do the same, without a workflow run (the full report is checked in
tests/test_workflow.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import jinja2
from docutils.core import publish_parts

from maggotflow.report import PAGE_STYLE, RULE_GRAPH_NOTE, overview, write_overview

SETTINGS = {"track_dir": "data/train", "evaluation": "8 held-out files", "pretrain_steps": 20,
            "stage1_steps": 10, "stage2_steps": 10, "labels": None}
METRICS = {"macro_f1": 0.9, "accuracy": 0.95, "n_steps": 100, "files": ["a.label"], "labels": ["run", "cast"],
           "per_label": {"run": {"precision": 1, "recall": 0.9, "f1": 0.95, "support": 60},
                         "cast": {"precision": 0.8, "recall": 1, "f1": 0.89, "support": 40}}}
PER_FILE = [{"reference": "/d/a.label", "macro_f1": "0.9", "accuracy": "0.95", "n_steps": "100"}]
BEHAVIOUR = [{"label": "run", "reference_fraction": "0.6", "predicted_fraction": "0.55", "reference_bouts": "3",
              "predicted_bouts": "4", "reference_median_bout_s": "2.5", "predicted_median_bout_s": "2.0"}]
SIMULATED_TAGGER = {"thresholds": {"file": 3.0, "larva": 4.0, "larva_per_s": 10.0},
                    "training": {"files": 24, "simulated_files": 24}}


def page(**kwargs) -> str:
    return overview(metrics=METRICS, per_file=PER_FILE, behaviour=BEHAVIOUR, provenance={}, settings=SETTINGS,
                    **kwargs)


def rendered(tmp_path, text: str) -> str:
    """The HTML Snakemake's report inserts for the page (snakemake.report: jinja2, then docutils)."""
    write_overview(tmp_path / "overview.rst", text)
    rst = jinja2.Environment().from_string((tmp_path / "overview.rst").read_text()).render()
    return publish_parts(rst, writer="html")["html_body"]


def test_warnings_are_framed_admonitions(tmp_path):
    html = rendered(tmp_path, page(simulated=True, domain=SIMULATED_TAGGER))
    assert "System Message" not in html
    # Both warnings (simulated data, a tagger trained on simulated larvae) are docutils admonitions ...
    assert html.count('<div class="admonition warning">') == 2
    assert html.count('admonition-title">Warning</p>') == 2
    # ... which the page's own style frames (Snakemake's stylesheet has no rule for them).
    assert html.index("<style>") < html.index('<div class="admonition warning">')
    style = html[html.index("<style>"):html.index("</style>")]
    assert ".prose .admonition {" in style and "border-left" in style
    assert ".prose .admonition.warning," in style and ".prose .admonition.warning .admonition-title" in style


def test_the_page_uses_the_width_beside_the_rule_graph(tmp_path):
    html = rendered(tmp_path, page())
    style = html[html.index("<style>"):html.index("</style>")]
    assert ".prose.max-w-lg { max-width: none; }" in style
    assert html.index("<style>") < html.index("Held-out macro-F1")  # the style comes first, once
    assert html.count("<style>") == 1 and PAGE_STYLE in page()
    # The selector is the one of the installed Snakemake's template (its landing page column).
    template = resources.files("snakemake.report.html_reporter") / "template/components/content.js"
    assert '"prose prose-sm max-w-lg"' in template.read_text()


def test_several_runs_explain_the_rule_graph(tmp_path):
    assert RULE_GRAPH_NOTE not in page(runs=["heldout"])
    text = page(runs=["heldout", "new_experiments-103f88aa"])
    assert RULE_GRAPH_NOTE in text
    assert '<tt class="docutils literal">screen_summary</tt>' in rendered(tmp_path, text)


def test_snakemake_report_draws_a_rule_once_per_level_of_the_job_graph():
    """Why the note: Snakemake's report (rulegraph_spec) keeps one job per rule and toposort
    level, so two screen_summary jobs at different depths are two nodes. If this fails,
    Snakemake draws each rule once and RULE_GRAPH_NOTE can go."""
    from snakemake.report.rulegraph_spec import rulegraph_spec

    class Job:  # hashable, as Snakemake's jobs
        def __init__(self, rule):
            self.rule = SimpleNamespace(name=rule)

    tagger, heldout_summary = Job("tagger"), Job("predict_summary")
    heldout_screen, other_screen = Job("screen_summary"), Job("screen_summary")  # held-out run, a run on disk
    report = Job("report")
    levels = [[tagger, other_screen], [heldout_summary], [heldout_screen], [report]]
    dependencies = {tagger: [], other_screen: [], heldout_summary: [tagger], heldout_screen: [heldout_summary],
                    report: [heldout_screen, other_screen]}
    dag = SimpleNamespace(toposorted=lambda: levels, dependencies=dependencies)
    spec, _, _ = rulegraph_spec(dag)
    assert [node["rule"] for node in spec["nodes"]].count("screen_summary") == 2


def test_settings_from_config_describe_the_held_out_files_and_the_budget():
    import yaml

    from maggotflow.report import settings_from_config

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())
    config["inputs"]["track_dir"] = "data/train"
    settings = settings_from_config(config, models=3)
    assert settings["evaluation"] == f"{config['evaluation']['heldout_fraction']:g} of the input files, drawn by a " \
        "seeded hash"
    assert (settings["track_dir"], settings["data_folders"], settings["models"]) == ("data/train", ["data/train"], 3)
    assert settings["pretrain_steps"] == config["pretrain"]["steps"]
    config["evaluation"]["track_dir"] = "data/heldout"
    settings = settings_from_config(config, models=1)
    assert settings["evaluation"] == "a separate folder of labelled files, data/heldout"
    assert settings["data_folders"] == ["data/train", "data/heldout"]
    assert "Training data:" in overview(metrics=METRICS, per_file=PER_FILE, behaviour=BEHAVIOUR, provenance={},
                                        settings=settings)
