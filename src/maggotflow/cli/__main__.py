"""`python -m maggotflow.cli`: the same as the `maggotflow` command."""

import sys

from maggotflow.cli import main

sys.exit(main())
