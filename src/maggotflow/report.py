"""The landing page of `snakemake --report`: what was trained, how well it tags held-out files.

Snakemake renders the workflow's `report:` text (reStructuredText) with jinja2 but cannot read
result files, so the workflow writes this page (`write_overview`, rule `report_overview`)
from the results and the Snakefile points its `report:` directive at it once it exists. The
page opens on the held-out macro-F1 and accuracy, then lists the data, the tagger and its
budget, and renders the evaluation tables (3 decimals). Figures stay in their report
categories (Training, Evaluation, Ethograms, Screen summary).

Simulated data (`maggotflow simulate` writes a README.txt at the top of its folder, recognised
by `maggotflow.sim.readme.is_simulator_readme`) get a warning that the figures do not carry over to
real recordings; `is_simulated` is also the test of `maggotflow.domain` (a tagger trained on
simulated files only flags every file that is not).

"What was trained" lists the candidates the tagger was chosen from (`candidate_lines`:
network, boosting, combined, with their validation figures and training times) and which
was kept.

Snakemake's report shows this page in a column 32 rem wide (its template's "prose max-w-lg")
beside the rule graph, and its stylesheet (Tailwind) gives docutils' admonitions no style, so a
warning read as a plain word "Warning". `PAGE_STYLE`, a `<style>` element at the top of the
page (Snakemake renders it with docutils, raw HTML allowed, and inserts the HTML as it is),
lets the page use the width the rule graph leaves and frames the warnings. It applies while
the page is on screen (it goes with it).

"Prediction runs" lists the runs whose screen summaries the report shows; with more than one,
it says why the rule graph draws `screen_summary` more than once (`RULE_GRAPH_NOTE`): it is
how Snakemake draws jobs of one rule at different depths, not a second rule.

The "Domain check" section says what the tagger's domain reference is (`tagger_domain`: its
thresholds, whether it was trained on simulated data only, or that it has none) and how many
files of each prediction run were judged unlike its training data (`run_domain_counts`,
from the run's screen summary).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from maggotflow import tsv
from maggotflow.atomic import write_text_atomic
from maggotflow.runtables import DOMAIN_CHECK_KEY
from maggotflow.sim.readme import README_NAME, is_simulator_readme

# See the module doc. Selectors: the page's container in Snakemake 9's report template
# (content.js: className "prose prose-sm max-w-lg") and docutils' admonitions (html4css1
# writer: div.admonition.warning > p.admonition-title). Checked in tests/test_report.py.
PAGE_STYLE = """\
.. raw:: html

   <style>
   .prose.max-w-lg { max-width: none; }
   .prose .admonition { margin: 1em 0; padding: 0.6em 1em; border-left: 4px solid #6b7280;
     border-radius: 0.25rem; background: #f3f4f6; }
   .prose .admonition > p { margin: 0.3em 0; }
   .prose .admonition .admonition-title { font-weight: 700; }
   .prose .admonition.warning, .prose .admonition.caution, .prose .admonition.attention {
     border-left-color: #d97706; background: #fffbeb; }
   .prose .admonition.warning .admonition-title { color: #b45309; }
   .prose .admonition.danger, .prose .admonition.error { border-left-color: #dc2626; background: #fef2f2; }
   </style>
"""


# Why the report's rule graph, beside this page, draws screen_summary more than once when the
# page lists several runs (Snakemake's rulegraph_spec: one node per rule and toposort level;
# tests/test_report.py checks that it still does).
RULE_GRAPH_NOTE = (
    "The rule graph draws ``screen_summary`` more than once: Snakemake's report draws a rule once per "
    "level of the job graph, and the held-out run's summary comes after training and tagging, while "
    "another run's comes after its own tagging only (it never waits for training).")


def is_simulated(paths: Iterable[str | Path], stop: Iterable[str | Path] = ()) -> bool:
    """True when a README.txt of `maggotflow simulate` sits in the folder of one of `paths`
    or in a folder above it (up to a folder of `stop`, or the root)."""
    stops = {Path(s).resolve() for s in stop}
    seen: set[Path] = set()
    for path in paths:
        folder = Path(path).resolve()
        folder = folder if folder.is_dir() else folder.parent
        while folder not in seen:
            seen.add(folder)
            if is_simulator_readme(folder / README_NAME):
                return True
            if folder in stops or folder.parent == folder:
                break
            folder = folder.parent
    return False


def tagger_domain(tagger: str | Path) -> dict | None:
    """The domain reference (config.json "domain_check", `maggotflow.domain`) of a tagger
    folder, or of an ensemble's first member (whose reference it uses); None when absent or
    unreadable. Read as JSON: no torch."""
    folder = Path(tagger)
    for _ in range(2):
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        members = config.get("members")
        if config.get("kind") != "ensemble" or not isinstance(members, list) or not members:
            domain = config.get(DOMAIN_CHECK_KEY)
            return domain if isinstance(domain, dict) else None
        folder = folder / str(members[0])
    return None


def run_domain_counts(screen: str | Path) -> tuple[int, int] | None:
    """(files, files unlike the training data) of a prediction run, from its screen summary
    (groups.tsv, group "all"); None when unreadable."""
    try:
        rows = read_tsv(Path(screen) / "groups.tsv")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = unlike = None
    for row in rows:
        if row.get("group") == "all":
            try:  # the largest count over behaviours: a file declares at least one
                files = max(files or 0, int(row["files"]))
                unlike = max(unlike or 0, int(row.get("files_unlike_training") or 0))
            except (KeyError, ValueError):
                return None
    return None if files is None else (files, unlike)


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """The rows of an evaluation table (`maggotflow.tsv.read_rows`: quoted cells keep their tabs)."""
    return tsv.read_rows(path)


def _number(text: Any, digits: int = 3) -> str:
    if text is None or text == "":
        return "--"
    return f"{float(text):.{digits}f}"


def _literal(text: Any) -> str:
    """Inline literal: file and label names keep their underscores, stars and spaces."""
    text = " ".join(str(text).split()).replace("``", "` `")
    return f"``{text}``" if text else "--"


def list_table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> str:
    """An rst list-table (cells already formatted)."""
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(str(w) for w in widths))
    lines.append("")
    for row in [header, *rows]:
        lines.append("   * - " + (row[0] or " "))
        lines += [f"     - {cell or ' '}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def section(title: str, level: str = "-") -> str:
    return f"{title}\n{level * len(title)}\n"


def _count(n: int, what: str, plural: str | None = None) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {plural or what + 's'}"


def dataset_stats(dataset_path: str | Path) -> dict[str, Any]:
    """Files, larvae and labelled steps (segments) per behaviour of a training dataset."""
    from maggotflow.dataset import TRAIN, VALIDATION, Dataset

    dataset = Dataset.load(dataset_path)
    try:
        pairs = {(int(f), str(larva)) for f, larva in zip(dataset.file, dataset.larva)}
        return {
            "files": len({f for f, _ in pairs}),
            "larvae": len(pairs),
            "labels": list(dataset.labels),
            "train": dataset.class_counts(TRAIN).tolist(),
            "validation": dataset.class_counts(VALIDATION).tolist(),
        }
    finally:
        dataset.close()


def overview(
    *,
    metrics: Mapping[str, Any],
    per_file: Sequence[Mapping[str, Any]],
    behaviour: Sequence[Mapping[str, Any]],
    provenance: Mapping[str, Any],
    settings: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    relpaths: Mapping[str, str] | None = None,
    runs: Sequence[str] = (),
    simulated: bool = False,
    domain: Mapping[str, Any] | None = None,
    run_domain: Mapping[str, tuple[int, int] | None] | None = None,
) -> str:
    """The landing page (rst). metrics: metrics.json; per_file, behaviour: rows of
    per_file.tsv and behaviour.tsv; provenance: the tagger's provenance.json; settings:
    tagger (preset name or None), track_dir, evaluation (description of the held-out
    files), pretrain_steps, stage1_steps, stage2_steps, labels (None: the data's), models
    (count); dataset: `dataset_stats`; relpaths: reference .label path -> the track file's
    path relative to its folder; runs: prediction runs with a screen summary; domain: the
    tagger's domain reference (`tagger_domain`); run_domain: run -> `run_domain_counts`."""
    parts = _headline_lines(metrics, per_file, settings, simulated)
    parts += _trained_lines(metrics, provenance, settings, dataset)
    parts += _per_behaviour_lines(metrics)
    parts += _per_file_lines(per_file, relpaths or {})
    parts += _time_share_lines(behaviour)
    parts += [section("Domain check"), ""] + domain_lines(domain, run_domain or {})
    parts += _prediction_run_lines(runs)
    parts += _how_it_was_made_lines(settings)
    return "\n".join(parts)


def settings_from_config(config: Mapping[str, Any], models: int) -> dict[str, Any]:
    """What the landing page says about the data, the tagger and its budget (the `settings`
    of `overview`), from the workflow's config and its number of trained `models`."""
    ev, train, inputs = config["evaluation"], config["train"], config["inputs"]
    if ev.get("track_dir") or ev.get("manifest"):
        heldout = f"a separate folder of labelled files, {ev.get('track_dir') or ev.get('manifest')}"
    else:
        heldout = f"{ev['heldout_fraction']:g} of the input files, drawn by a seeded hash"
    return {
        "tagger": config.get("tagger"),
        "track_dir": inputs.get("track_dir") or inputs.get("manifest"),
        "evaluation": heldout,
        "pretrain_steps": config["pretrain"]["steps"],
        "stage1_steps": train["stage1_steps"],
        "stage2_steps": train["stage2_steps"],
        "labels": config.get("labels"),
        "models": models,
        "data_folders": [d for d in (inputs.get("track_dir"), ev.get("track_dir")) if d],
    }


def overview_of_results(
    *,
    evaluation: str | Path,
    tagger: str | Path,
    dataset: str | Path,
    manifest: str | Path,
    settings: Mapping[str, Any],
    runs: Sequence[str] = (),
    screens: Sequence[str | Path] = (),
) -> str:
    """The landing page of a project's results: `overview` of the held-out evaluation folder
    (metrics.json, per_file.tsv, behaviour.tsv), the tagger folder, its dataset, the held-out
    run's `manifest` (track paths relative to their folder; its first 20 tracks tell whether
    the data are simulated) and the screen summary folder of each of `runs`."""
    from maggotflow.manifest import read_manifest

    evaluation, rows = Path(evaluation), read_manifest(manifest)
    return overview(
        metrics=load_json(evaluation / "metrics.json"),
        per_file=read_tsv(evaluation / "per_file.tsv"),
        behaviour=read_tsv(evaluation / "behaviour.tsv"),
        provenance=load_json(Path(tagger) / "provenance.json"),
        settings=settings,
        dataset=dataset_stats(dataset),
        relpaths={row["label"]: row["relpath"] for row in rows if row["label"]},
        runs=runs,
        simulated=is_simulated(list(settings["data_folders"]) + [row["path"] for row in rows][:20]),
        domain=tagger_domain(tagger),
        run_domain={run: run_domain_counts(screen) for run, screen in zip(runs, screens)},
    )


def _headline_lines(metrics: Mapping[str, Any], per_file: Sequence[Mapping[str, Any]],
                    settings: Mapping[str, Any], simulated: bool) -> list[str]:
    """The page's title and style, the simulated-data warning, and the held-out macro-F1 and accuracy."""
    n_files = len(metrics.get("files", [])) or len(per_file)
    lines = [section("maggotflow: what was trained, and how well it tags held-out files", "="), PAGE_STYLE]
    if simulated:
        lines += [".. warning::",
                  "   The data are **simulated** (``maggotflow simulate``): every figure here measures the",
                  "   tagger on synthetic larvae and does not carry over to real recordings.", ""]
    lines += [f"**Held-out macro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}** "
              f"({metrics['n_steps']} time steps of {_count(n_files, 'held-out file')}, "
              f"{metrics.get('n_missing', 0)} without prediction; {settings['evaluation']}).", ""]
    return lines


def _trained_items(metrics: Mapping[str, Any], provenance: Mapping[str, Any], settings: Mapping[str, Any],
                   dataset: Mapping[str, Any] | None) -> list[str]:
    """The bullet points of "What was trained": tagger, training data, budget, the state kept,
    validation time, labels."""
    preset = settings.get("tagger")
    labels = provenance.get("labels") or metrics.get("labels", [])
    models = int(settings.get("models", 1))
    items = [f"Tagger: preset {_literal(preset)}" if preset else "Tagger: the default settings (no preset)"]
    if models > 1:
        items[-1] += f", an ensemble of {models} models"
    data = f"Training data: {_literal(settings['track_dir'])}"
    if dataset:
        data += (f", {_count(dataset['files'], 'labelled file')}, {_count(dataset['larvae'], 'larva', 'larvae')} "
                 f"(labelled steps of each behaviour below)")
    items.append(data)
    budget = (f"Budget: {settings['pretrain_steps']} pretraining steps, {settings['stage1_steps']} stage-1 "
              f"(classifier) + {settings['stage2_steps']} stage-2 (fine-tuning) steps")
    if provenance.get("epochs") is not None:
        budget += f" = {float(provenance['epochs']):.2f} epochs of the training segments"
    items.append(budget)
    best = provenance.get("best") or {}
    if best:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in best.items() if k.startswith("val_") and isinstance(v, float))
        items.append(f"Kept: the state at step {best.get('step')} ({best.get('stage', '')}; {scores})")
    if provenance.get("validation_seconds") is not None and provenance.get("seconds"):
        items.append(f"Validation during training: {float(provenance['validation_seconds']):.0f} s of "
                     f"{float(provenance['seconds']):.0f} s")
    items.append("Labels: " + ", ".join(_literal(n) for n in labels)
                 + ("" if settings.get("labels") else " (those of the training data)"))
    return items


def _trained_lines(metrics: Mapping[str, Any], provenance: Mapping[str, Any], settings: Mapping[str, Any],
                   dataset: Mapping[str, Any] | None) -> list[str]:
    """Section "What was trained": the bullet points, the candidates compared and the labelled
    steps of each behaviour in the training dataset."""
    lines = [section("What was trained"), ""]
    lines += [f"- {item}" for item in _trained_items(metrics, provenance, settings, dataset)] + [""]
    lines += candidate_lines(provenance)
    if dataset:
        rows = [[_literal(n), str(a), str(b)] for n, a, b in zip(dataset["labels"], dataset["train"],
                                                                  dataset["validation"])]
        lines += ["Labelled time steps (segments) of each behaviour in the training dataset:", "",
                  list_table(["behaviour", "training", "validation"], rows)]
    return lines


def _per_behaviour_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Section "Per behaviour": precision, recall, F1 and support of each behaviour on the held-out files."""
    rows = [[_literal(n), _number(m["precision"]), _number(m["recall"]), _number(m["f1"]), str(m["support"])]
            for n, m in metrics["per_label"].items()]
    return [section("Per behaviour (held-out files)"), "",
            list_table(["behaviour", "precision", "recall", "F1", "support"], rows),
            "Support: held-out reference steps of the behaviour. Macro-F1 is the mean F1 over the "
            "behaviours with support; the confusion matrix is under Evaluation.", ""]


def _per_file_lines(per_file: Sequence[Mapping[str, Any]], relpaths: Mapping[str, str]) -> list[str]:
    """Section "Per held-out file": each file's macro-F1, accuracy and steps (the track file's
    path relative to its folder where known, else the reference's name)."""
    rows = [[_literal(relpaths.get(r["reference"], Path(r["reference"]).name)), _number(r["macro_f1"]),
             _number(r["accuracy"]), str(r["n_steps"])] for r in per_file]
    return [section("Per held-out file"), "",
            list_table(["file", "macro-F1", "accuracy", "steps"], rows, widths=[70, 10, 10, 10])]


def _time_share_lines(behaviour: Sequence[Mapping[str, Any]]) -> list[str]:
    """Section "Time in each behaviour and bouts": time shares, bout counts and median bout
    durations, reference vs predicted."""
    rows = [[_literal(r["label"]), _number(r["reference_fraction"]), _number(r["predicted_fraction"]),
             str(r["reference_bouts"]), str(r["predicted_bouts"]), _number(r["reference_median_bout_s"], 2),
             _number(r["predicted_median_bout_s"], 2)] for r in behaviour]
    return [section("Time in each behaviour and bouts, reference vs predicted"), "",
            list_table(["behaviour", "time share, reference", "time share, predicted", "bouts, reference",
                        "bouts, predicted", "median bout (s), reference", "median bout (s), predicted"], rows),
            "Time share: of the evaluated held-out steps. The figure (behaviour.png) is under Evaluation.", ""]


def _prediction_run_lines(runs: Sequence[str]) -> list[str]:
    """Section "Prediction runs": the runs with a screen summary (and, with several, why the
    rule graph draws screen_summary more than once), or how to make one."""
    lines = [section("Prediction runs"), ""]
    if not runs:
        return lines + ["No prediction run has a screen summary yet (``snakemake summary --config predict_dir=DIR``).",
                        ""]
    lines += ["Screen summaries (time in each behaviour per group, bout durations, transitions) of "
              "these runs are under Screen summary: " + ", ".join(_literal(r) for r in runs) + ".", ""]
    if len(runs) > 1:
        lines += [RULE_GRAPH_NOTE, ""]
    return lines


def _how_it_was_made_lines(settings: Mapping[str, Any]) -> list[str]:
    """Section "How it was made": the workflow's stages in one paragraph."""
    return [section("How it was made"), "",
            "maggotflow parsed every track file once into an intermediate (isolate), cut the labelled "
            "time steps into normalised spine segments (dataset), pretrained an encoder "
            "self-supervised on the training files (pretrain), then fine-tuned it with a "
            "classifier (train). The tagger was evaluated on held-out files it never saw during "
            f"pre/training ({settings['evaluation']}). Training curves are under Training, "
            "ethograms of held-out files under Ethograms.", ""]


def candidate_lines(provenance: Mapping[str, Any]) -> list[str]:
    """The classifiers fitted and compared on the validation split (provenance "candidates",
    `maggotflow.training.choose`), the one kept ("chosen") and each one's training time."""
    candidates = provenance.get("candidates") or {}
    if not isinstance(candidates, Mapping) or not candidates:
        return []
    chosen = provenance.get("chosen")
    rows = [[_literal(name) + (" (kept)" if name == chosen else ""), _number(c.get("val_macro_f1")),
             _number(c.get("val_macro_f1_argmax")), _number(c.get("val_accuracy")), _literal(c.get("decoder") or ""),
             "--" if c.get("seconds") is None else f"{float(c['seconds']):.0f}"]
            for name, c in candidates.items() if isinstance(c, Mapping)]
    return ["Candidates compared on the whole validation split (the best macro-F1 with its own decision "
            "rule is kept; training time on this run's hardware):", "",
            list_table(["candidate", "macro-F1 (its decision)", "macro-F1 (argmax)", "accuracy", "decoder",
                        "training time (s)"], rows)]


def domain_lines(domain: Mapping[str, Any] | None, run_domain: Mapping[str, tuple[int, int] | None]) -> list[str]:
    """The "Domain check" section's paragraphs (rst lines)."""
    if not domain:
        return ["The tagger holds no domain reference (trained before maggotflow's domain check, or without "
                "validation samples): its labels say ``not checked``.", ""]
    thresholds, training = domain.get("thresholds") or {}, domain.get("training") or {}
    lines = ["Every predicted file and larva is scored by how unlike the training data its kinematic "
             "features are (``metadata.maggotflow.domain_check`` of its label). Thresholds, 95 % prediction "
             f"bounds of files and larvae the statistics did not see: file score {thresholds.get('file')}, larva "
             f"score {thresholds.get('larva')} + {thresholds.get('larva_per_s')} / duration (s).", ""]
    if training.get("files") and training.get("simulated_files") == training.get("files"):
        lines += [".. warning::", "",
                  "   The tagger was trained on **simulated** larvae only: every file that is not simulated is "
                  "judged unlike its training data.", ""]
    rows = [[_literal(run), "--" if counts is None else str(counts[0]),
             "--" if counts is None else str(counts[1])] for run, counts in run_domain.items()]
    if rows:
        lines += ["Files judged unlike the training data, per prediction run (their labels may be unreliable):",
                  "", list_table(["run", "files", "unlike the training data"], rows)]
    return lines


def write_overview(path: str | Path, text: str) -> None:
    """The page, protected from Snakemake's jinja2 pass (file names may hold braces)."""
    write_text_atomic(path, "{% raw %}\n" + text + "\n{% endraw %}\n")


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
