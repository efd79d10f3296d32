"""asv: seconds per epoch against the batch size, dense and certified engines.

One epoch = ceil(n / batch size) iterations (one for full batch, ``batch_size=None``), l2 PGD,
eps = 0.05, 3 steps, lr = "auto", data and network from ``common.problem``. ``setup`` trains
one warm-up epoch (the learning rate, the certified engine's build and its budgets' first
adaptation), so the benchmark measures a steady-state epoch. ``track_inner_products`` reports
the epoch's counted inner products (deterministic).

Default sizes m = 2^12, n = 1024, d = 16 (seconds on 2 cores); ``SPARSEADV_BENCH_GRID=large``
selects m = 2^16, n = 8192, d = 64 (issue 14's size). Commits before mini-batches are skipped.
"""
from .common import LARGE, Benchmark, problem, require_engine

if LARGE:
    SIZE = (2 ** 16, 8192, 64)
    BATCH_SIZES = [None, 4096, 1024, 256, 64]
else:
    SIZE = (2 ** 12, 1024, 16)
    BATCH_SIZES = [None, 256, 64]


class BatchEpoch(Benchmark):
    """One epoch of adversarial training at ``SIZE`` for each batch size."""
    params = (["dense", "certified"], BATCH_SIZES)
    param_names = ["engine", "batch_size"]
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0
    timeout = 3600 if LARGE else 600

    def setup(self, engine, batch_size):
        require_engine(engine)
        import inspect

        from sparseadv import PGD, AdversarialTrainer
        if "batch_size" not in inspect.signature(AdversarialTrainer).parameters:
            raise NotImplementedError("no mini-batches in this commit")
        net, self.X, self.y = problem(*SIZE)
        self.trainer = AdversarialTrainer(net, PGD(0.05, 3), lr="auto", engine=engine,
                                          batch_size=batch_size, seed=0)
        self.trainer.fit(self.X, self.y, epochs=1, progress=False)         # warm-up
        self.history = self.trainer.fit(self.X, self.y, epochs=1, progress=False)

    def time_epoch(self, engine, batch_size):
        self.trainer.fit(self.X, self.y, epochs=1, progress=False)

    def track_inner_products(self, engine, batch_size):
        return int(self.history["inner_products"].sum())
    track_inner_products.unit = "inner products"
