"""`maggotflow` command line: one sub-command per stage.

This module owns the command table, the one mapping of errors to exit codes (`main`,
`exit_code`, `UsageError`), the options every track-reading command shares
(`add_read_options`, `read_options`) and the text of the list options several commands
share (`parse_names`, `parse_synonyms`, `parse_weights`: dataset, evaluate, tagging-backend).
Each command `NAME` lives in `maggotflow.cli.NAME` (dashes become underscores), which exposes
`configure_parser(parser)` and `run_command(args) -> int`. Modules are imported lazily so
that `maggotflow --help` and the light commands never import torch.

Errors: a command module never catches and prints errors itself; it raises, and `main`
reports every expected error as one line `maggotflow <command>: error: <message>` on stderr
(no traceback; with `--verbose` the traceback follows, for a bug report):

- exit 1: bad input (`TrackDataError`), an unusable model folder (`InstanceError`), an
  output that cannot be written or may not be replaced (`OutputError`, `FileExistsError`
  such as `OutputExistsError`);
- exit 2: a bad option value or setting (`UsageError`, and any other `ValueError`, such as
  the one a settings dataclass raises from `__post_init__`), like argparse's own usage
  errors (which exit 2 with the usage);
- a command that ran but could not process some inputs (`--keep-going`) returns 1 itself.

Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

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
    "summarize": ("maggotflow.cli.summarize", "behaviour fractions, bouts and transitions of many .label files, by group"),
}


# The commands that run torch: their threads default to the job's allocated cores.
TORCH_COMMANDS = ("dataset", "pretrain", "train", "train-forest", "predict")


class UsageError(ValueError):
    """A bad option value or setting: `maggotflow <cmd>: error: <message>`, exit 2 (like argparse)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of `command` only: just that module is imported (fast start-up).

    Without a command (`maggotflow --help`, a usage error) no command module is imported.
    """
    parser = argparse.ArgumentParser(prog="maggotflow", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of a reported error")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: the cores allocated to this job, from the "
                             "CPU affinity and SLURM_CPUS_PER_TASK)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_run=module.run_command)
    return parser


def _version() -> str:
    from maggotflow import __version__

    return f"maggotflow {__version__}"


def add_read_options(parser: argparse.ArgumentParser, min_steps: bool = True) -> None:
    """The options of `maggotflow.formats.ReadOptions` (what a track file cannot say itself)."""
    from maggotflow.formats import SPINE_ORDERS, ReadOptions

    defaults = ReadOptions()
    parser.add_argument("--framerate", type=float, default=defaults.framerate,
                        help=f"FIMTrack frame rate in Hz (default {defaults.framerate:g})")
    parser.add_argument("--pixelsize-um", type=float, default=defaults.pixelsize_um,
                        help="FIMTrack pixel size in micrometres (default: 1 px = 1 unit, with a warning)")
    add_hidden_alias(parser, "--pixelsize", "pixelsize_um", type=float)
    parser.add_argument("--spine-order", choices=SPINE_ORDERS, default=defaults.spine_order,
                        help="point order in .spine/.outline files: auto (default: decided per file from the "
                             "larvae's motion, head_first when it cannot tell), head_first or tail_first")
    if min_steps:
        parser.add_argument("--min-steps", type=int, default=defaults.min_steps,
                            help=f"skip larvae with fewer time steps (default {defaults.min_steps})")


def read_options(args: argparse.Namespace):
    """The `ReadOptions` of options added by `add_read_options` (ValueError on a bad value)."""
    from maggotflow.formats import ReadOptions

    extra = {"min_steps": args.min_steps} if hasattr(args, "min_steps") else {}
    return ReadOptions(framerate=args.framerate, pixelsize_um=args.pixelsize_um, spine_order=args.spine_order,
                       **extra)


def add_hidden_alias(parser: argparse.ArgumentParser, option: str, dest: str, **kwargs) -> None:
    """An earlier spelling of an option, kept working for existing scripts but not shown in
    --help: it sets `dest` like the option it was renamed to (same `kwargs`: type, action)."""
    parser.add_argument(option, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def input_paths(args: argparse.Namespace) -> list:
    """The positional `inputs`, then the paths listed in `--input-list` (one per line; blank
    lines and `#` comments skipped): the one reader of such lists, for every command."""
    from pathlib import Path

    from maggotflow.tracks import TrackDataError

    paths = [Path(p) for p in args.inputs]
    if args.input_list:
        listing = Path(args.input_list)
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise TrackDataError(listing, f"cannot be read ({getattr(err, 'strerror', None) or err})") from None
        paths += [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return paths


def parse_names(text: str | Sequence[str] | None) -> list[str] | None:
    """'run,cast, hunch' (or a list of such: a repeated option) -> ['run', 'cast', 'hunch'];
    None stays None. ValueError when a name comes twice."""
    if text is None:
        return None
    parts = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for p in parts for n in p.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"label list {','.join(names)} names a label twice")
    return names


def parse_synonyms(text: str | Sequence[str] | None) -> dict[str, str]:
    """'run_large=run,cast_large=cast' and/or preset names ('six-from-seven',
    `maggotflow.dataset.SYNONYM_PRESETS`) -> {name in the files: task name}."""
    from maggotflow.dataset import SYNONYM_PRESETS

    if text is None:
        return {}
    parts = [text] if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for item in (n.strip() for p in parts for n in p.split(",")):
        if not item:
            continue
        if item in SYNONYM_PRESETS:
            out.update(SYNONYM_PRESETS[item])
            continue
        name, sep, task_name = item.partition("=")
        if not sep or not name.strip() or not task_name.strip():
            raise ValueError(
                f"synonym {item!r} is not of the form name_in_file=task_name "
                f"(or a preset: {', '.join(SYNONYM_PRESETS)})"
            )
        out[name.strip()] = task_name.strip()
    return out


def parse_weights(text: str | None) -> list[float] | None:
    """'1,2.5,1' -> [1.0, 2.5, 1.0]; None stays None."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"class weights {text!r} are not a comma-separated list of numbers") from None


def exit_code(err: BaseException) -> int | None:
    """The exit code of an expected error (see the module docstring); None for a bug."""
    from maggotflow.atomic import OutputError
    from maggotflow.tracks import TrackDataError

    # InstanceError subclasses ValueError, like TrackDataError: test them before ValueError.
    # maggotflow.instance imports torch; an InstanceError exists only once it was imported.
    instance = sys.modules.get("maggotflow.instance")
    if isinstance(err, (TrackDataError, OutputError, FileExistsError)) or (
        instance is not None and isinstance(err, instance.InstanceError)
    ):
        return 1
    if isinstance(err, ValueError):
        return 2
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only -v, --threads N and --version come before the command: its name is the first
    # argument that names one.
    parser = build_parser(next((a for a in argv if a in COMMANDS), None))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    # Without --threads, commands that do not run torch do not import it (start-up time).
    if args.threads is not None or args.command in TORCH_COMMANDS:
        from maggotflow.threads import set_torch_threads

        set_torch_threads(args.threads)
    try:
        return int(args._run(args) or 0)
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        print(f"maggotflow {args.command}: error: {err}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        return code
