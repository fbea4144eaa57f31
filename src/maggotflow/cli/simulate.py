"""`maggotflow simulate` (transitional: the command still lives in maggotflow.simulation)."""

from maggotflow.simulation import configure_parser, run_command  # noqa: F401
