#!/usr/bin/env bash
# The demo (`make demo`): simulate labelled larva experiments, train and evaluate a small
# tagger with the workflow on CPU, then tag a folder of new experiments with it.
# Everything goes under demo/ (DEMO_DIR); CORES sets the local cores (default 2).
#
# Run it again and it does no work: each simulated folder gets a marker (.demo-simulated,
# the command that made it) once complete and is then left alone (new mtimes would make
# Snakemake redo every job); Snakemake finds nothing to do; the report is rewritten only
# when something under results/ is newer. Delete demo/ (or one folder) to start over.
# Every command is printed (`+ ...`) as it runs, so that it can be copied.
# DEMO_ONLY_SIMULATE=1 stops after the simulation (used by tests/test_demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
DEMO="${DEMO_DIR:-demo}"
CORES="${CORES:-2}"
mkdir -p "$DEMO"
cd "$DEMO"

exec 3>&1  # the console, for `show` even where a command's output is redirected
show() {  # print a command as it can be typed, then run it
    { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3
    "$@"
}

run_snakemake() {
    # Targets and --config first: --configfile takes several values and would swallow them.
    # The console (status line, no rule blocks) is set by profiles/default; each job prints
    # its own start and progress lines (workflow/scripts/jobsetup.py).
    show snakemake "$@" -s "$REPO/Snakefile" --configfile "$REPO/config/demo.yaml" --cores "$CORES"
}

simulate() {  # FOLDER FILES SEED [unlabelled]: simulate once; a completed folder is kept
    local dir=$1 files=$2 seed=$3 unlabelled=${4:-}
    local marker="$dir/.demo-simulated" what="maggotflow simulate $dir --files $files --seed $seed $unlabelled"
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$what" ]; then
        echo "   $dir: kept from an earlier demo (delete it to simulate again)"
        return
    fi
    rm -rf "$dir"  # an incomplete or different earlier simulation
    show maggotflow simulate "$dir" --files "$files" --seed "$seed" > /dev/null
    if [ -n "$unlabelled" ]; then  # new data: no labels
        show find "$dir" -name '*.label' -delete
    fi
    echo "$what" > "$marker"
}

echo "+ cd $PWD"
echo "== 1/4 simulating 24 training + 8 held-out + 4 new experiments (~10 larvae x 60 s each)"
simulate data/train 24 1
simulate data/heldout 8 2
simulate data/new_experiments 4 3 unlabelled
if [ -n "${DEMO_ONLY_SIMULATE:-}" ]; then
    exit 0
fi

echo "== 2/4 workflow: isolate -> dataset -> pretrain -> train -> tag held-out files -> evaluate"
start=$SECONDS
run_snakemake
echo "   done in $((SECONDS - start)) s"

echo "== 3/4 tag the new experiments with the trained tagger"
run_snakemake predict --config predict_dir=data/new_experiments

echo "== 4/4 report"
# The landing page lists every prediction run: the default target brings it up to date (a
# few seconds; nothing to do when it is).
run_snakemake
if [ -f results/report.html ] && [ -z "$(find results -type f -newer results/report.html -print -quit)" ]; then
    echo "   results/report.html is newer than every result: kept"
else
    mkdir -p logs
    show snakemake --report results/report.html -s "$REPO/Snakefile" --configfile "$REPO/config/demo.yaml" \
        > logs/report.log 2>&1 || echo "   (report not written: see $DEMO/logs/report.log)"
fi

count() {  # SUMMARY.TSV: "N tagged, M failed" from its status column
    awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") s = i; next }
                { if ($s == "ok") ok++; else bad++ }
                END { printf "%d tagged, %d failed", ok, bad }' "$1"
}

run=$(ls -td results/predict/new_experiments-*/ | head -n 1)   # the newest, if run before
cat <<END

Results (under $DEMO/):
  tagger model instance    results/models/tagger/   (loss curves in curves/)
  held-out evaluation      results/evaluation/   (metrics.json, per_label.csv, confusion.png)
  held-out predictions     results/predict/heldout/labels/   ($(count results/predict/heldout/summary.tsv))
  new experiments tagged   ${run}labels/   ($(count "${run}summary.tsv"); summary.tsv lists every file)
                           and predicted.label / *.predicted.label next to each track file
END
if [ -d "${run}screen" ]; then
    echo "  screen summary           ${run}screen/   (per_larva.tsv, groups.tsv, fraction_by_group.png)"
fi
cat <<END
  report                   results/report.html   (open it in a browser)
  logs                     logs/   (one per job; logs/report.log for the report)

Tag another folder:  cd $PWD && snakemake predict --config predict_dir=DIR -s $REPO/Snakefile --configfile $REPO/config/demo.yaml --cores $CORES

Held-out evaluation ($(($(wc -l < results/predict/heldout/manifest.tsv) - 1)) files of data/heldout, never used for training):
END
cat results/evaluation/table.txt
