"""Shared ground of the asv suite: the base class, the grids, seeded data, engine names,
thread counts.

The default sizes run in a few minutes on 2 cores; ``SPARSEADV_BENCH_GRID=large`` selects the
opt-in paper-scale sizes (docs/benchmarks.md).

Sizes and data come from ``sparseadv/analysis/grid.py``, loaded by path from this checkout
rather than imported from the installed package: asv benchmarks older commits with the
current suite, and those have no ``sparseadv.analysis``; the file needs only numpy.
"""
import importlib.util
import os

_GRID_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sparseadv",
                        "analysis", "grid.py")
_spec = importlib.util.spec_from_file_location("_sparseadv_bench_grid", _GRID_PY)
grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grid)

problem = grid.problem
hsr_problem = grid.hsr_problem

LARGE = os.environ.get("SPARSEADV_BENCH_GRID", "default").lower() == "large"

#: The scaling grid of ``sparseadv bench`` (``DenseScaling``; ``--from-asv`` fits it).
SCALING_SIZES = grid.grid_points("large" if LARGE else "default")

#: Every engine the suite knows by name; those not in a commit's registry are skipped.
ENGINE_NAMES = ["dense", "tree", "certified"]


class Benchmark:
    """Base of every asv class here: the timing attributes in one place (asv's defaults
    except a longer timeout; subclasses override what they need)."""
    timeout = 300
    number = 0             # asv default: calls per sample chosen by asv
    repeat = 0             # asv default: (1, 10, 20.0) samples
    warmup_time = -1       # asv default


class OneCall(Benchmark):
    """One call per sample and no untimed calls in between, for benchmarks whose ``setup``
    prepares exactly one call (asv runs ``setup`` before every sample)."""
    number = 1
    warmup_time = 0.0
    repeat = (3, 10, 20.0)


def require_engine(name):
    """Skip the current benchmark (NotImplementedError: asv shows n/a, not a failure) when
    ``name`` is not registered in this commit."""
    try:
        from sparseadv.engines import ENGINES
    except ImportError:
        ENGINES = {"dense": None}
    if name not in ENGINES:
        raise NotImplementedError(f"engine {name!r} is not in this commit")


def thread_info():
    """Thread counts in force: the environment variables, the BLAS pools (threadpoolctl, when
    installed) and OpenMP's maximum (``sparseadv._core``, when built); ``bench_dense.Threads``
    records them with every asv run and ``sparseadv bench --from-asv`` prints them."""
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
