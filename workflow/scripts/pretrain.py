"""Training intermediates -> a pretrained encoder instance (maggotflow.pretraining.pretrain).

The settings hold only the keys the config gives: the others keep PretrainConfig's defaults.
"""

from jobsetup import job

with job(snakemake, subject="pretraining") as log:
    import torch

    from maggotflow.pretraining import PretrainConfig, pretrain

    torch.set_num_threads(snakemake.threads)
    config = PretrainConfig(**snakemake.params.settings, device=snakemake.config["device"])
    pretrain(list(snakemake.input), None, snakemake.output[0], config, log=log.info)
