"""The one-factor grid over (m, n, d) and the seeded problem at each of its points.

A grid is an m-slice, an n-slice and a d-slice through a centre point; together they identify
the three exponents of ``cost ~ m^a n^b d^c``. ``sparseadv bench``, E3 of ``sparseadv
reproduce`` and the asv suite (``benchmarks/common.py``) take their sizes and data from here.

Only numpy and the standard library at import time: ``benchmarks/common.py`` loads this file
by path from the checkout, so that the suite's sizes stay the same when asv benchmarks an
older commit that has no ``sparseadv.analysis``.
"""
import math

import numpy as np

AXES = ("m", "n", "d")

#: Named grids. m starts at 2^12 in the default grid: below that a dense iteration takes a few
#: milliseconds and its time is per-call overhead, not m·n·d work (docs/benchmarks.md).
GRIDS = {
    "default": {"center": (16384, 256, 16),
                "m": [2 ** k for k in range(12, 17)],      # 4096 .. 65536 at n=256, d=16
                "n": [128, 256, 512],                       # at m=16384, d=16
                "d": [8, 16, 32]},                          # at m=16384, n=256
    # paper scale, opt-in (sparseadv bench --grid large; SPARSEADV_BENCH_GRID=large for asv)
    "large": {"center": (65536, 1024, 32),
              "m": [2 ** k for k in range(10, 21)],        # 1024 .. 1048576 at n=1024, d=32
              "n": [256, 512, 1024, 2048, 4096],            # at m=65536, d=32
              "d": [8, 16, 32, 64, 128]},                   # at m=65536, n=1024
}


def make_grid(center, ms, ns, ds):
    """A grid spec (as in :data:`GRIDS`) from a centre (m0, n0, d0) and the three slices."""
    return {"center": tuple(int(v) for v in center), "m": [int(v) for v in ms],
            "n": [int(v) for v in ns], "d": [int(v) for v in ds]}


def grid_points(grid):
    """The (m, n, d) points of a named grid (or a spec like ``GRIDS[...]``), sorted, unique."""
    spec = GRIDS[grid] if isinstance(grid, str) else grid
    m0, n0, d0 = spec["center"]
    pts = {(m0, n0, d0)}
    pts.update((m, n0, d0) for m in spec["m"])
    pts.update((m0, n, d0) for n in spec["n"])
    pts.update((m0, n0, d) for d in spec["d"])
    return sorted(pts)


def slice_indices(sizes, axis):
    """Indices of the largest one-factor slice along ``axis`` ("m", "n" or "d"): the points
    that share the other two coordinates, with the most distinct values of ``axis``; sorted by
    it. Empty when no two points differ only in ``axis``."""
    k = AXES.index(axis)
    groups = {}
    for i, s in enumerate(sizes):
        groups.setdefault(tuple(v for j, v in enumerate(s) if j != k), []).append(i)
    best = []
    for idx in groups.values():
        if len({sizes[i][k] for i in idx}) > len({sizes[i][k] for i in best}):
            best = idx
    if len({sizes[i][k] for i in best}) < 2:
        return []
    return sorted(best, key=lambda i: sizes[i][k])


def problem(m, n, d, seed=0):
    """(net, X, y) of a grid point: a Gaussian network seeded with ``seed`` and
    ``sparseadv.datasets.sphere(n, d, seed + 1)`` (unit-sphere points, fair ±1 labels), the
    data of every measurement (bench, E3, the asv suite, tools/)."""
    from sparseadv import datasets
    from sparseadv.network import ShiftedReLUNet
    X, y = datasets.sphere(n, d, seed=seed + 1)
    return ShiftedReLUNet(m, d, seed=seed), np.ascontiguousarray(X), y


def hsr_problem(m, d, n=1024, seed=0):
    """(W, X, b) of the half-space reporting benchmarks: m Gaussian rows N(0, I_d), n unit
    queries uniform on the sphere, b = sqrt(0.4 ln m); ``d == "sub4"``: weights near a
    4-dimensional subspace of R^64 (W = G @ B + 0.01 noise, B a random orthonormal 4 x 64
    basis)."""
    rng = np.random.default_rng(seed)
    if d == "sub4":
        B = np.linalg.qr(rng.standard_normal((64, 4)))[0].T
        W = rng.standard_normal((m, 4)) @ B + 0.01 * rng.standard_normal((m, 64))
        d = 64
    else:
        W = rng.standard_normal((m, d))
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return W, X, math.sqrt(0.4 * math.log(m))
