"""Training intermediates -> the segment dataset (maggotflow.dataset.build_dataset).

Intermediates without labels (no .label file, a trx.mat without behaviour flags) are left
out with a warning (maggotflow.isolation.split_labelled): they still serve pretraining.
"""

from jobsetup import job

with job(snakemake, subject="dataset") as log:
    from maggotflow.dataset import build_dataset
    from maggotflow.isolation import split_labelled
    from maggotflow.segments import SegmentSpec

    labelled, _ = split_labelled(list(snakemake.input))  # warns about each unlabelled one
    if not labelled:
        raise ValueError("no labelled training file: pair the track files with .label files")
    task, settings = snakemake.params.task, snakemake.params.settings
    dataset = build_dataset(
        labelled,
        snakemake.output[0],
        spec=SegmentSpec(**snakemake.params.segment),
        labels=task["labels"],
        synonyms=task["synonyms"],
        balancing=settings["balancing"],
        class_weights=settings["class_weights"],
        target=task["target"],
        validation_fraction=settings["validation_fraction"],
        max_samples=settings["max_samples"],
        seed=snakemake.params.seed,
        # The job asks for no GPU: it builds on one only where CUDA is visible (never fails for it).
        device="cpu" if snakemake.config["device"] == "cpu" else "auto",
    )
    log.info("%s written from %d files", snakemake.output[0], len(labelled))
