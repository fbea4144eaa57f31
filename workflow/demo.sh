#!/usr/bin/env bash
# The demo (`make demo`): simulate labelled larva experiments, train and evaluate a small
# tagger with the workflow on CPU, then tag a folder of new experiments with it.
# Everything goes under demo/ (DEMO_DIR); CORES sets the local cores (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
DEMO="${DEMO_DIR:-demo}"
CORES="${CORES:-2}"
mkdir -p "$DEMO"
cd "$DEMO"
run_snakemake() {
    # targets and --config first: --quiet takes optional values and would swallow them
    snakemake "$@" -s "$REPO/Snakefile" --configfile "$REPO/config/demo.yaml" --cores "$CORES" --quiet rules
}

echo "== 1/4 simulating 24 training + 8 held-out + 4 new experiments (~10 larvae x 60 s each)"
maggotflow simulate data/train --files 24 --seed 1 > /dev/null
maggotflow simulate data/heldout --files 8 --seed 2 > /dev/null
maggotflow simulate data/new_experiments --files 4 --seed 3 > /dev/null
find data/new_experiments -name '*.label' -delete   # new data: no labels

echo "== 2/4 workflow: isolate -> dataset -> pretrain -> train -> tag held-out files -> evaluate"
start=$SECONDS
run_snakemake
echo "   done in $((SECONDS - start)) s"

echo "== 3/4 snakemake predict --config predict_dir=data/new_experiments (uses the trained tagger)"
run_snakemake predict --config predict_dir=data/new_experiments

echo "== 4/4 report"
run_snakemake --report results/report.html > /dev/null 2>&1 || echo "   (report not written: see snakemake --report)"

run=$(ls -td results/predict/new_experiments-*/ | head -n 1)   # the newest, if run before
cat <<END

Results (under $DEMO/):
  tagger model instance    results/models/tagger/   (loss curves in curves/)
  held-out evaluation      results/evaluation/   (metrics.json, per_label.csv, confusion.png)
  held-out predictions     results/predict/heldout/labels/
  new experiments tagged   ${run}labels/   (summary.tsv lists every file)
                           and predicted.label / *.predicted.label next to each track file
  report                   results/report.html
  logs                     logs/

Held-out evaluation ($(($(wc -l < results/predict/heldout/manifest.tsv) - 1)) files of data/heldout, never used for training):
END
cat results/evaluation/table.txt
