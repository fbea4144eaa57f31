"""`maggotflow pretrain` (transitional: the command still lives in maggotflow.pretraining)."""

from maggotflow.pretraining import configure_parser, run_command  # noqa: F401
