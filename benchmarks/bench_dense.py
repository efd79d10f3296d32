"""asv: the dense adversarial iteration (the baseline) against plain numpy, and the attack alone.

Sizes are bundled as (m, n, d) tuples; data are seeded in setup. Counts (track_) are exact.
"""
import numpy as np

from .common import LARGE, SCALING_SIZES, Benchmark, problem, thread_info

DENSE_SIZES = [(4096, 256, 16), (16384, 256, 16), (16384, 1024, 64)]
if LARGE:
    DENSE_SIZES += [(65536, 1024, 64), (262144, 1024, 64)]


class _DenseStep(Benchmark):
    """One dense iteration after a warm-up iteration in setup (shared by the classes below;
    the leading underscore keeps asv from collecting it on its own)."""

    def setup(self, size, steps):
        from sparseadv import PGD, AdversarialTrainer
        m, n, d = size
        self.net, self.X, self.y = problem(m, n, d)
        self.trainer = AdversarialTrainer(self.net, PGD(0.05, steps), lr=1.0, engine="dense")
        self.record = self.trainer.step(self.X, self.y)

    def time_iteration(self, size, steps):
        self.trainer.step(self.X, self.y)

    def track_inner_products(self, size, steps):
        return self.record["inner_products"]

    track_inner_products.unit = "inner products"


class DenseIteration(_DenseStep):
    params = [DENSE_SIZES, [3]]
    param_names = ["m_n_d", "steps"]

    def peakmem_iteration(self, size, steps):
        self.trainer.step(self.X, self.y)

    def track_fired_per_input(self, size, steps):
        return self.record["fired_mean"]

    track_fired_per_input.unit = "neurons"


class DenseScaling(_DenseStep):
    """The dense iteration over the scaling grid (m-, n- and d-slices; ``SCALING_SIZES``), with
    its work counters: what ``sparseadv bench --from-asv`` fits exponents to."""
    params = [SCALING_SIZES, [3]]
    param_names = ["m_n_d", "steps"]
    timeout = 600 if LARGE else 120
    number = 1
    repeat = (3, 7, 15.0)
    warmup_time = 0.0  # setup already ran one iteration

    def track_fired_pairs(self, size, steps):
        return self.record["fired_pairs"]

    track_fired_pairs.unit = "pairs"


class NumpyIteration(Benchmark):
    """The same iteration written as the obvious numpy code (full n x m temporaries)."""
    params = [[s for s in DENSE_SIZES if s[0] * s[1] <= 2 ** 26], [3]]
    param_names = ["m_n_d", "steps"]

    def setup(self, size, steps):
        m, n, d = size
        self.net, self.X, self.y = problem(m, n, d)

    def time_iteration(self, size, steps):
        from sparseadv import reference
        reference.iteration(self.net.W, self.net.a, self.net.b, self.X, self.y, 0.05, steps, 1.0)


class Attack(Benchmark):
    """The PGD attack alone (dense gradients), l2 and l-inf."""
    params = [[(16384, 256, 16)] + ([(65536, 1024, 64)] if LARGE else []), ["2", "inf"]]
    param_names = ["m_n_d", "norm"]

    def setup(self, size, norm):
        m, n, d = size
        from sparseadv import PGD
        self.net, self.X, self.y = problem(m, n, d)
        self.attack = PGD(0.05, 3, norm=np.inf if norm == "inf" else 2)

    def time_pgd(self, size, norm):
        self.attack.perturb(self.net, self.X, self.y)


class Threads(Benchmark):
    """The thread counts in force while the suite runs (``common.thread_info``): asv.conf.json
    pins them through environment variables, and this records what the benchmark process
    actually got (largest BLAS pool via threadpoolctl; OpenMP's maximum via sparseadv._core),
    so results made with other counts can be told apart. n/a when threadpoolctl or the built
    extension is missing."""
    params = [["blas", "openmp"]]
    param_names = ["pool"]

    def setup(self, pool):
        info = thread_info()
        if pool == "blas":
            pools = [t for _, t in info.get("blas", []) if t is not None]
            if not pools:
                raise NotImplementedError("threadpoolctl not installed or no BLAS pool found")
            self.threads = max(pools)
        else:
            if "openmp" not in info:
                raise NotImplementedError("sparseadv._core is not built")
            self.threads = info["openmp"]

    def track_threads(self, pool):
        return self.threads

    track_threads.unit = "threads"
