"""asv: one adversarial iteration per engine (``common.ENGINE_NAMES``; an engine missing from
a commit's registry is skipped, shown as n/a).

Sizes are bundled in one (m, n, d) tuple parameter; data and network from ``common.problem``,
built in ``setup``, which also runs one warm-up step (the sparse engines build their
structures there), so every benchmark measures a steady-state step. l2 PGD, eps = 0.05,
lr = "auto". ``SPARSEADV_BENCH_GRID=large`` selects m up to 2^18, n in {256, 1024, 4096},
d in {3, 16, 64, 256}.

``sparseadv bench --from-asv`` reads this class for every engine that no ``*Scaling`` class
covers (``bench_dense.DenseScaling`` covers dense).
"""
from .common import ENGINE_NAMES, LARGE, Benchmark, problem, require_engine

if LARGE:
    SIZES = [(m, n, d) for m in (2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18)
             for n in (256, 1024, 4096) for d in (3, 16, 64, 256)]
    MEMORY_SIZES = [(2 ** 16, 1024, 64), (2 ** 18, 1024, 64), (2 ** 20, 1024, 64)]
else:
    SIZES = [(m, 256, d) for m in (2 ** 12, 2 ** 14) for d in (3, 16, 64)]
    MEMORY_SIZES = [(2 ** 14, 256, 64)]


class _Trained(Benchmark):
    """A trainer of ``engine`` after one warm-up step (and one more measured by track_)."""

    lr = "auto"

    def setup(self, engine, size, steps=3):
        require_engine(engine)
        from sparseadv import PGD, AdversarialTrainer
        m, n, d = size
        net, self.X, self.y = problem(m, n, d)
        self.trainer = AdversarialTrainer(net, PGD(0.05, steps=steps), lr=self.lr,
                                          engine=engine)
        self.trainer.step(self.X, self.y)                  # warm-up: lr, structures
        self.record = self.trainer.step(self.X, self.y)    # what the track_ methods report
        self.n = n


class EngineIteration(_Trained):
    """One l2-PGD (eps = 0.05, 3 steps, lr = "auto") adversarial iteration."""
    params = (ENGINE_NAMES, SIZES)
    param_names = ["engine", "m_n_d"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def time_iteration(self, engine, size):
        self.trainer.step(self.X, self.y)

    def peakmem_iteration(self, engine, size):
        self.trainer.step(self.X, self.y)

    def track_inner_products(self, engine, size):
        return self.record["inner_products"]
    track_inner_products.unit = "inner products"

    def track_fired_pairs_per_input(self, engine, size):
        return self.record["fired_pairs"] / self.n
    track_fired_pairs_per_input.unit = "neurons"

    def track_candidate_pairs(self, engine, size):
        return self.record["candidate_pairs"]
    track_candidate_pairs.unit = "pairs"

    def track_reanchored(self, engine, size):
        return self.record["reanchored"]
    track_reanchored.unit = "neurons"


class EngineMemory(_Trained):
    """Peak resident memory of a process that runs an engine's iteration (setup included:
    asv's peakmem is the process's high-water mark), at the sizes where memory matters
    (large grid: m = 2^16, 2^18 and 2^20, n = 1024, d = 64, steps 3 and 10; issue 12's
    targets: under 600 MB at 2^18, steps 10, and under 4x the weights' bytes everywhere).
    lr = 2000, the setting of issue 12 (and no NTK power iteration in the peak)."""
    params = (ENGINE_NAMES, MEMORY_SIZES, [3, 10] if LARGE else [3])
    param_names = ["engine", "m_n_d", "steps"]
    timeout = 1200 if LARGE else 300
    lr = 2000.0

    def peakmem_iteration(self, engine, size, steps):
        self.trainer.step(self.X, self.y)
