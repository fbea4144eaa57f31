"""Dataset + pretrained encoder -> a tagger instance (maggotflow.training.train_tagger)."""

from jobsetup import job

with job(snakemake, subject="training") as log:
    import torch

    from maggotflow.training import TrainConfig, train_tagger

    torch.set_num_threads(snakemake.threads)
    settings = dict(snakemake.params.settings)
    settings["hidden"] = tuple(settings.pop("layers"))
    train_tagger(snakemake.input.dataset, snakemake.output[0], snakemake.input.pretrained,
                 TrainConfig(**settings), log=log.info)
