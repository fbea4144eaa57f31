"""maggotflow: tag Drosophila larva behaviour from tracked spines (MaggotUBA-style).

The library does the work (reading track files, building segments, training and running
taggers); the Snakemake workflow at the repository root only orchestrates files and jobs.
"""

__version__ = "0.1.0"
