"""asv: the references the engines are measured against, on the iteration of
``bench_engines.EngineIteration`` (same data, l2 PGD eps = 0.05, lr = "auto" at the start).

* ``OracleIteration``: the iteration handed the exact fired pairs of every pass
  (``sparseadv.analysis.oracle``): the pairs are found in ``setup``, outside the timed region,
  and every sample is exactly one iteration from the same weights (``number = 1``, setup
  before each sample restores them). The floor of any exact sparse engine.
* ``TorchIteration``: the same iteration in PyTorch on CPU (autograd PGD, SGD step), float32
  and float64 (``sparseadv.analysis.torch_peer``); n/a when torch is not installed.

Both are skipped (n/a) on commits without ``sparseadv.analysis``.
"""
from .common import LARGE, Benchmark, OneCall, problem

if LARGE:
    SIZES = [(2 ** 18, 1024, 64), (2 ** 18, 1024, 3), (2 ** 16, 1024, 64)]
else:
    SIZES = [(m, 256, d) for m in (2 ** 12, 2 ** 14) for d in (3, 16, 64)]


def _start(size, steps):
    """(net, X, y, attack, lr) of the shared start."""
    from sparseadv import PGD
    from sparseadv.stepsize import auto_lr
    m, n, d = size
    net, X, y = problem(m, n, d)
    return net, X, y, PGD(0.05, steps), auto_lr(net, X)


class OracleIteration(OneCall):
    params = (SIZES, [3, 10] if LARGE else [3])
    param_names = ["m_n_d", "steps"]
    timeout = 600

    def setup(self, size, steps):
        try:
            from sparseadv.analysis.oracle import OracleIteration as Oracle
        except ImportError:
            raise NotImplementedError("sparseadv.analysis.oracle is not in this commit")
        net, X, y, attack, lr = _start(size, steps)
        self.W0 = net.W.copy()
        self.net, self.oracle = net, Oracle(net, X, y, attack, lr)
        self.oracle.prepare()                        # the fired pairs: untimed
        self.record = self.oracle.step()
        self.net.W[...] = self.W0                    # the timed call starts from W0 again
        self.oracle.prepare()

    def time_iteration(self, size, steps):
        self.oracle.step()

    def peakmem_iteration(self, size, steps):
        self.oracle.step()

    def track_inner_products(self, size, steps):
        return self.record["inner_products"]
    track_inner_products.unit = "inner products"

    def track_fired_pairs(self, size, steps):
        return self.record["fired_pairs"]
    track_fired_pairs.unit = "pairs"


class TorchIteration(Benchmark):
    params = (SIZES if not LARGE else SIZES[:1], [3], ["float32", "float64"])
    param_names = ["m_n_d", "steps", "dtype"]
    timeout = 900
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, size, steps, dtype):
        try:
            import torch  # noqa: F401
            from sparseadv.analysis.torch_peer import TorchIteration as Peer
        except ImportError:
            raise NotImplementedError("torch (or sparseadv.analysis) is not installed")
        net, X, y, attack, lr = _start(size, steps)
        self.peer = Peer(net, X, y, attack, lr, dtype)
        self.peer.step()                             # warm-up (threads, allocator)

    def time_iteration(self, size, steps, dtype):
        self.peer.step()

    def peakmem_iteration(self, size, steps, dtype):
        self.peer.step()
