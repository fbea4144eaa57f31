"""`tagging-backend`: the TaggingBackends command line (as LarvaTagger and its users call it).

Runs in a backend project folder (the current directory, or `--root DIR`) laid out as the
original MaggotUBA-adapter::

    data/raw/NAME/         track files to tag, or labelled track files to train on (any depth)
    data/interim/NAME/     intermediates, the training dataset, private temporary folders
    data/processed/NAME/   predictions
    models/NAME/           tagger model instances (maggotflow ModelInstance folders)
    pretrained_models/P/   pretrained encoders (also looked up in models/P/)

Commands (options as in TaggingBackends)::

    tagging-backend predict --model-instance NAME [--skip-make-dataset | --make-dataset] [--device D]
    tagging-backend train --model-instance NAME [--pretrained-model-instance P] [--labels a,b,c]
        [--balancing-strategy auto|maggotuba|none] [--class-weights 1,2,...] [--iterations N]
        [--layers N] [--seed S] [--device D] [--skip-make-dataset] [--candidates network,boosting,combined]
    tagging-backend finetune --model-instance NAME [--original-model-instance ORIGINAL] (train's options)
    every command: [--sandbox TOKEN]: data/{raw,interim,processed}/TOKEN instead of .../NAME

finetune
    Continues training the tagger `models/ORIGINAL` (default: `models/NAME`, replaced) on the
    labelled files of `data/raw/NAME`, writing `models/NAME`: the original's encoder and
    segments are the starting point and its labels are learnt (unless `--labels`); the
    classifier is trained again. Otherwise as `train`.

maggotflow's extras: `--root`, the track-reading options of `maggotflow predict`
(`--framerate`, `--pixelsize-um`, `--spine-order`), `--verbose`; for predict `--batch-size`,
`--keep-going`, `--data-isolation`; for train `--pretraining-iterations`, `--post-rule`,
`--batch-size`. An error is one line on stderr, exit code 1 (a malformed command line:
argparse's usage, exit code 2).

predict
    Tags every track file under `data/raw/NAME/` (recursively: `.spine`, `trx.mat`,
    FIMTrack `.csv`) with `models/NAME/`. One input file -> `data/processed/NAME/predicted.label`
    (the name LarvaTagger reads); several -> `data/processed/NAME/<path relative to
    data/raw/NAME with the extension replaced by .label>` (`exp1/trx.mat` -> `exp1/trx.label`).
    `--skip-make-dataset` (default since TaggingBackends 0.10) reads the track files directly;
    `--make-dataset` first writes per-file intermediates, in a private temporary folder under
    `data/interim/NAME/` removed afterwards; the labels are the same either way.

train
    Pairs each track file with its labels: `STEM.label` next to it (`trx.mat` -> `trx.label`),
    else a `.label` in the same folder whose `dependencies` name it; a `trx.mat` without one
    uses its own behaviour flags; other files without labels are left out of the dataset
    with a warning (they serve pretraining only). Exported predictions (`predicted.label`,
    `*.predicted.label`) are never taken as ground truth. Intermediates go to
    `data/interim/NAME/isolated/`, the dataset to `data/interim/NAME/larva_dataset.h5`, the
    tagger to `models/NAME/` (an earlier maggotflow instance there is replaced). The
    stages are `maggotflow.pipeline.train_from_tracks`, as in the workflow.
    Budget: `--iterations N` fine-tuning steps (stage 2); stage 1 (classifier alone) gets
    a quarter of that, `ceil(N / 4)` steps.
    Classifier: `--layers N` dense layers (default 1): N - 1 hidden layers of 64 units, then
    the output layer. maggotflow's `--candidates` (default network,boosting,combined): the
    classifiers fitted and compared on validation, the best kept (`maggotflow.training`);
    `--candidates boosting` trains gradient-boosted trees on kinematic features alone, with
    no encoder and no pretraining (finetuning such a tagger refits its trees on the new labels).
    Encoder: `--pretrained-model-instance P` (`models/P/` or `pretrained_models/P/`); without
    it `pretrained_models/default/` as in MaggotUBA-adapter; when that does not exist either,
    a short self-supervised pretraining (`--pretraining-iterations`, default 1000 steps) runs
    first on all the track files of `data/raw/NAME`, labelled or not
    (`data/interim/NAME/pretrained/`): pretraining needs no labels, and a pretrained encoder
    learns far faster than a random one. `--pretraining-iterations 0` trains from a random
    encoder instead.

Data isolation: every call takes the list of inputs once, only reads them, keeps its own
temporary files in a private folder (`tempfile.mkdtemp`) and writes every output atomically
(temporary sibling, then rename), so two calls running at once in one project folder never
see each other's half-written files. (Two calls on the same NAME still write the same
output names: the last one wins, whole.)
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Sequence

from maggotflow.cli import add_read_options, read_options
from maggotflow.tracks import TrackDataError

log = logging.getLogger(__name__)

DEFAULT_PRETRAINED = "default"
STAGE1_FRACTION = 0.25  # stage-1 steps = ceil(STAGE1_FRACTION * --iterations)
HIDDEN_WIDTH = 64  # width of each hidden dense layer when --layers > 1


class BackendError(ValueError):
    """A problem with the backend folder or the options; `str()` is one line."""


# ---------------------------------------------------------------------------- layout
class Project:
    """Paths of a backend project folder for one model instance name."""

    def __init__(self, root: str | Path, name: str, sandbox: str | None = None):
        name = str(name)
        for option, value in (("--model-instance", name), ("--sandbox", sandbox)):
            if value is not None and (not value or value in (".", "..") or "/" in value or "\\" in value
                                      or value.startswith(".")):
                raise BackendError(f"{option} {value!r} must be a plain folder name (no '/', not hidden)")
        self.root = Path(root)
        self.name = name
        # --sandbox TOKEN (TaggingBackends): the data/ folders of this call are named TOKEN
        # instead of the instance name, so that concurrent calls on one instance never clash.
        self.data_name = sandbox or name
        self.raw = self.root / "data" / "raw" / self.data_name
        self.interim = self.root / "data" / "interim" / self.data_name
        self.processed = self.root / "data" / "processed" / self.data_name
        self.model = self.root / "models" / name

    def find_instance(self, name: str) -> Path | None:
        """`models/NAME` or `pretrained_models/NAME`, whichever exists first (None if neither)."""
        for folder in ("models", "pretrained_models"):
            path = self.root / folder / name
            if path.is_dir():
                return path
        return None

    def track_files(self):
        """The manifest (track files + paired labels) of `data/raw/NAME`; BackendError if none."""
        from maggotflow.manifest import build_manifest

        if not self.raw.is_dir():
            raise BackendError(f"{self.raw}: folder not found; put the track files there "
                               f"(data/raw/{self.data_name}/ under {self.root})")
        # The GUI may stage data/raw/NAME as links to track files kept elsewhere: followed
        # (links to folders outside it never are).
        manifest = build_manifest(self.raw, file_links_outside=True)
        if len(manifest) == 0:
            raise BackendError(f"{self.raw}: no track file found (.spine, trx.mat or FIMTrack .csv)")
        return manifest


# ---------------------------------------------------------------------------- predict
def predict(
    root: str | Path,
    name: str,
    make_dataset: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
    read_options=None,
    on_error: Callable | None = None,
    sandbox: str | None = None,
) -> list[Path]:
    """Tag `data/raw/NAME/**` with `models/NAME`; return the `.label` files written.

    One input -> `data/processed/NAME/predicted.label`; several -> the relative paths
    mirrored under `data/processed/NAME/` with `.label` extensions. See the module docstring.
    """
    from maggotflow.instance import check_model_folder
    from maggotflow.names import mirrored_label_path
    from maggotflow.prediction import OutputClashError, predict_files

    project = Project(root, name, sandbox)
    if not project.model.is_dir():
        raise BackendError(f"{project.model}: model instance {name!r} not found; train one with "
                           f"`tagging-backend train --model-instance {name}` or copy it to models/{name}/")
    check_model_folder(project.model)  # a foreign, damaged or pretrained-only folder: one line, before any work
    manifest = project.track_files()
    rows = list(manifest)
    inputs = [Path(r["path"]) for r in rows]
    if len(rows) == 1:
        outs = [project.processed / "predicted.label"]
    else:
        outs = [project.processed / mirrored_label_path(r["relpath"]) for r in rows]
    log.info("tagging %d file(s) of %s with %s", len(inputs), project.raw, project.model)

    workdir = None
    try:
        if make_dataset:
            from maggotflow.isolation import isolate

            project.interim.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=".predict-", dir=project.interim))
            isolated = []
            for row, path in zip(rows, inputs):
                target = workdir / f"{row['id']}.h5"
                try:
                    isolate(path, target, options=read_options)
                except TrackDataError as err:
                    if on_error is None:
                        raise
                    on_error(path, err)
                    continue
                isolated.append((path, target))
            kept = {p for p, _ in isolated}
            outs = [o for p, o in zip(inputs, outs) if p in kept]
            inputs = [t for _, t in isolated]
            if not inputs:
                return []
        try:
            return predict_files(project.model, inputs, out_paths=outs, batch_size=batch_size, device=device,
                                 read_options=read_options, on_error=on_error,
                                 overwrite=True)  # tagging-backend re-tags in place; never a foreign file
        except OutputClashError as err:
            raise BackendError(f"{err} (rename one of the track files in {project.raw})") from None
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------- train
def train(
    root: str | Path,
    name: str,
    pretrained_name: str | None = None,
    labels: Sequence[str] | None = None,
    balancing: str = "auto",
    class_weights: Sequence[float] | None = None,
    iterations: int = 1000,
    pretraining_iterations: int = 1000,
    seed: int = 0,
    device: str = "auto",
    layers: int = 1,
    hidden_width: int = HIDDEN_WIDTH,
    post_rule: str | None = None,
    batch_size: int = 128,
    read_options=None,
    log_line: Callable[[str], None] = print,
    sandbox: str | None = None,
    pretrained_path: str | Path | None = None,
    candidates: Sequence[str] | None = None,
):
    """Train `models/NAME` on the labelled track files of `data/raw/NAME`; return the instance.

    `layers` dense layers (TaggingBackends' count): `layers - 1` hidden ones of `hidden_width`.
    See the module docstring for label pairing, budgets and the pretrained encoder; the work
    itself is `maggotflow.pipeline.train_from_tracks`.
    """
    from maggotflow.pipeline import train_from_tracks
    from maggotflow.pretraining import PretrainConfig
    from maggotflow.training import TrainConfig

    if iterations < 1:
        raise BackendError(f"--iterations must be >= 1, got {iterations}")
    if layers < 1:
        raise BackendError(f"--layers must be >= 1, got {layers}")
    project = Project(root, name, sandbox)
    config = TrainConfig(
        stage1_steps=math.ceil(STAGE1_FRACTION * iterations), stage2_steps=iterations, batch_size=batch_size,
        seed=seed, device=device, layers=(hidden_width,) * (layers - 1), post_rule=post_rule,
        **({} if candidates is None else {"candidates": tuple(candidates)}),
    )

    # the encoder to start from: --pretrained-model-instance, else pretrained_models/default,
    # else a short pretraining on the same files
    pretraining = None
    if config.candidates == ("boosting",):  # trees on kinematic features: no encoder to start from
        pretrained = None
    elif pretrained_path is not None:  # finetune: an existing tagger
        pretrained = Path(pretrained_path)
    elif pretrained_name is not None:
        pretrained = project.find_instance(pretrained_name)
        if pretrained is None:
            raise BackendError(f"pretrained model instance {pretrained_name!r} not found in "
                               f"{project.root / 'models'} or {project.root / 'pretrained_models'}")
    else:
        pretrained = project.root / "pretrained_models" / DEFAULT_PRETRAINED
        if not pretrained.is_dir():
            pretrained = None
            if pretraining_iterations > 0:
                log_line(f"no pretrained model instance (pretrained_models/{DEFAULT_PRETRAINED} absent)")
                pretraining = PretrainConfig(steps=pretraining_iterations, seed=seed, device=device)

    manifest = project.track_files()
    files = {row["id"]: (Path(row["path"]), row["label"] or None) for row in manifest}
    log_line(f"{len(files)} track file(s) in {project.raw}")
    return train_from_tracks(
        files, project.interim, project.model, pretrained=pretrained, pretrain_config=pretraining,
        train_config=config, read_options=read_options, log_line=log_line,
        dataset_options=dict(labels=labels, balancing=balancing, class_weights=class_weights, seed=seed),
    )


def finetune(root: str | Path, name: str, original: str | None = None, labels: Sequence[str] | None = None,
             **train_options):
    """Continue training the tagger `models/ORIGINAL` (default: `models/NAME` itself) on the
    labelled files of `data/raw/NAME` (or `data/raw/SANDBOX`); write `models/NAME`.

    The original tagger's encoder is the starting point (as a pretrained encoder is for
    `train`), its segments are kept, and its labels are learnt unless `labels` says otherwise;
    with the same labels and classifier layers its classifier is the start too (then stage 1
    and stage 2 continue it), else a new classifier is trained. Other options: those of `train`.
    """
    from maggotflow.instance import ModelInstance, check_model_folder

    original = name if original is None else str(original)
    project = Project(root, name, train_options.get("sandbox"))
    source = project.root / "models" / original
    if not source.is_dir():
        raise BackendError(f"{source}: model instance {original!r} not found; finetune continues an existing "
                           f"tagger (train one with `tagging-backend train --model-instance {original}`)")
    check_model_folder(source)
    instance = ModelInstance.load(source)
    if instance.kind != "tagger":
        raise BackendError(f"{source}: is a {instance.kind} instance, not a tagger: use `tagging-backend train "
                           f"--pretrained-model-instance {original}`")
    if original == name:  # the target folder is replaced: start from a copy
        work = Path(tempfile.mkdtemp(prefix=".finetune-", dir=project.root / "models"))
        shutil.copytree(source, work / original)
        source = work / original
    else:
        work = None
    try:
        return train(root, name, pretrained_path=source, labels=labels or list(instance.labels), **train_options)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagging-backend",
        description="TaggingBackends-compatible command line of maggotflow (MaggotUBA-style tagger)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-instance", required=True, metavar="NAME",
                        help="model instance name: data in data/*/NAME, model in models/NAME")
    common.add_argument("--root", type=Path, default=None,
                        help="backend project folder holding data/ and models/ (default: current directory)")
    common.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    common.add_argument("--sandbox", metavar="TOKEN", default=None,
                        help="name the data/raw, data/interim and data/processed folders TOKEN instead of NAME "
                             "(concurrent calls on one instance)")
    add_read_options(common, min_steps=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of a reported error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("predict", parents=[common], help="tag the track files in data/raw/NAME")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--skip-make-dataset", dest="make_dataset", action="store_false",
                      help="read the track files directly (default)")
    mode.add_argument("--make-dataset", dest="make_dataset", action="store_true",
                      help="write per-file intermediates first (private temporary folder)")
    p.set_defaults(make_dataset=False)
    p.add_argument("--batch-size", type=int, default=None, help="segments per forward pass")
    p.add_argument("--keep-going", action="store_true", help="skip unreadable files, report them at the end")
    p.add_argument("--data-isolation", action="store_true",
                   help="accepted for LarvaTagger.jl compatibility: every call is isolated anyway")

    training = argparse.ArgumentParser(add_help=False)
    t = training
    t.add_argument("--labels", default=None, help="comma-separated labels to learn (default: every label found)")
    t.add_argument("--balancing-strategy", choices=("auto", "maggotuba", "none"), default="auto",
                   help="auto (class weights by inverse frequency, default), maggotuba (subsampling), none")
    t.add_argument("--class-weights", default=None, help="comma-separated weights, one per label in label order")
    t.add_argument("--iterations", type=int, default=1000,
                   help="fine-tuning steps (stage 2); stage 1 gets a quarter of that (default 1000)")
    t.add_argument("--pretraining-iterations", type=int, default=1000,
                   help="pretraining steps when no pretrained instance exists; 0: random encoder (default 1000)")
    t.add_argument("--layers", type=int, default=1,
                   help=f"dense layers of the classifier: N - 1 hidden layers of {HIDDEN_WIDTH} units, then the "
                        "output layer (default 1)")
    t.add_argument("--post-rule", default=None, help="post-prediction rule stored in the tagger: ABC->AAC or none")
    t.add_argument("--batch-size", type=int, default=128, help="segments per training step (default 128)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--candidates", default=None,
                   help="classifiers compared on validation, the best kept: comma-separated among network, "
                        "boosting, combined (default: all three); boosting alone needs no encoder")
    t.add_argument("--skip-make-dataset", action="store_true",
                   help="accepted for TaggingBackends compatibility (the dataset is always rebuilt)")

    t = sub.add_parser("train", parents=[common, training],
                       help="train models/NAME on the labelled files in data/raw/NAME")
    t.add_argument("--pretrained-model-instance", metavar="P", default=None,
                   help=f"encoder to start from: models/P or pretrained_models/P (default: "
                        f"pretrained_models/{DEFAULT_PRETRAINED}, else a short pretraining)")
    f = sub.add_parser("finetune", parents=[common, training],
                       help="continue training the tagger models/ORIGINAL on data/raw/NAME into models/NAME")
    f.add_argument("--original-model-instance", metavar="ORIGINAL", default=None,
                   help="the tagger to start from, in models/ (default: --model-instance itself, replaced)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tagging-backend`; returns the exit code (0 ok, 1 error)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root = args.root if args.root is not None else Path.cwd()
    from maggotflow.threads import set_torch_threads

    set_torch_threads()  # the cores allocated to this job, not all of the node's
    failures: list = []
    try:
        options = read_options(args)
        if args.command == "predict":
            written = predict(root, args.model_instance, make_dataset=args.make_dataset, device=args.device,
                              batch_size=args.batch_size, read_options=options, sandbox=args.sandbox,
                              on_error=(lambda path, err: failures.append(err)) if args.keep_going else None)
            for path in written:
                print(path, flush=True)
        else:
            from maggotflow.cli import parse_names, parse_weights

            settings = dict(balancing=args.balancing_strategy, class_weights=parse_weights(args.class_weights),
                            iterations=args.iterations, pretraining_iterations=args.pretraining_iterations,
                            seed=args.seed, device=args.device, layers=args.layers, post_rule=args.post_rule,
                            batch_size=args.batch_size, read_options=options, sandbox=args.sandbox,
                            candidates=parse_names(args.candidates), log_line=lambda msg: print(msg, flush=True))
            if args.command == "finetune":
                finetune(root, args.model_instance, original=args.original_model_instance,
                         labels=parse_names(args.labels), **settings)
            else:
                train(root, args.model_instance, pretrained_name=args.pretrained_model_instance,
                      labels=parse_names(args.labels), **settings)
    except (ValueError, OSError) as err:
        # Bad input, a model folder, an option (TrackDataError, InstanceError, BackendError are
        # ValueErrors) or an output: one line, exit 1 as TaggingBackends callers expect, no
        # traceback (with --verbose the traceback follows, to report a bug), as `maggotflow`.
        print(f"tagging-backend {args.command}: error: {err}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        return 1
    if failures:
        print(f"tagging-backend predict: {len(failures)} file(s) could not be tagged:", file=sys.stderr)
        for err in failures:
            print(f"  {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
