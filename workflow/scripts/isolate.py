"""One track file (+ its .label) -> the per-file intermediate (maggotflow.isolation.isolate)."""

from jobsetup import job

with job(snakemake, subject=snakemake.input.track) as log:
    from maggotflow.formats import ReadOptions
    from maggotflow.isolation import isolate

    labels = snakemake.input.get("labels")
    run = isolate(snakemake.input.track, snakemake.output[0], labels, ReadOptions(**snakemake.params.read))
    steps = sum(track.n_steps for track in run.tracks)
    log.info("%s: %d larvae, %d time steps, labels from %s", snakemake.input.track, len(run.tracks), steps,
             labels or ("the file itself" if run.has_labels else "nowhere (unlabelled)"))
