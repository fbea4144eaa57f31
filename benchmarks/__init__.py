"""maggotflow benchmarks: `python -m benchmarks [GROUP ...]` (or `make benchmark`).

Each group prints its figures as medians over repeats, measured in one run, plus ratios.
Performance targets live here, never in timed tests.
"""
