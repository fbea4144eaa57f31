"""Trained model(s) -> the workflow's tagger instance, results/models/tagger.

One trained model and no `ensemble` config: the tagger is a copy of it (written to a
temporary sibling folder, then renamed). An ensemble: its members assembled into one
majority-vote instance (maggotflow.ensemble.assemble).
"""

import shutil

from jobsetup import job

with job(snakemake, subject="tagger") as log:
    if snakemake.params.ensemble:
        from maggotflow.ensemble import assemble

        ensemble = assemble(list(snakemake.input), snakemake.output[0], post_rule=snakemake.params.post_rule)
        log.info("ensemble of %d members written to %s", len(ensemble.members), snakemake.output[0])
    else:
        from maggotflow.instance import save_folder

        (trained,) = snakemake.input
        save_folder(snakemake.output[0], lambda folder: shutil.copytree(trained, folder, dirs_exist_ok=True))
        log.info("%s: the tagger (trained in %s)", snakemake.output[0], trained)
