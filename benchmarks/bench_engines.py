"""asv benchmarks of one adversarial iteration per engine (``common.ENGINE_NAMES``: dense,
tree, certified; an engine missing from a commit's registry is skipped, shown as n/a).

Sizes are bundled in one tuple parameter (m, n, d); data and network come from
``common.problem`` (seeded, uniform on the sphere, random +-1 labels), built in ``setup``,
which also runs one warm-up step (the sparse engines build their structures there), so every
benchmark measures a steady-state step. Default grid: small (a couple of minutes on 2 cores).
``SPARSEADV_BENCH_GRID=large`` (``common.LARGE``) selects m up to 2^18, n in {256, 1024, 4096},
d in {3, 16, 64, 256}.

``python -m sparseadv.scaling --from-asv`` reads this class for every engine that no
``*Scaling`` class covers (``bench_dense.DenseScaling`` covers dense).
"""
from .common import ENGINE_NAMES, LARGE, problem, require_engine

if LARGE:
    _SIZES = [(m, n, d) for m in (2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18)
              for n in (256, 1024, 4096) for d in (3, 16, 64, 256)]
else:
    _SIZES = [(m, 256, d) for m in (2 ** 12, 2 ** 14) for d in (3, 16, 64)]


class EngineIteration:
    """One l2-PGD (eps = 0.05, 3 steps, lr = "auto") adversarial iteration."""

    params = (ENGINE_NAMES, _SIZES)
    param_names = ["engine", "size (m, n, d)"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, engine, size):
        require_engine(engine)
        from sparseadv import PGD, AdversarialTrainer
        m, n, d = size
        net, self.X, self.y = problem(m, n, d)
        self.trainer = AdversarialTrainer(net, PGD(0.05, steps=3), lr="auto", engine=engine)
        self.trainer.step(self.X, self.y)                  # warm-up: lr, structures
        # the step measured by the track_ benchmarks (one more step, deterministic)
        self.record = self.trainer.step(self.X, self.y)
        self.n = n

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
