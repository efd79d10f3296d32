"""The dense engine: every neuron against every point, blocked BLAS (the honest baseline).

Each pass is one call into ``_core.dense_forward`` / ``_core.dense_weight_grad``, which tile the
(points x neurons) score matrix (tiles of 64 points x max(16, 2^12 / d) neurons, two per
thread, so each tile's dgemm does at most 2^18 multiply-adds) and do every product in dgemm.
An iteration with K attack steps evaluates (K + 2) m n inner products: K attack passes, the
forward pass for the loss at the final points and the recomputation inside the weight-gradient
pass (the mask is not stored, to keep memory O(tile)). The pass index and the threat model
change nothing here: every pass evaluates every pair.
"""
import numpy as np

from .. import _core
from .._validation import check_positive_int
from ..errors import InputError
from .base import Engine, all_rows

_MAX_VOLUME = 2 ** 40       # any larger tile volume gives the same tiles (whole m) anyway


class DenseEngine(Engine):
    name = "dense"

    def __init__(self, net, volume=262144):
        volume = check_positive_int("volume", volume)  # max m*n*k of one tile dgemm (_dense.pxi)
        if volume > _MAX_VOLUME:
            raise InputError(f"volume must be at most 2**40 multiply-adds per tile, got {volume}")
        super().__init__(net)
        self.volume = volume

    def input_direction(self, Xt, pass_index=None):
        net = self.net
        n = Xt.shape[0]
        f = np.empty(n)
        H = np.empty((n, net.d))
        self._add("inner_products",
                  _core.dense_forward(Xt, net.W, net.a, net.b, net.scale, f, H, None, self.volume))
        return H, f

    def forward(self, Xt, pass_index=None):
        net = self.net
        n = Xt.shape[0]
        f = np.empty(n)
        fired = np.empty(n, dtype=np.int64)
        self._add("inner_products",
                  _core.dense_forward(Xt, net.W, net.a, net.b, net.scale, f, None, fired,
                                      self.volume))
        self._add("fired_pairs", fired.sum())
        return f, fired

    def weight_gradient(self, Xt, coef, pass_index=None):
        net = self.net
        G = self._work("wgrad", net.W.size).reshape(net.W.shape)
        self._add("inner_products",
                  _core.dense_weight_grad(Xt, net.W, net.a, net.b, coef, G, self.volume))
        return all_rows(net.m), G
