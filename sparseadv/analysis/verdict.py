"""The one sublinearity rule: is an engine's cost per iteration o(m)?

Only work counts decide (``inner_products``: deterministic, immune to the machine's load);
time is fitted and reported beside it but never decides, since a fixed per-call cost makes
time look sublinear on small sizes. A verdict of "sublinear" needs all of:

1. a grid where fixed costs do not dominate: the largest point has at least
   :data:`MIN_PAIRS` (point, neuron) pairs (m·n), else "inconclusive: grid too small";
2. an m-exponent fitted from at least ``fit.MIN_DISTINCT`` distinct m with a 95% interval;
3. its upper 95% limit at most ``1 - MARGIN`` (0.95): a margin, so that a linear cost plus a
   small constant (0.99 [0.98, 0.995]) is not read as sublinear;
4. no sign of a fixed cost in the m-slice: a constant added to a power law bends log cost
   upwards (the local slope rises along m towards the true exponent), so the exponent fitted
   on the upper half of the m-slice may exceed the lower half's by at most :data:`MAX_RISE`
   and by at most half its own value (a constant that dominates the whole grid leaves both
   near 0, one a multiple of the other), and must itself be at most ``1 - MARGIN``, else
   "inconclusive".
"""
import math

from ..theory import fit_power_law
from .grid import AXES, slice_indices

WORK = "inner_products"
MARGIN = 0.05
MIN_PAIRS = 2 ** 22
MAX_RISE = 0.1
SUBLINEAR, NOT_SUBLINEAR, INCONCLUSIVE = "sublinear", "not sublinear", "inconclusive"


def half_slopes(entry):
    """m-exponents fitted on the lower and on the upper half of the m-slice (halves of
    ``max(2, (k + 2) // 2)`` of its k points, overlapping when k is odd), or None."""
    sizes, vals = entry["sizes"], entry["values"]
    idx = slice_indices(sizes, "m")
    if len(idx) < 3:
        return None
    h = max(2, (len(idx) + 2) // 2)
    k = AXES.index("m")
    lower, upper = (fit_power_law([sizes[i][k] for i in part], [vals[i] for i in part])
                    for part in (idx[:h], idx[-h:]))
    return lower.exponent, upper.exponent


def sublinearity(entry, work=(WORK,)):
    """(status, reason) for a fit entry of ``fit.fit_quantity`` (None: not measured).
    ``work``: the quantities accepted as work counts (another count, such as a tree's inner
    products per query, may be judged by the same rule)."""
    limit = 1.0 - MARGIN
    if entry is None:
        return INCONCLUSIVE, f"no {' or '.join(w.replace('_', ' ') for w in work)} counted"
    if entry["quantity"] not in work:
        return INCONCLUSIVE, f"{entry['quantity']} does not decide (only work counts do)"
    pairs = max(m * n for m, n, _ in entry["sizes"])
    if pairs < MIN_PAIRS:
        return INCONCLUSIVE, (f"grid too small: the largest point has m·n = {pairs:.3g} "
                              f"pairs, fewer than {MIN_PAIRS:.3g}; fixed costs may dominate")
    fit = entry["fits"].get("m")
    if fit is None:
        return INCONCLUSIVE, "m-exponent not fitted (too few distinct m)"
    if not math.isfinite(fit.ci_high):
        return INCONCLUSIVE, "no confidence interval for the m-exponent"
    if fit.ci_high > limit:
        return NOT_SUBLINEAR, f"upper 95% limit {fit.ci_high:.3f} > {limit:g}"
    halves = half_slopes(entry)
    if halves is not None:
        low, high = halves
        if high - low > min(MAX_RISE, 0.5 * abs(high)) or high > limit:
            return INCONCLUSIVE, (f"the m-exponent rises from {low:.3f} (smaller m) to "
                                  f"{high:.3f} (larger m): a fixed cost bends the curve; "
                                  f"measure larger m")
    return SUBLINEAR, f"upper 95% limit {fit.ci_high:.3f} <= {limit:g}"
