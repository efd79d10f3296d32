"""Log-log PNGs of the one-factor slices (one panel per axis), with reference slopes."""
import os

from .fit import by_engine, measured, positive_values, sizes_of
from .grid import AXES, slice_indices

LABELS = {"seconds": "time per iteration (s)",
          "inner_products": "inner products per iteration (count)",
          "candidate_pairs": "candidate pairs per iteration (count)",
          "fired_pairs": "fired pairs per iteration (count)",
          "reanchored": "neurons re-anchored per iteration (count)",
          "nodes_visited": "tree nodes visited per iteration (count)"}
AXIS_LABELS = {"m": "width m (neurons)", "n": "points n", "d": "dimension d"}


def _panel(ax, groups, quantity, axis):
    k = AXES.index(axis)
    anchor, fixed = None, ""
    for engine, rows in groups.items():
        rows = measured(rows, quantity)
        if not rows:
            continue
        vals, sizes = positive_values(rows, quantity), sizes_of(rows)
        idx = slice_indices(sizes, axis)
        if not idx:
            continue
        xs, ys = [sizes[i][k] for i in idx], [vals[i] for i in idx]
        ax.plot(xs, ys, "o-", label=engine)
        if anchor is None:
            anchor = (xs, ys)
            fixed = ", ".join(f"{a}={sizes[idx[0]][j]}" for j, a in enumerate(AXES) if a != axis)
    ax.set_xlabel(AXIS_LABELS[axis])
    if anchor is None:
        ax.text(0.5, 0.5, f"no {axis}-slice in the data", ha="center", va="center",
                transform=ax.transAxes)
        return
    xs, ys = anchor
    xr = [min(xs), max(xs)]
    ax.plot(xr, [ys[0] * x / xs[0] for x in xr], "k--", lw=1,
            label=f"slope 1 (∝ m·n·d: dense cost in {axis})")
    if axis == "m":
        ax.plot(xr, [ys[0] * (x / xs[0]) ** 0.8 for x in xr], "k:", lw=1.5,
                label=r"slope 4/5 ($\propto m^{4/5}$: fired neurons)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylabel(LABELS[quantity])
    ax.set_title(f"{axis}-slice ({fixed})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_slices(rows, out_dir, names, title="sparseadv cost"):
    """One PNG per quantity of ``names`` ({quantity: file name}) that some engine measured at
    two or more sizes; returns the paths written, or None when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    groups = by_engine(rows)
    written = []
    for quantity, name in names.items():
        if not any(len(measured(r, quantity)) >= 2 for r in groups.values()):
            continue
        fig = Figure(figsize=(15, 4.6))
        FigureCanvasAgg(fig)
        for ax, axis in zip(fig.subplots(1, 3), AXES):
            _panel(ax, groups, quantity, axis)
        fig.suptitle(f"{title}: {LABELS[quantity]} (log-log)")
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
