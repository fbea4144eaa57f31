"""`maggotflow isolate` (transitional: the command still lives in maggotflow.isolation)."""

from maggotflow.isolation import configure_parser, run_command  # noqa: F401
