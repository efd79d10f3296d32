"""asv benchmarks of one adversarial iteration per engine (dense, certified, and tree when the
registry has it).

Sizes are bundled in one tuple parameter (m, n, d); data (uniform on the sphere, random +-1
labels) and the network are seeded in ``setup``, which also runs one warm-up step (the sparse
engines build their structures there), so every benchmark measures a steady-state step.
Default grid: small (a couple of minutes on 2 cores). ``SPARSEADV_BENCH_GRID=large`` selects
m up to 2^18, n in {256, 1024, 4096}, d in {3, 16, 64, 256}.
"""
import os

import numpy as np

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet
from sparseadv.engines import ENGINES

_ENGINE_NAMES = [name for name in ("dense", "certified", "tree") if name in ENGINES]

if os.environ.get("SPARSEADV_BENCH_GRID", "").lower() == "large":
    _SIZES = [(m, n, d) for m in (2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18)
              for n in (256, 1024, 4096) for d in (3, 16, 64, 256)]
else:
    _SIZES = [(m, 256, d) for m in (2 ** 12, 2 ** 14) for d in (3, 16, 64)]


def _problem(m, n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], n)
    return X, y, ShiftedReLUNet(m, d, seed=seed + 1)


class EngineIteration:
    """One l2-PGD (eps = 0.05, 3 steps, lr = "auto") adversarial iteration."""

    params = (_ENGINE_NAMES, _SIZES)
    param_names = ["engine", "size (m, n, d)"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, engine, size):
        m, n, d = size
        self.X, self.y, net = _problem(m, n, d)
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
