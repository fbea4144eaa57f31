"""`maggotflow predict` (transitional: the command still lives in maggotflow.prediction)."""

from maggotflow.prediction import configure_parser, run_command  # noqa: F401
