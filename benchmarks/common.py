"""Shared helpers of the asv suite: seeded data, grid selection, thread pinning.

The default grids run in a few minutes on 2 cores; ``SPARSEADV_BENCH_GRID=large`` selects the
opt-in paper-scale grids (see README "Benchmarks").
"""
import os

import numpy as np

GRID = os.environ.get("SPARSEADV_BENCH_GRID", "default").lower()
LARGE = GRID == "large"


def unit_sphere(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def problem(m, n, d, seed=0):
    """(net, X, y): a Gaussian-initialised network and n unit-sphere points with ±1 labels."""
    from sparseadv import ShiftedReLUNet
    X = unit_sphere(n, d, seed + 1)
    y = np.where(np.random.default_rng(seed + 2).random(n) < 0.5, -1.0, 1.0)
    return ShiftedReLUNet(m, d, seed=seed), X, y


def thread_info():
    """Thread counts in force (recorded next to results by the scaling report)."""
    info = {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()]
    except ImportError:
        pass
    return info
