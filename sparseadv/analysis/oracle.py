"""The oracle: one adversarial iteration handed the exact fired pairs of every pass.

The floor every engine is measured against (issue "within 2x of an oracle"): the same
iteration as the trainer's (K attack steps of ``PGD.run``, the forward pass at the final
points, the weight gradient, the update), where each pass evaluates exactly its fired pairs,
given for free. The pairs are found beforehand (:meth:`OracleIteration.prepare`, outside the
timed region) by running the very same iteration with brute-force pair finding
(``_core.dense_fired_pairs``) on a copy of the weights; the timed :meth:`step` then replays it
with the recorded pairs. Kernels: the certified engine's neuron-major passes
(``nm_forward``, ``nm_weight_grad`` reusing the forward's fired mask), the best we have.
Same start, same result as the dense engine to round-off (tests/test_contenders.py).
"""
import numpy as np

from .. import _core


class _Passes:
    """Stands in for an engine inside ``PGD.run``: each attack pass evaluates the pairs
    ``pairs(k, Xt)`` of pass k."""

    def __init__(self, net, pairs):
        self.net, self.pairs, self.k = net, pairs, 0
        self.inner_products = 0

    def input_gradient(self, Xt, y, *args, **kwargs):
        net = self.net
        Xt = np.ascontiguousarray(Xt)
        f = np.empty(Xt.shape[0])
        H = np.empty_like(Xt)
        cptr, cidx = self.pairs(self.k, Xt)
        self.k += 1
        ev, _ = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f, H,
                                 check=False)
        self.inner_products += ev
        H *= (f - y)[:, None]
        return H, f


def _iteration(net, X, y, attack, lr, pairs):
    """One iteration whose pass k evaluates ``pairs(k, Xt)`` (neuron-major (cptr, cidx));
    updates ``net.W``; returns the record (loss, inner products, fired pairs)."""
    passes = _Passes(net, pairs)
    Xt = np.ascontiguousarray(attack.run(X, y, passes))
    n = X.shape[0]
    cptr, cidx = pairs(attack.steps, Xt)
    f, fired = np.empty(n), np.empty(n, dtype=np.int64)
    mask = np.empty(cidx.shape[0], dtype=np.uint8)
    ev, nf = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f, None, fired,
                              mask, check=False)
    resid = f - y
    rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)
    G = np.empty((rows.shape[0], net.d))
    _core.nm_weight_grad(Xt, net.W, net.a, net.b, resid * (net.scale / n), cptr, cidx, rows,
                         G, mask, check=False)
    _core.sub_scaled_rows(net.W, rows, G, lr)
    return {"loss": 0.5 * float(resid @ resid) / n, "fired_pairs": nf,
            "inner_products": passes.inner_products + ev, "fired_mean": float(fired.mean())}


def fired_pairs(net, Xt):
    """All fired pairs of ``net`` at ``Xt`` as neuron-major CSR (cptr int64, cidx int32)."""
    indptr, indices = _core.dense_fired_pairs(Xt, net.W, net.b)
    return _core.csr_transpose(indptr, indices, net.m, False)


class OracleIteration:
    """``prepare()`` (untimed) then ``step()`` (timed), repeatedly: adversarial training of
    ``net`` (updated in place) on (X, y) with ``attack`` (a ``PGD``) and learning rate ``lr``."""

    def __init__(self, net, X, y, attack, lr):
        self.net, self.attack, self.lr = net, attack, float(lr)
        self.X, self.y = np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, float)
        self._pairs = None

    def prepare(self):
        """Find the fired pairs of every pass of the next iteration (the brute-force run on
        a copy of the weights)."""
        probe = self.net.copy()
        recorded = []

        def find(k, Xt):
            recorded.append(fired_pairs(probe, Xt))
            return recorded[-1]
        _iteration(probe, self.X, self.y, self.attack, self.lr, find)
        self._pairs = recorded

    def step(self):
        """The iteration prepared last; returns its record."""
        if self._pairs is None:
            raise RuntimeError("OracleIteration.step: call prepare() first")
        pairs, self._pairs = self._pairs, None
        return _iteration(self.net, self.X, self.y, self.attack, self.lr,
                          lambda k, Xt: pairs[k])
