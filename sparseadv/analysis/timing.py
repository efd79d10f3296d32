"""Wall-clock medians for the one-off table scripts in ``tools/``."""
import statistics
import time


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
