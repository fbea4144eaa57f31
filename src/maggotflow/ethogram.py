"""Ethograms: per larva, the predicted labels above the reference labels, one PNG per file.

Drawn to be read at the report's full width (`snakemake --report`, rule `ethograms`): large
type, the legend in one row below the time axis. Each bar is a bout (`maggotflow.bouts`: a
step's first name; untagged steps and time gaps stay blank), coloured as the predicted file
declares (else `maggotflow.formats.label.default_colors`). Matplotlib draws on an Agg canvas
(no pyplot, no display).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from maggotflow.atomic import atomic_path, make_dirs
from maggotflow.bouts import find_bouts, step_codes

log = logging.getLogger(__name__)

NO_COLOR = "#cccccc"  # a name without a colour of its own


@dataclass
class EthogramFile:
    """One ethogram to draw: predicted and reference `.label` paths, the title above it and
    the PNG's name in the output folder (without `.png`)."""

    predicted: str | Path
    reference: str | Path
    title: str
    name: str


def write_ethograms(files: Sequence[EthogramFile], out_dir: str | Path) -> list[Path]:
    """One PNG per file, `out_dir/<name>.png` (the folder is created); returns their paths."""
    out_dir = Path(out_dir)
    make_dirs(out_dir)
    written = []
    for one in files:
        fig = ethogram_figure(one.predicted, one.reference, one.title)
        written.append(out_dir / f"{one.name}.png")
        with atomic_path(written[-1]) as tmp:
            fig.savefig(tmp, format="png")
    return written


def run_ethograms(summary: str | Path, references: Mapping[str, str], manifest: str | Path, n_files: int,
                  out_dir: str | Path) -> list[Path]:
    """Ethograms of the first `n_files` files (by track path) that a prediction run tagged
    (the `ok` rows of its summary.tsv; `references`: file id -> reference label), named by
    file id and titled by the file's path relative to its folder (the run's `manifest`), or
    the track file's name when the manifest cannot be read."""
    from maggotflow.manifest import read_manifest
    from maggotflow.runtables import read_shard_table

    try:
        relpaths = {row["id"]: row["relpath"] for row in read_manifest(manifest)}
    except (OSError, ValueError):
        relpaths = {}
    done = sorted((row["path"], row["id"], row["label"]) for row in read_shard_table(summary)
                  if row["status"] == "ok")
    files = [EthogramFile(label, references[ident], relpaths.get(ident) or Path(track).name, ident)
             for track, ident, label in done[:n_files]]
    return write_ethograms(files, out_dir)


def ethogram_figure(predicted: str | Path, reference: str | Path, title: str):
    """The ethogram of one file (a matplotlib Figure): a row per predicted larva (by id), its
    predicted bouts in the upper bar and, when the reference labels it, the reference's below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from maggotflow.formats.label import default_colors, read_label_file

    pred, ref = read_label_file(predicted), read_label_file(reference)
    names = list(dict.fromkeys(pred.names + ref.names))
    color = dict(zip(names, default_colors(names)))
    color.update(zip(pred.names, pred.colors or []))
    larvae = sorted(pred.tracks, key=lambda i: int(i) if i.lstrip("-").isdigit() else 0)
    fig = Figure(figsize=(12, 1.9 + 0.42 * len(larvae)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    end = 0.0
    for row, larva in enumerate(larvae):
        t, steps = pred.tracks[larva]
        _draw_bouts(ax, row + 0.05, t, steps, names, color)
        end = max(end, float(np.max(t, initial=0.0)))
        if larva in ref.tracks:
            _draw_bouts(ax, row + 0.5, *ref.tracks[larva], names, color)
    ax.set_yticks(np.arange(len(larvae)) + 0.45, [f"larva {i}" for i in larvae], fontsize=10)
    ax.set_ylim(len(larvae), 0)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s)", fontsize=11)
    ax.tick_params(axis="x", labelsize=10)
    fig.suptitle(title.replace("$", r"\$"), fontsize=12, fontweight="bold")  # a "$" is no mathtext
    ax.set_title("each larva: upper bar predicted, lower bar reference", fontsize=10)
    handles = [Patch(color=color[n], label=n) for n in names]
    fig.legend(handles=handles, fontsize=10, loc="outside lower center", ncols=min(len(names), 7), frameon=False)
    return fig


def _draw_bouts(ax, y: float, t, steps, names: list[str], color: Mapping[str, str]) -> None:
    """One bar at height `y` (0.4 high): a box per bout, coloured by its behaviour."""
    index = {name: k for k, name in enumerate(names)}
    bouts = find_bouts(t, step_codes(steps, index.get))
    for code in np.unique(bouts.code):
        mine = bouts.code == code
        ax.broken_barh(list(zip(bouts.start_s[mine].tolist(), bouts.duration_s[mine].tolist())), (y, 0.4),
                       facecolors=color.get(names[code], NO_COLOR))
