"""Training curves: one CSV (for re-plotting and checks) + one PNG (for eyes) per curve.

A curve is a list of rows (dicts), one per evaluation, e.g.
`{"step": 300, "train_loss": 0.0123, "val_loss": 0.0150}`. The first key is the x axis.
Columns whose name contains "loss" are plotted on the left axis; other numeric columns
(accuracy, F1, learning rate, ...) on a second axis on the right. Missing values (a row
without a key, None or NaN) are written as empty cells and skipped in the plot. A column of
text (training's "stage": classifier, fine-tune) is not plotted: a dotted vertical line,
labelled with both names, marks where its value changes. Each series has its own colour
(across both axes), and the legend sits below the axes, never over the data.

Matplotlib is driven through its Agg canvas directly (no pyplot): no display needed on a
cluster node, and no global backend state changed for the caller.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from maggotflow.atomic import atomic_path, write_text_atomic


def _columns(rows: list[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(str(key), None)
    return list(cols)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact round trip
    return str(value)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def save_curve(
    rows: list[dict],
    out_dir: str | Path,
    name: str,
    title: str | None = None,
    ylabel: str = "loss",
) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.csv` and `<out_dir>/<name>.png` (atomically); return both paths.

    rows: one dict per evaluation; the first key of the first row is the x axis.
    title: figure title (default: `name`). ylabel: label of the left ("loss") axis.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    csv_path, png_path = out_dir / f"{name}.csv", out_dir / f"{name}.png"
    write_text_atomic(csv_path, buf.getvalue())
    _plot(rows, cols, png_path, title or name, ylabel)
    return csv_path, png_path


def read_curve(path: str | Path) -> list[dict]:
    """Rows of a curve CSV written by `save_curve`; numbers back as int/float, empty cells dropped."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, text in raw.items():
                if text is None or text == "":
                    continue
                try:
                    row[key] = int(text)
                except ValueError:
                    try:
                        row[key] = float(text)
                    except ValueError:
                        row[key] = text
            rows.append(row)
    return rows


def _phases(rows: list[dict], cols: list[str]) -> list[str]:
    """Columns that name a phase of the loop (text such as training's "stage"), not a number."""
    out = []
    for col in cols:
        values = [r.get(col) for r in rows if r.get(col) not in (None, "")]
        if values and all(_number(v) is None for v in values):
            out.append(col)
    return out


def _boundaries(rows: list[dict], xname: str, phase: str) -> list[tuple[float, str, str]]:
    """(x, phase before, phase after) at each change of `phase`: x is the last row of the phase
    that ends (training validates at the end of each stage, so that is where it ends)."""
    out, last_x, last = [], None, None
    for row in rows:
        x, value = _number(row.get(xname)), row.get(phase)
        if x is None or value in (None, ""):
            continue
        if last is not None and value != last:
            out.append((last_x, str(last), str(value)))
        last_x, last = x, value
    return out


def _plot(rows: list[dict], cols: list[str], png_path: Path, title: str, ylabel: str) -> None:
    """Losses on the left axis, other scores on the right; one colour per series across both
    axes; the legend below the axes (never over the data); a dotted vertical line, labelled,
    where a phase column (e.g. training's stage 1 -> 2) changes."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    if cols:
        xname, phases = cols[0], _phases(rows, cols[1:])
        ycols = [c for c in cols[1:] if c not in phases]
        ax.set_xlabel(xname)
        losses = [c for c in ycols if "loss" in c]
        others = [c for c in ycols if "loss" not in c]
        if not losses:  # nothing called "loss": everything on the left axis
            losses, others = others, []
            ylabel = "value" if ylabel == "loss" else ylabel
        ax.set_ylabel(ylabel)
        palette = colormaps["tab10"].colors
        colors = {c: palette[i % len(palette)] for i, c in enumerate(losses + others)}
        positive = _draw(ax, rows, xname, losses, "-o", colors)
        if positive and _span(rows, losses) > 10:
            ax.set_yscale("log")  # losses fall by orders of magnitude
        lines = ax.get_lines()
        if others:
            ax2 = ax.twinx()
            _draw(ax2, rows, xname, others, "--s", colors)
            ax2.set_ylabel(", ".join(others))
            lines = lines + ax2.get_lines()
        top = blended_transform_factory(ax.transData, ax.transAxes)
        if phases:  # room for the phase names above the data
            for axis in ax.figure.axes:
                low, high = axis.get_ylim()
                if axis.get_yscale() == "log":
                    axis.set_ylim(low, high * (high / low) ** 0.15)
                else:
                    axis.set_ylim(low, high + 0.15 * (high - low))
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
        for phase in phases:
            for x, before, after in _boundaries(rows, xname, phase):
                ax.axvline(x, color="0.4", linestyle=":", linewidth=1.2)
                ax.text(x, 0.98, f"{before} ", transform=top, ha="right", va="top", fontsize="small", color="0.3",
                        bbox=box)
                ax.text(x, 0.98, f" {after}", transform=top, ha="left", va="top", fontsize="small", color="0.3",
                        bbox=box)
        if lines:
            fig.legend(lines, [ln.get_label() for ln in lines], loc="outside lower center",
                       ncols=min(len(lines), 4), fontsize="small", frameon=False)
        ax.grid(True, alpha=0.3)
    # No timestamps in the PNG metadata: identical curves give identical files.
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def _draw(ax, rows: list[dict], xname: str, ycols: list[str], style: str, colors: dict) -> bool:
    """Plot columns against x; return True if every plotted value is > 0."""
    positive = True
    for col in ycols:
        pts = [(_number(r.get(xname)), _number(r.get(col))) for r in rows]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        positive = positive and min(ys) > 0
        ax.plot(xs, ys, style, markersize=3, label=col, color=colors[col])
    return positive


def _span(rows: list[dict], ycols: list[str]) -> float:
    vals = [v for r in rows for c in ycols if (v := _number(r.get(c))) is not None and v > 0]
    return max(vals) / min(vals) if vals else 1.0
