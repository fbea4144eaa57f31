"""Ethograms of held-out files for the report: per larva, predicted above reference labels.

One PNG per file (the first `n_files` held-out files by path) in the output folder, titled by
the file's path relative to its folder (the run's manifest), drawn to be read at the report's
full width: large type, the legend in one row below the time axis.
"""

from pathlib import Path

from jobsetup import job

with job(snakemake, subject="ethograms") as log:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from maggotflow.formats.label import default_colors, read_label_file
    from maggotflow.manifest import read_manifest
    from maggotflow.records import read_shard_table

    def bouts(steps):
        """(first index, length, name) of each run of identical first labels."""
        names = [s[0] if s else "" for s in steps]
        if not names:
            return []
        codes = np.unique(names, return_inverse=True)[1]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(names)]
        return [(int(a), int(b - a), names[a]) for a, b in zip(starts, ends)]

    def draw(ax, y, t, steps, color):
        # Each step lasts until the next one (the last one a median interval).
        dt = np.diff(t, append=t[-1] + (np.median(np.diff(t)) if t.size > 1 else 0.1))
        for first, n, name in bouts(steps):
            if name:
                ax.broken_barh([(t[first], t[first + n - 1] + dt[first + n - 1] - t[first])], (y, 0.4),
                               facecolors=color.get(name, "#cccccc"))

    out_dir = Path(snakemake.output[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    references = snakemake.params.references
    try:
        relpaths = {row["id"]: row["relpath"] for row in read_manifest(snakemake.params.manifest)}
    except (OSError, ValueError):
        relpaths = {}
    done = [(row["path"], row["id"], row["label"]) for row in read_shard_table(snakemake.input.summary)
            if row["status"] == "ok"]
    for track, ident, label in sorted(done)[: snakemake.params.n_files]:
        predicted, reference = read_label_file(label), read_label_file(references[ident])
        names = list(dict.fromkeys(predicted.names + reference.names))
        color = dict(zip(names, default_colors(names)))
        color.update(zip(predicted.names, predicted.colors or []))
        larvae = sorted(predicted.tracks, key=lambda i: int(i) if i.lstrip("-").isdigit() else 0)
        fig = Figure(figsize=(12, 1.9 + 0.42 * len(larvae)), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        end = 0.0
        for row, larva in enumerate(larvae):
            t, steps = predicted.tracks[larva]
            draw(ax, row + 0.05, np.asarray(t), steps, color)
            end = max(end, float(np.max(t, initial=0.0)))
            if larva in reference.tracks:
                t, steps = reference.tracks[larva]
                draw(ax, row + 0.5, np.asarray(t), steps, color)
        ax.set_yticks(np.arange(len(larvae)) + 0.45, [f"larva {i}" for i in larvae], fontsize=10)
        ax.set_ylim(len(larvae), 0)
        ax.set_xlim(0, end)
        ax.set_xlabel("time (s)", fontsize=11)
        ax.tick_params(axis="x", labelsize=10)
        name = (relpaths.get(ident) or Path(track).name).replace("$", r"\$")  # no mathtext
        fig.suptitle(name, fontsize=12, fontweight="bold")
        ax.set_title("each larva: upper bar predicted, lower bar reference", fontsize=10)
        handles = [Patch(color=color[n], label=n) for n in names]
        fig.legend(handles=handles, fontsize=10, loc="outside lower center", ncols=min(len(names), 7),
                   frameon=False)
        fig.savefig(out_dir / f"{ident}.png", format="png")
    log.info("%d ethogram(s) in %s", min(len(done), snakemake.params.n_files), out_dir)
