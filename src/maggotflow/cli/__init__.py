"""`maggotflow` command line: one sub-command per stage.

Each command lives in its library module, which exposes `configure_parser(parser)` and
`run_command(args) -> int`. Modules are imported lazily so that `maggotflow --help` and the
light commands never import torch.

Bad input (TrackDataError and friends) is reported as one line on stderr, exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "isolate": ("maggotflow.cli.isolate", "convert one track file (+ labels) to the per-file HDF5 intermediate"),
    "simulate": ("maggotflow.cli.simulate", "write synthetic labelled experiments in all track formats"),
    "segments": ("maggotflow.cli.segments", "build normalised segments from an intermediate (inspection)"),
    "pretrain": ("maggotflow.cli.pretrain", "self-supervised pretraining of the encoder"),
    "dataset": ("maggotflow.cli.dataset", "build a labelled segment dataset from intermediates"),
    "train": ("maggotflow.cli.train", "two-stage fine-tuning of a tagger"),
    "train-forest": ("maggotflow.cli.train_forest", "random forest on a frozen encoder's latents (preset 20220418)"),
    "ensemble": ("maggotflow.cli.ensemble", "assemble trained taggers into a majority-vote ensemble"),
    "predict": ("maggotflow.cli.predict", "tag track files, writing LarvaTagger .label files"),
    "evaluate": ("maggotflow.cli.evaluate", "compare predicted and reference .label files"),
}


class UsageError(ValueError):
    """A bad option value or setting: `maggotflow <cmd>: error: <message>`, exit 2 (like argparse)."""


def build_parser(only: str | None = None, available_only: bool = True) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's module is imported (fast start-up)."""
    parser = argparse.ArgumentParser(prog="maggotflow", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own choice, all cores); on a shared "
                             "node give the cores you were allocated")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if available_only and err.name == module_name:
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_run=module.run_command)
    return parser


def _version() -> str:
    from maggotflow import __version__

    return f"maggotflow {__version__}"


def main(argv: list[str] | None = None) -> int:
    from maggotflow.atomic import OutputError
    from maggotflow.tracks import TrackDataError

    # Bad input, a file we must not replace, a full disk or a read-only folder: one line each.
    expected: tuple[type[BaseException], ...] = (TrackDataError, FileExistsError, OutputError)
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command in ("pretrain", "train", "train-forest", "ensemble", "predict"):
        from maggotflow.instance import InstanceError

        expected += (InstanceError,)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args._run(args) or 0)
    except expected as err:
        print(f"maggotflow {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
