"""`maggotflow train-forest` (transitional: the command still lives in maggotflow.forest)."""

from maggotflow.forest import configure_parser, run_command  # noqa: F401
