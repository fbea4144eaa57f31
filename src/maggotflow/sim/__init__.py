"""The larva simulator's parts, one job each; `maggotflow.simulation` is the entry point.

- `behaviour`: the behaviour names and the semi-Markov bout sequence;
- `config`: `SimulationConfig` and the named regimes;
- `body`: a larva's body and gait, posture signals, spine and outline;
- `tracker`: frame times and the frames at which a larva is tracked;
- `experiment`: one labelled larva, one labelled experiment (in memory);
- `files`: the simulated files on disk (formats, layout, metadata);
- `readme`: the README.txt of a simulated folder, and how it is recognised.
"""
