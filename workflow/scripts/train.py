"""Dataset + pretrained encoder -> a tagger instance.

train.classifier dense: two-stage fine-tuning and the boosted-tree candidates, the best kept
(maggotflow.training.train_tagger; train.candidates [boosting]: trees alone, no encoder);
random_forest: a forest on the frozen encoder's latents (maggotflow.forest.train_forest).
The settings hold only the keys the config gives: the others keep their dataclass defaults
(TrainConfig, ForestConfig).
"""

from jobsetup import job

with job(snakemake, subject="training") as log:
    from maggotflow.threads import set_torch_threads

    set_torch_threads(snakemake.threads)  # and never more than SLURM allocated
    settings = dict(snakemake.params.settings)
    classifier, forest = settings.pop("classifier", "dense"), settings.pop("forest", {})
    device = snakemake.config["device"]
    if classifier == "random_forest":
        from maggotflow.forest import ForestConfig, train_forest

        config = ForestConfig(**forest, seed=settings["seed"], device=device, n_jobs=snakemake.threads)
        train_forest(snakemake.input.dataset, snakemake.output[0], snakemake.input.pretrained, config, log=log.info)
    else:
        from maggotflow.training import TrainConfig, train_tagger

        pretrained = snakemake.input.pretrained or None  # none for trees on kinematic features alone
        train_tagger(snakemake.input.dataset, snakemake.output[0], pretrained,
                     TrainConfig(**settings, device=device), log=log.info)
