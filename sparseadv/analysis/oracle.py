"""The oracle: one adversarial iteration handed the exact fired pairs of every pass.

The floor every engine is measured against (issue "within 2x of an oracle"): the same
iteration as the trainer's (K attack steps of ``PGD.run``, the forward pass at the final
points, the weight gradient, the update), where the fired pairs of every pass are known in
advance. It runs the certified engine's pass kernel (``_core.nm_pass``) the way a perfect
engine would: over U, the union of the iteration's fired pairs (neuron-major),

- pass 0 evaluates every pair of U once and sums H_i = scale sum a_r w_r and F0_i over the
  fired ones (f_i = <H_i, x_i> - b F0_i);
- each later pass evaluates exactly the pairs whose fired state changes (a deadline of 0 for
  them, +inf for all others) and adds or removes only their terms;
- the weight gradient sums the final fired pairs (``nm_weight_grad`` over the pass's state,
  no pair evaluated again), and the step updates the rows listed (``sub_scaled_rows``).

So it pays for no candidate beyond the fired pairs, no re-evaluation of a pair that does not
flip, no bookkeeping of bounds or anchors: what is left of an iteration once the fired sets
are free. The sets are found beforehand (:meth:`OracleIteration.prepare`, outside the timed
region) on a copy of the weights: the iteration is run once with brute-force pair finding
(``_core.dense_fired_pairs``) to get U, then once more with every pair of U evaluated at every
pass by the same kernel, whose states give the flips of the timed run (the same kernel on the
same pairs at the same points, so the timed :meth:`step` reproduces that run bit for bit).
Same start, same result as the dense engine to round-off (tests/test_contenders.py).
"""
import numpy as np

from .. import _core


class _Passes:
    """Stands in for an engine inside ``PGD.run``: pass 0 evaluates every pair of U (fresh),
    pass k > 0 the pairs whose deadline (``due(k)``: float32 per pair of U) is 0."""

    def __init__(self, net, n, U, due, buf):
        self.net, self.U, self.due, self.records = net, U, due, buf.records
        self.k = 0
        self.inner_products = 0
        self.state = buf.state[:len(U[1])]
        self.H, self.F0 = np.zeros((n, net.d)), np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)
        self._dual, self._slack = buf.dual[:net.m], buf.slack[:net.m]

    def forward(self, Xt):
        """f at Xt (pass self.k), the sums H, F0 and states updated; returns f."""
        net, (ptr, idx) = self.net, self.U
        f = np.empty(Xt.shape[0])
        if self.k == 0:
            ev, ex, _, _ = _core.nm_pass(Xt, net.W, net.a, net.b, net.scale, ptr, idx,
                                         self.state, self.H, self.F0, self.count, f, True,
                                         records=self.records, check=False)
        else:
            ev, ex, _, _ = _core.nm_pass(Xt, net.W, net.a, net.b, net.scale, ptr, idx,
                                         self.state, self.H, self.F0, self.count, f, False,
                                         deadline=self.due(self.k), clock=0.0,
                                         dual_norm=self._dual, slack=self._slack, cap=0.0,
                                         records=self.records, check=False)
        self.inner_products += ev + ex + Xt.shape[0]
        self.k += 1
        return f

    def input_gradient(self, Xt, y, *args, **kwargs):
        Xt = np.ascontiguousarray(Xt)
        f = self.forward(Xt)
        return self.H * (f - y)[:, None], f


