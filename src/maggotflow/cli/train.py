"""`maggotflow train` (transitional: the command still lives in maggotflow.training)."""

from maggotflow.training import configure_parser, run_command  # noqa: F401
