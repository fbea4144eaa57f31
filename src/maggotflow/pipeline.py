"""Track files -> a trained tagger in one call: the library's training pipeline.

`train_from_tracks` chains the stages the workflow runs as separate jobs: isolate every
track file (with its labels) into an intermediate, keep the labelled ones for the dataset
(`isolation.split_labelled`), pretrain an encoder on all of them when none is given
(pretraining needs no labels), build the dataset, and train the tagger in two stages. The
`tagging-backend train` command (`maggotflow.backend`) is this pipeline on a backend
project folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from maggotflow.formats import ReadOptions
from maggotflow.segments import SegmentSpec
from maggotflow.tracks import TrackDataError

if TYPE_CHECKING:  # torch modules: imported when the pipeline runs
    from maggotflow.instance import ModelInstance
    from maggotflow.pretraining import PretrainConfig
    from maggotflow.training import TrainConfig


def train_from_tracks(
    files: Mapping[str, tuple[str | Path, str | Path | None]],
    work_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    pretrain_config: PretrainConfig | None = None,
    train_config: TrainConfig | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    read_options: ReadOptions | None = None,
    log_line: Callable[[str], None] = print,
) -> ModelInstance:
    """Train the tagger `out` on track files; return its `ModelInstance`.

    files: name -> (track file, its `.label` file or None); a `trx.mat` without a label file
        is labelled by its own behaviour flags, other files without labels serve pretraining
        only. The intermediate of NAME is `work_dir/isolated/NAME.h5`.
    work_dir: the pipeline's files: `isolated/`, `pretrained/` (when pretraining runs) and
        the dataset `larva_dataset.h5`; earlier maggotflow files there are replaced.
    out: the tagger folder (an earlier maggotflow instance there is replaced; anything else
        is refused before any work).
    pretrained: the model instance whose encoder is fine-tuned. Without it, `pretrain_config`
        pretrains one on all the files first; without either, the encoder
        starts random.
    train_config: the two-stage training (default TrainConfig()).
    dataset_options: keyword arguments of `dataset.build_dataset` (labels, balancing,
        class_weights, seed, ...) except the segment spec: the segments are those of the
        encoder (SegmentSpec() for a random encoder).
    Progress lines go to `log_line`. Raises TrackDataError for a bad track or label file
    and when no file is labelled, InstanceError for an unusable `pretrained` folder.
    """
    from maggotflow.dataset import build_dataset
    from maggotflow.instance import ModelInstance, check_target
    from maggotflow.isolation import isolate, split_labelled
    from maggotflow.training import train_tagger

    work_dir, out = Path(work_dir), Path(out)
    check_target(out)  # before hours of work: refuse a foreign folder at once

    intermediates = []
    for name, (track, labels) in files.items():
        target = work_dir / "isolated" / f"{name}.h5"
        isolate(track, target, labels, options=read_options)
        intermediates.append(target)
    labelled, unlabelled = split_labelled(intermediates)
    if not labelled:
        raise TrackDataError(None, f"no labelled track file among the {len(files)} given: put each track "
                                   "file's .label file (LarvaTagger) next to it")
    log_line(f"{len(labelled)} labelled track file(s)"
             + (f", {len(unlabelled)} without labels left out of the dataset" if unlabelled else ""))

    if pretrained is None and pretrain_config is not None:
        from maggotflow.pretraining import pretrain

        pretrained = work_dir / "pretrained"
        log_line(f"no pretrained encoder: pretraining one for {pretrain_config.steps} steps on the "
                 f"{len(intermediates)} track file(s) -> {pretrained}")
        spec = pretrain(intermediates, None, pretrained, pretrain_config, log=log_line).segment_spec
    elif pretrained is not None:
        spec = ModelInstance.load(pretrained).segment_spec
    else:
        spec = SegmentSpec()

    dataset = work_dir / "larva_dataset.h5"
    build_dataset(labelled, dataset, spec=spec, **dict(dataset_options or {})).close()
    return train_tagger(dataset, out, pretrained, train_config, log=log_line)


def train_classifier(
    dataset: str | Path,
    out: str | Path,
    pretrained: str | Path | None,
    settings: Mapping[str, Any],
    device: str = "auto",
    threads: int = 1,
    log_line: Callable[[str], None] = print,
) -> ModelInstance:
    """Train the tagger `out` on a dataset as the workflow's `train` settings say.

    settings: `classifier` (`dense`, the default: two-stage fine-tuning and the boosted-tree
    candidates, `training.train_tagger`; `random_forest`: a forest on the frozen encoder's
    latents, `forest.train_forest`, with its settings under `forest`), and the other keys of
    TrainConfig or ForestConfig; keys not given keep the dataclass defaults. `pretrained` is
    None only for trees on kinematic features alone (train.candidates [boosting]).
    """
    settings = dict(settings)
    classifier, forest = settings.pop("classifier", "dense"), settings.pop("forest", {})
    if classifier == "random_forest":
        from maggotflow.forest import ForestConfig, train_forest

        config = ForestConfig(**forest, seed=settings["seed"], device=device, n_jobs=threads)
        return train_forest(dataset, out, pretrained, config, log=log_line)
    from maggotflow.training import TrainConfig, train_tagger

    return train_tagger(dataset, out, pretrained or None, TrainConfig(**settings, device=device), log=log_line)
