"""`maggotflow segments` (transitional: the command still lives in maggotflow.segments)."""

from maggotflow.segments import configure_parser, run_command  # noqa: F401
