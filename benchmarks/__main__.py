"""Run benchmark groups: `python -m benchmarks` (all) or `python -m benchmarks io tagger`."""

from __future__ import annotations

import importlib
import sys

GROUPS = {
    "io": "benchmarks.io",            # track-file reading and segment building
    "feed": "benchmarks.feed",        # what the readers deliver: 0/1/2 reader processes, no GPU; predict's core split on CPU
    "tagger": "benchmarks.tagger",    # model and predict throughput
    "accuracy": "benchmarks.accuracy",  # held-out macro-F1 vs baselines on simulator data
    "workflow": "benchmarks.workflow",  # Snakemake overhead
    "presets": "benchmarks.presets",  # tagger presets: prediction cost, held-out macro-F1
    "slurm": "benchmarks.slurm",      # job fan-out through a real local SLURM, root only
    "summary": "benchmarks.summary",  # screen summary of 10,000 .label files: files/s, peak memory
    "gpu": "benchmarks.gpu",          # CUDA: model-only vs end-to-end, time shares, fp16 agreement, training steps/s
    "memory": "benchmarks.memory",  # peak RSS of predict on a 300-larva 10-min 30 fps file, pretraining/dataset over many files
    "domain": "benchmarks.domain",  # domain check: share of held-out files of regimes A, B, C flagged unlike a regime-A tagger's training data
    "fewlabel": "benchmarks.fewlabel",  # macro-F1 against 1, 5, 20 labelled larvae of regime B/C: fine-tune vs scratch vs boosting
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
