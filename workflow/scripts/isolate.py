"""One track file (+ its .label) -> the per-file intermediate (maggotflow.isolation.isolate).

The paths come from params (not input: see `trackable` in workflow/rules/common.smk).
"""

from jobsetup import job

track_path, labels = snakemake.params.files["track"], snakemake.params.files["labels"]

with job(snakemake, subject=track_path) as log:
    from maggotflow.formats import ReadOptions
    from maggotflow.isolation import isolate

    run = isolate(track_path, snakemake.output[0], labels, ReadOptions(**snakemake.params.read))
    steps = sum(track.n_steps for track in run.tracks)
    log.info("%s: %d larvae, %d time steps, labels from %s", track_path, len(run.tracks), steps,
             labels or ("the file itself" if run.has_labels else "nowhere (unlabelled)"))
