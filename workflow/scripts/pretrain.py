"""Training intermediates -> a pretrained encoder instance (maggotflow.pretraining.pretrain).

The settings hold only the keys the config gives: the others keep PretrainConfig's defaults.
"""

from jobsetup import job

with job(snakemake, subject="pretraining") as log:
    from maggotflow.threads import set_torch_threads

    from maggotflow.pretraining import PretrainConfig, pretrain

    set_torch_threads(snakemake.threads)  # and never more than SLURM allocated
    config = PretrainConfig(**snakemake.params.settings, device=snakemake.config["device"])
    pretrain(list(snakemake.input), None, snakemake.output[0], config, log=log.info)