class _Buffers:
    """Work memory kept from iteration to iteration, as the engines keep theirs (no page
    faults of fresh memory inside the timed step): the kernel's records, the pair states,
    the gradient rows, and the per-neuron inputs of the deadlines (whatever deadlines the
    kernel writes are replaced by the plan's before the next pass)."""

    def __init__(self):
        self.records = self.state = self.G = self.dual = self.slack = None

    def fit(self, pairs, m, d):
        """Room for ``pairs`` pairs and m gradient rows, every page touched now."""
        if self.state is None or len(self.state) < pairs:
            self.records = np.zeros(pairs + pairs // 8 + 16, dtype=np.int64)
            self.state = np.zeros(len(self.records), dtype=np.uint8)
            self.records.fill(0)
            self.state.fill(0)
        if self.G is None or self.G.shape[0] < m * d:
            self.G = np.zeros(m * d)
            self.G.fill(0.0)
        if self.dual is None or len(self.dual) < m:
            self.dual, self.slack = np.ones(m), np.zeros(m)
            self.slack.fill(0.0)


def _iteration(net, X, y, attack, lr, U, due, buf, rows=None, states=None):
    """One iteration over the pairs U = (ptr, idx) with pass k > 0 evaluating the pairs
    ``due(k)`` marks, in the work memory ``buf`` (a fitted ``_Buffers``); updates ``net.W``
    with the gradient of rows ``rows`` (default: every neuron with a pair in U).
    ``states``: a list that gets a copy of the pair states after every pass. Returns the
    record (loss, inner products, fired pairs)."""
    n = X.shape[0]
    buf.state[:len(U[1])] = 0
    passes = _Passes(net, n, U, due, buf)
    if states is not None:
        inner = passes.forward

        def forward(Xt):
            f = inner(Xt)
            states.append(passes.state.copy())
            return f
        passes.forward = forward
    Xt = np.ascontiguousarray(attack.run(X, y, passes))
    f = passes.forward(Xt)
    resid = f - y
    ptr, idx = U
    if rows is None:
        rows = np.flatnonzero(np.diff(ptr)).astype(np.int64)
    G = buf.G[:rows.shape[0] * net.d].reshape(rows.shape[0], net.d)
    _core.nm_weight_grad(Xt, net.W, net.a, net.b, resid * (net.scale / n), ptr, idx, rows, G,
                         passes.state, check=False)
    _core.sub_scaled_rows(net.W, rows, G, lr)
    fired = passes.count
    return {"loss": 0.5 * float(resid @ resid) / n, "fired_pairs": int(fired.sum()),
            "inner_products": passes.inner_products, "fired_mean": float(fired.mean())}


def fired_pairs(net, Xt):
    """All fired pairs of ``net`` at ``Xt`` as neuron-major CSR (cptr int64, cidx int32)."""
    indptr, indices = _core.dense_fired_pairs(Xt, net.W, net.b)
    return _core.csr_transpose(indptr, indices, net.m, False)


def _union(sets, n):
    """The union of neuron-major CSR pair sets as one CSR, sorted within each neuron."""
    keys = []
    for ptr, idx in sets:
        r = np.repeat(np.arange(len(ptr) - 1, dtype=np.int64), np.diff(ptr))
        keys.append(r * n + idx)
    keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    m = len(sets[0][0]) - 1
    ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n, minlength=m), out=ptr[1:])
    return ptr, (keys % n).astype(np.int32)


class OracleIteration:
    """``prepare()`` (untimed) then ``step()`` (timed), repeatedly: adversarial training of
    ``net`` (updated in place) on (X, y) with ``attack`` (a ``PGD``) and learning rate ``lr``."""

    def __init__(self, net, X, y, attack, lr):
        self.net, self.attack, self.lr = net, attack, float(lr)
        self.X, self.y = np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, float)
        self._plan = None
        self._buf = _Buffers()

    def _probe(self, run):
        """``run(probe)`` on a copy of the weights, the attack's random state put back."""
        rng = getattr(self.attack, "_rng", None)
        saved = rng.bit_generator.state if rng is not None else None
        try:
            return run(self.net.copy())
        finally:
            if rng is not None:
                rng.bit_generator.state = saved

    def prepare(self):
        """Find the fired pairs of every pass of the next iteration and the flips between
        passes (two runs on a copy of the weights)."""
        n = self.X.shape[0]
        found = []

        def brute(probe):
            # the iteration with every pass handed its brute-force fired pairs
            def pairs(Xt):
                found.append(fired_pairs(probe, Xt))
                return found[-1]
            self._brute_iteration(probe, pairs)
        self._probe(brute)
        U = _union(found, n)
        self._buf.fit(len(U[1]), self.net.m, self.net.d)
        everything = np.zeros(len(U[1]), dtype=np.float32)
        states = []
        self._probe(lambda probe: _iteration(probe, self.X, self.y, self.attack, self.lr, U,
                                             lambda k: everything.copy(), self._buf,
                                             states=states))
        on = [(s & 1).astype(bool) for s in states]
        due = [None] + [np.where(on[k] != on[k - 1], np.float32(0), np.float32(np.inf))
                        for k in range(1, len(on))]
        owner = np.repeat(np.arange(self.net.m), np.diff(U[0]))
        rows = np.flatnonzero(np.bincount(owner[on[-1]], minlength=self.net.m)).astype(np.int64)
        self._plan = (U, due, rows)

    def _brute_iteration(self, probe, pairs):
        """The passes of the iteration on ``probe``, pass k evaluating ``pairs(Xt)`` afresh
        (nm_forward); the weights are not stepped."""
        class Fresh:
            def input_gradient(_, Xt, y, *args, **kwargs):
                Xt = np.ascontiguousarray(Xt)
                f, H = np.empty(Xt.shape[0]), np.empty_like(Xt)
                cptr, cidx = pairs(Xt)
                _core.nm_forward(Xt, probe.W, probe.a, probe.b, probe.scale, cptr, cidx, f, H,
                                 check=False)
                H *= (f - y)[:, None]
                return H, f
        pairs(np.ascontiguousarray(self.attack.run(self.X, self.y, Fresh())))

    def step(self):
        """The iteration prepared last; returns its record."""
        if self._plan is None:
            raise RuntimeError("OracleIteration.step: call prepare() first")
        (U, due, rows), self._plan = self._plan, None
        return _iteration(self.net, self.X, self.y, self.attack, self.lr, U,
                          lambda k: due[k], self._buf, rows=rows)
