"""`maggotflow dataset` (transitional: the command still lives in maggotflow.dataset)."""

from maggotflow.dataset import configure_parser, run_command  # noqa: F401
