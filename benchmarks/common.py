"""Shared helpers of the asv suite and the table scripts: seeded data, grid selection, engine
names, thread counts, median timing.

The default grids run in a few minutes on 2 cores; ``SPARSEADV_BENCH_GRID=large`` selects the
opt-in paper-scale grids (see README "Benchmarks").
"""
import os
import statistics
import time

import numpy as np

GRID = os.environ.get("SPARSEADV_BENCH_GRID", "default").lower()
LARGE = GRID == "large"


def _slices(center, ms, ns, ds):
    m0, n0, d0 = center
    pts = {(m0, n0, d0)}
    pts.update((m, n0, d0) for m in ms)
    pts.update((m0, n, d0) for n in ns)
    pts.update((m0, n0, d) for d in ds)
    return sorted(pts)


# The (m, n, d) grid of the scaling report (``python -m sparseadv.scaling``, same numbers as
# ``sparseadv.scaling.GRIDS``, repeated here so that the suite also runs on older commits):
# an m-slice, an n-slice and a d-slice through a centre point, which identify all three
# exponents. ``--from-asv`` reads every benchmark with an ``m_n_d`` parameter.
if LARGE:
    SCALING_SIZES = _slices((65536, 1024, 32), [2 ** k for k in range(10, 21)],
                            [256, 512, 1024, 2048, 4096], [8, 16, 32, 64, 128])
else:
    SCALING_SIZES = _slices((16384, 256, 16), [2 ** k for k in range(12, 17)],
                            [128, 256, 512], [8, 16, 32])

# Every engine the suite knows by name; those not in this commit's registry are skipped
# (setup raises NotImplementedError, which asv records as n/a, not as a failure).
ENGINE_NAMES = ["dense", "tree", "certified"]


def require_engine(name):
    """Skip the current asv benchmark (NotImplementedError) when ``name`` is not registered."""
    try:
        from sparseadv.engines import ENGINES
    except ImportError:
        ENGINES = {"dense": None}
    if name not in ENGINES:
        raise NotImplementedError(f"engine {name!r} is not in this commit")


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
    """Thread counts in force: the environment variables, the BLAS pools (threadpoolctl, when
    installed) and OpenMP's maximum (``sparseadv._core``, when built). ``bench_dense.Threads``
    records the numbers with every asv run; ``python -m sparseadv.scaling --from-asv`` prints
    them in the report's setup."""
    info = {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "MKL_NUM_THREADS")}
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()
                        if p.get("user_api") == "blas"]
    except ImportError:
        pass
    try:
        from sparseadv import _core
        info["openmp"] = int(_core.omp_max_threads())
    except (ImportError, AttributeError):
        pass
    return info


def median_times(fns, repeats):
    """Median wall time of each function over ``repeats`` runs, the runs interleaved
    (f, g, f, g, ...) so that all see the same machine load. One function: a plain median."""
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]
