"""Power-law fits of measured cost against (m, n, d), with 95% intervals.

For each engine and quantity (time and every work counter that is positive wherever it was
measured): one least-squares fit on logarithms over all the engine's points,
``log cost = a log m + b log n + c log d + k`` (``theory.fit_exponents``, method "grid"); when
the points cannot separate the exponents (m, n, d moving together, as in some asv suites) the
per-axis fits on the one-factor slices (``theory.fit_power_law``, method "slices") stand in.
An exponent is reported only for an axis with at least :data:`MIN_DISTINCT` distinct values
(two points always fit a line: no interval, nothing learned).
"""
import math

from ..engines.base import COUNTER_NAMES
from ..theory import fit_exponents, fit_power_law
from .grid import AXES, slice_indices

QUANTITIES = ("seconds",) + COUNTER_NAMES
MIN_DISTINCT = 3


def positive_values(rows, quantity):
    """Values of ``quantity`` on every row, or None when one is missing or not positive."""
    vals = []
    for r in rows:
        v = r.get(quantity)
        if v is None or v == "":
            return None
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            return None
        vals.append(v)
    return vals


def measured(rows, quantity):
    """The rows that measured ``quantity`` (asv suites time some sizes and count others), or
    [] when a measured value is zero, negative or not finite (no logarithm: not fitted)."""
    have = [r for r in rows if r.get(quantity) not in (None, "")]
    return have if positive_values(have, quantity) is not None else []


def sizes_of(rows):
    return [(int(r["m"]), int(r["n"]), int(r["d"])) for r in rows]


def distinct(rows):
    """{axis: number of distinct values} over ``rows``."""
    sizes = sizes_of(rows)
    return {a: len({s[k] for s in sizes}) for k, a in enumerate(AXES)}


def by_engine(rows):
    out = {}
    for r in rows:
        out.setdefault(r["engine"], []).append(r)
    return out


def fit_quantity(rows, quantity):
    """The fit entry of one engine's ``rows`` for ``quantity``, or None when fewer than two
    rows measured it (see the module docstring for the entry's keys)."""
    qrows = measured(rows, quantity)
    if len(qrows) < 2:
        return None
    vals = positive_values(qrows, quantity)
    sizes = sizes_of(qrows)
    count = distinct(qrows)
    slices = {}
    for k, axis in enumerate(AXES):
        idx = slice_indices(sizes, axis)
        if len({sizes[i][k] for i in idx}) >= MIN_DISTINCT:
            slices[axis] = fit_power_law([sizes[i][k] for i in idx], [vals[i] for i in idx])
    entry = {"quantity": quantity, "points": len(vals), "distinct": count, "slices": slices,
             "note": "", "sizes": sizes, "values": vals}
    try:
        fe = fit_exponents({a: [s[k] for s in sizes] for k, a in enumerate(AXES)}, vals)
        entry.update(method="grid", dof=fe.dof, fits={a: fe.get(a) for a in AXES})
    except ValueError as exc:
        entry.update(method="slices", dof=None, fits={a: slices.get(a) for a in AXES},
                     note=f"multivariate fit impossible ({exc}); per-axis slice fits")
    few = [a for a in AXES if 1 < count[a] < MIN_DISTINCT]
    for a in few:
        entry["fits"][a] = None
    if few:
        entry["note"] = "; ".join(filter(None, [entry["note"], ", ".join(
            f"{a}: only {count[a]} distinct values" for a in few)
            + f" (an exponent needs at least {MIN_DISTINCT}): not fitted"]))
    return entry


def fit_rows(rows, engines=None, quantities=QUANTITIES):
    """Fit entries (dicts with ``engine`` added) for every engine and quantity of ``rows``."""
    out = []
    for engine, erows in by_engine(rows).items():
        if engines is not None and engine not in engines:
            continue
        for quantity in quantities:
            entry = fit_quantity(erows, quantity)
            if entry is not None:
                entry["engine"] = engine
                out.append(entry)
    return out


def fit_dict(fit):
    """A ``theory.PowerLawFit`` as a JSON-friendly dict (None stays None)."""
    if fit is None:
        return None
    return {"exponent": float(fit.exponent), "intercept": float(fit.intercept),
            "stderr": float(fit.stderr), "ci_low": float(fit.ci_low),
            "ci_high": float(fit.ci_high), "n": int(fit.n)}
