"""`maggotflow ensemble` (transitional: the command still lives in maggotflow.ensemble)."""

from maggotflow.ensemble import configure_parser, run_command  # noqa: F401
