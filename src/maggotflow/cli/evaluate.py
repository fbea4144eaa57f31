"""`maggotflow evaluate` (transitional: the command still lives in maggotflow.evaluation)."""

from maggotflow.evaluation import configure_parser, run_command  # noqa: F401
