"""Run benchmark groups: `python -m benchmarks` (all) or `python -m benchmarks io tagger`."""

from __future__ import annotations

import importlib
import sys

GROUPS = {
    "io": "benchmarks.io",            # track-file reading and segment building (issue 2)
    "tagger": "benchmarks.tagger",    # model and predict throughput (issue 3)
    "accuracy": "benchmarks.accuracy",  # held-out macro-F1 vs baselines on simulator data (issue 3)
    "workflow": "benchmarks.workflow",  # Snakemake overhead (issue 4)
    "presets": "benchmarks.presets",  # tagger presets: prediction cost, held-out macro-F1 (issue 6)
    "slurm": "benchmarks.slurm",      # job fan-out through a real local SLURM, root only (issue 5)
    "summary": "benchmarks.summary",  # screen summary of 10,000 .label files: files/s, peak memory (issue 12)
    "gpu": "benchmarks.gpu",          # CUDA: model-only vs end-to-end, time shares, fp16 agreement, training steps/s (issue 13)
    "memory": "benchmarks.memory",  # peak RSS of predict on a 300-larva 10-min 30 fps file, pretraining/dataset over many files (issue 13)
    "domain": "benchmarks.domain",  # domain check: share of held-out files of regimes A, B, C flagged unlike a regime-A tagger's training data (issue 21)
    "fewlabel": "benchmarks.fewlabel",  # macro-F1 against 1, 5, 20 labelled larvae of regime B/C: fine-tune vs scratch vs boosting (issue 21)
}


def main(argv: list[str]) -> int:
    names = argv or [g for g in GROUPS if importlib.util.find_spec(GROUPS[g]) is not None]
    for name in names:
        if name not in GROUPS:
            print(f"unknown benchmark group {name!r}; choose from {', '.join(GROUPS)}", file=sys.stderr)
            return 2
        print(f"== {name} ==")
        importlib.import_module(GROUPS[name]).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
