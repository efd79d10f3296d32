"""Run-time estimates printed before long measurements (arithmetic of the dense cost model,
not measurements)."""
from ..theory import dense_flops

#: Effective dense rate assumed by :func:`estimate_dense_seconds`, GFLOP/s (nominal flops of
#: ``theory.dense_flops``): about half the rate ``tools/dense_table.py`` measured on 2 quiet
#: cores (docs/benchmarks.md), conservative for a shared machine and the grids' smaller d.
DENSE_GFLOPS = 25.0

#: Duration of ``sparseadv reproduce --full``, quoted by the CLI help and by REPORT.md: as
#: measured on 2 cores (the run and its commit are in docs/benchmarks.md), rounded up.
FULL_ESTIMATE = ("about 30 minutes on 2 quiet cores, 45 on busy ones (measured; "
                 "docs/benchmarks.md), 5 GB of memory")


def estimate_dense_seconds(points, repeats=3, steps=3, warmup=1, gflops=DENSE_GFLOPS):
    """Rough run time of the dense engine over ``points``: (warmup + repeats) iterations of
    ``theory.dense_flops`` each at ``gflops`` GFLOP/s. Arithmetic only: on small grids per-call
    overheads and the automatic step size dominate, and a loaded machine is slower."""
    flops = sum(dense_flops(m, n, d, steps) for m, n, d in points)
    return flops * (repeats + warmup) / (gflops * 1e9)
