"""The worker side of neuron sharding: one contiguous block of neurons and its own engine.

docs/design.md §8: f(x) = Σ_s f_s(x), ∇_x f = Σ_s ∇_x f_s, and the weight step of a neuron
needs only its own row and the per-point coefficients (f_i − y_i)·scale/n. A ``ShardWorker``
holds rows [lo, hi) of W (and of a) as a ``ShardNet``: a ``ShiftedReLUNet`` whose output scale
is 1/√m of the WHOLE network (not of its own rows), with the same b, so that its engine's
partial outputs and input gradients sum to the full network's.

The worker is stateful (a Dask actor, see ``sparseadv.distributed.trainer``); its methods are
the phases of one iteration, called by the client in this order:

    begin(threat)               commit the previous step; engine.begin_iteration(X, y, threat)
    input_pass(Xt, k), k < K    partial outputs f_s and partial input gradients H_s = ∇_x f_s
    forward_pass(Xt, K)         partial outputs and fired counts at the final points
    weight_step(coef, lr, K)    weight gradient and ``net.apply_step`` over the shard's rows,
                                kept revocable (then commit() or rollback())

with the pass indices of the engine protocol (docs/design.md §6; ``engines.base``). A step is
revocable until the next ``begin``/``commit``: the rows it changed keep their previous values
in a backup, so that if another shard fails while applying the same step the client can
``rollback()`` this one (the iteration is then applied nowhere); the engine is then told
``weights_reset()``, as the protocol asks after a rolled-back step.
"""
import os

import numpy as np

from ..engines import make_engine
from ..network import ShiftedReLUNet
from .autolr import fired_count_gram


class ShardNet(ShiftedReLUNet):
    """Rows of a wider network: the output scale is that of the whole network (1/√m_total)."""

    @classmethod
    def from_rows(cls, W, a, b, m_total):
        net = cls.from_arrays(W, a, b)
        net._scale = 1.0 / np.sqrt(int(m_total))
        return net

    @property
    def scale(self):
        return self._scale


class _UnitResidual:
    """Stands in for the labels y in ``engine.input_gradient(Xt, y)``: the engines return
    H·(f − y) with f their PARTIAL output; ``f - _UnitResidual()`` is all ones, so the
    engine hands back H = ∇_x f_s itself (multiplied by 1.0, exact). The client multiplies
    the summed H by the residual of the summed f."""

    __array_ufunc__ = None    # numpy defers ``f - self`` to __rsub__

    def __rsub__(self, f):
        return np.ones_like(f)


class ShardWorker:
    """Rows [lo, hi) of the network with their own engine; runs on a Dask worker.

    Parameters: W (rows, d) and a (rows,) of the shard, b, m_total (the whole network's
    width), the engine's name and options."""

    def __init__(self, W, a, b, m_total, engine, engine_options):
        self.net = ShardNet.from_rows(W, a, b, m_total)
        self.engine = make_engine(engine, self.net, **dict(engine_options))
        self.X = self.y = self._Xt = None
        self._backup = None
        self._fault = None

    # -- data and iteration phases ----------------------------------------------------------

    def set_data(self, X, y):
        self.X, self.y = X, y

    def begin(self, threat):
        self._check_fault("begin")
        self.commit()
        self.engine.begin_iteration(self.X, self.y, threat)

    def input_pass(self, Xt, pass_index):
        self._check_fault("input_pass")
        H, f = self.engine.input_gradient(Xt, _UnitResidual(), pass_index=pass_index)
        return np.array(f), np.array(H)     # copies: engine buffers are reused

    def forward_pass(self, Xt, pass_index):
        self._check_fault("forward_pass")
        f, fired = self.engine.forward(Xt, pass_index=pass_index)
        self._Xt = Xt
        return np.array(f), np.array(fired)

    def weight_step(self, coef, lr, pass_index):
        """Weight gradient over this shard's rows at the points of the last ``forward_pass``
        and ``net.apply_step``, revocable until ``commit``; returns the engine's counters of
        the iteration."""
        self._check_fault("weight_step")
        rows, G = self.engine.weight_gradient(self._Xt, coef, pass_index=pass_index)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        backup = (rows.copy(), self.net.W[rows])
        self.net.apply_step(rows, G, lr)        # all or nothing on this shard
        self._backup = backup
        try:
            self._check_fault("apply")
        except BaseException:
            self.rollback()
            raise
        self._Xt = None
        return dict(self.engine.counters)

    def commit(self):
        self._backup = None

    def rollback(self):
        """Undo an uncommitted ``weight_step``: the rows get their previous values back and
        the engine is told ``weights_reset()`` (it was already told of the new rows)."""
        if self._backup is None:
            return False
        rows, old = self._backup
        self.net.W[rows] = old
        self._backup = None
        self.engine.weights_reset()
        return True

    # -- queries ------------------------------------------------------------------------------

    def weights(self):
        """This shard's rows of W (a copy), as of the last committed or pending step."""
        return self.net.W.copy()

    def gram_counts(self, X):
        """Σ over this shard's neurons of a_r² 1[r fires on x_i] 1[r fires on x_j] (n × n)."""
        return fired_count_gram(self.net, X)

    def pid(self):
        return os.getpid()

    # -- fault injection (tests) -----------------------------------------------------------

    def inject_fault(self, phase, kill=False):
        """Make the next call of ``phase`` fail: raise RuntimeError, or with ``kill`` end this
        worker's process (``os._exit``) as a crash would. For the fault tests."""
        self._fault = (phase, bool(kill))

    def _check_fault(self, phase):
        if self._fault is not None and self._fault[0] == phase:
            kill = self._fault[1]
            self._fault = None
            if kill:
                os._exit(1)
            raise RuntimeError(f"injected fault in {phase}")
