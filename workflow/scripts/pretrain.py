"""Training intermediates -> a pretrained encoder instance (maggotflow.pretraining.pretrain)."""

from jobsetup import job

with job(snakemake, subject="pretraining") as log:
    import torch

    from maggotflow.pretraining import PretrainConfig, pretrain

    torch.set_num_threads(snakemake.threads)
    settings = dict(snakemake.params.settings)
    settings["filters"] = tuple(settings["filters"])
    pretrain(list(snakemake.input), None, snakemake.output[0], PretrainConfig(**settings), log=log.info)
