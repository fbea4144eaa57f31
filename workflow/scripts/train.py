"""Dataset + pretrained encoder -> a tagger instance, as config `train` says
(`maggotflow.pipeline.train_classifier`: fine-tuning and boosted candidates, or a random forest)."""

from jobsetup import job

with job(snakemake, subject="training") as log:
    from maggotflow.pipeline import train_classifier
    from maggotflow.threads import set_torch_threads

    set_torch_threads(snakemake.threads)  # and never more than SLURM allocated
    train_classifier(snakemake.input.dataset, snakemake.output[0], snakemake.input.pretrained or None,
                     snakemake.params.settings, device=snakemake.config["device"], threads=snakemake.threads,
                     log_line=log.info)
