"""The two-layer shifted-ReLU network of the paper (docs/design.md §2).

f(W, x) = m^{-1/2} * sum_r a_r * max(<w_r, x> - b, 0), with W trained and a fixed. The
network's own methods evaluate every neuron (the blocked dense kernels of ``_core``); the
sparse engines in ``sparseadv.engines`` compute the same quantities over fired neurons only.

The network owns its weights (docs/design.md §6): ``apply_step`` is the one in-place change,
all or nothing, and tells every engine bound to the network (its listeners) which rows moved;
assigning ``W``, ``a`` or ``b`` tells them to forget what they derived from the old values.
"""
import weakref

import numpy as np

from . import _core
from .errors import DivergenceError, InputError
from ._validation import (check_allocation, check_bool, check_matrix, check_positive_int,
                          check_real, check_seed, check_vector, check_Xy)
from .theory import default_threshold


# apply_step checks the moved rows one by one only when its bound on |W| passes this
_SAFE_PEAK = 1e300


class ShiftedReLUNet:
    """Two-layer network f(W, x) = m^{-1/2} sum_r a_r relu(<w_r, x> - b).

    Parameters
    ----------
    m, d : int
        Width (neurons) and input dimension.
    b : float, optional
        Shift of the ReLU; neuron r fires on x iff <w_r, x> > b. Default sqrt(0.4 ln m).
    seed : int or numpy.random.Generator, optional
        W ~ N(0, I_d) row-wise, a uniform in {-1, +1}; the same seed gives the same bits.

    Attributes
    ----------
    W : ndarray (m, d), float64, C-contiguous (trained)
    a : ndarray (m,), float64 (fixed)
    b : float
    """

    def __init__(self, m, d, b=None, seed=None):
        m = check_positive_int("m", m)
        d = check_positive_int("d", d)
        check_allocation("m and d", 8 * m * d + 16 * m, f"the weights W ({m} x {d} float64)")
        b = default_threshold(m) if b is None else check_real("b", b)
        rng = np.random.default_rng(check_seed(seed))
        self._listeners = []
        self.steps_applied_ = 0     # apply_step commits; the trainer reads it (see apply_step)
        self.W = np.ascontiguousarray(rng.standard_normal((m, d)))
        self.a = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        self.b = float(b)

    @classmethod
    def from_arrays(cls, W, a, b):
        """A network with the given weights (copied: the caller's arrays are never modified)."""
        W = np.array(check_matrix("W", W, ncols_name="d"), dtype=np.float64, order="C", copy=True)
        a = np.array(check_vector("a", a, length=W.shape[0], length_name="the rows of W",
                                  allow_int=True), dtype=np.float64, copy=True)
        net = cls.__new__(cls)
        net._listeners = []
        net.steps_applied_ = 0
        net.W, net.a, net.b = W, a, check_real("b", b)
        return net

    # -- the weights and who is told when they change -----------------------------------------

    @property
    def W(self):
        """The trained weights (m, d), float64 C-contiguous. Change them in place only through
        ``apply_step``; assigning a new array notifies the engines (``weights_reset``)."""
        return self._W

    @W.setter
    def W(self, value):
        self._W = np.ascontiguousarray(value, dtype=np.float64)
        self._peak = None               # bound on max |W| (apply_step): unknown
        self._notify_reset()

    @property
    def a(self):
        """The fixed output signs (m,), float64."""
        return self._a

    @a.setter
    def a(self, value):
        self._a = np.ascontiguousarray(value, dtype=np.float64)
        self._notify_reset()

    @property
    def b(self):
        """The threshold: neuron r fires on x iff <w_r, x> > b."""
        return self._b

    @b.setter
    def b(self, value):
        self._b = float(value)
        self._notify_reset()

    def add_listener(self, listener):
        """Tell ``listener`` (an engine) of every weight change: ``weights_changed(rows)`` after
        ``apply_step``, ``weights_reset()`` after a replacement or a rolled-back step. Held by
        weak reference (an engine that is gone is no longer told, and is forgotten here)."""
        self._live_listeners()
        self._listeners.append(weakref.ref(listener))

    def _live_listeners(self):
        alive = [ref() for ref in self._listeners]
        self._listeners = [ref for ref, obj in zip(self._listeners, alive) if obj is not None]
        return [obj for obj in alive if obj is not None]

    def _notify_reset(self):
        for listener in self._live_listeners():
            listener.weights_reset()

    def apply_step(self, rows, G, lr, consume=False):
        """W[rows] -= lr * G in place, then ``weights_changed(rows)`` on every listener.

        All or nothing: on any exception inside (KeyboardInterrupt included) the previous rows
        are put back and the listeners reset before it propagates. Raises DivergenceError,
        with W unchanged, when the step would leave non-finite weights. ``rows`` are sorted
        distinct neuron ids, G has shape (len(rows), d). ``consume=True`` (the trainer's
        call: G is the engine's work buffer) lets the step keep the previous rows in G
        instead of in a copy, so G holds them afterwards, whenever G is a writable
        C-contiguous float64 array (any other G is converted first and the caller's array is
        left as it was)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        G = np.ascontiguousarray(G, dtype=np.float64)
        consume = check_bool("consume", consume) and G.flags.writeable
        W = self._W
        if len(rows) and (rows[0] < 0 or rows[-1] >= W.shape[0]
                          or (len(rows) > 1 and not np.all(rows[1:] > rows[:-1]))):
            raise InputError(f"rows must be sorted distinct neuron ids in 0..{W.shape[0] - 1}")
        # the rows to restore on failure: G itself (consume), else a buffer kept from step
        # to step, sized to the rows moved
        moved = slice(None) if len(rows) == W.shape[0] else rows
        if consume:
            backup = G
        else:
            backup = self._backup_buffer(len(rows))
            if isinstance(moved, slice):
                np.copyto(backup, W)
            else:
                np.take(W, rows, axis=0, out=backup)
        listeners = self._live_listeners()
        told = False
        swapped = np.zeros(1, np.uint8)     # set by the kernel itself once G holds the old rows
        peak = np.zeros(1)                  # max |G|, measured by the step kernel
        bound0 = self._abs_bound()
        try:
            if consume:
                _core.swap_scaled_rows(W, rows, G, lr, swapped, gmax=peak)
            else:
                _core.sub_scaled_rows(W, rows, G, lr, gmax=peak)
            # Finite weights without a pass over them: |w - lr g| <= max|W| + lr max|G|, so
            # while that bound (kept from step to step) is far below the float64 maximum
            # every new weight is finite; only beyond it are the moved rows checked one by
            # one. NaN or inf in G: undone below.
            g_peak = float(peak[0])
            if not np.isfinite(g_peak):
                raise DivergenceError(self._divergence(lr))
            with np.errstate(over="ignore", invalid="ignore"):
                bound = bound0 + float(lr) * g_peak
            if not bound < _SAFE_PEAK:
                if not np.isfinite(W[moved]).all():
                    raise DivergenceError(self._divergence(lr))
                bound = None                        # measured afresh at the next step
            self._peak = bound
            told = True
            for listener in listeners:
                listener.weights_changed(rows)
            # the last statement of the commit: a KeyboardInterrupt can only arrive before it
            # (rolled back here) or after it, where the caller sees the count moved on
            self.steps_applied_ += 1
        except BaseException:
            if not consume or swapped[0]:
                W[moved] = backup
            self._peak = None
            if told:
                for listener in listeners:
                    listener.weights_reset()
            raise

    @staticmethod
    def _divergence(lr):
        return (f"the weight step gave non-finite weights: the learning rate lr={lr:g} is "
                f"likely too large for this data and b; the last finite weights are kept")

    def _abs_bound(self):
        """An upper bound on max |W| (measured when unknown)."""
        if getattr(self, "_peak", None) is None:
            self._peak = max(float(self._W.max()), -float(self._W.min()))
        return self._peak

    def _backup_buffer(self, k):
        buf = getattr(self, "_backup", None)
        if buf is None or buf.shape[0] < k or buf.shape[1] != self._W.shape[1]:
            buf = self._backup = np.empty((k, self._W.shape[1]))
        return buf[:k]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_listeners", None)   # engines are not part of the network
        state.pop("_backup", None)      # a work buffer of apply_step
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("steps_applied_", 0)   # pickles of older versions
        self._listeners = []

    @property
    def m(self):
        return self.W.shape[0]

    @property
    def d(self):
        return self.W.shape[1]

    @property
    def scale(self):
        """The output scale m^{-1/2}."""
        return 1.0 / np.sqrt(self.m)

    def copy(self):
        return ShiftedReLUNet.from_arrays(self.W, self.a, self.b)

    def __repr__(self):
        return f"ShiftedReLUNet(m={self.m}, d={self.d}, b={self.b:.6g})"

    def to_torch(self, dtype=None, logits=False):
        """A ``torch.nn.Module`` computing the same f (optional extra ``torch``); the weights are
        copied. ``logits=True`` gives the two-logit model [-f, f] that attack libraries take.
        See ``sparseadv._torch.to_torch``."""
        from ._torch import to_torch
        return to_torch(self, dtype=dtype, logits=logits)

    # -- dense evaluation (every neuron, blocked BLAS) ---------------------------------------

    def _pass(self, X, want_h=False, want_fired=False):
        n = X.shape[0]
        f = np.empty(n)
        H = np.empty((n, self.d)) if want_h else None
        fired = np.empty(n, dtype=np.int64) if want_fired else None
        _core.dense_forward(X, self.W, self.a, self.b, self.scale, f, H, fired)
        return f, H, fired

    def forward(self, X):
        """f(W, x_i) for each row of X, shape (n,)."""
        X = check_matrix("X", X, ncols=self.d)
        return self._pass(X)[0]

    def loss(self, X, y):
        """(1/(2n)) sum_i (f(W, x_i) - y_i)^2."""
        X, y = check_Xy(X, y, self.d)
        r = self._pass(X)[0] - y
        return 0.5 * float(np.dot(r, r)) / X.shape[0]

    def input_gradient(self, X, y):
        """Gradient of each example's loss 0.5 (f(W, x_i) - y_i)^2 in x_i, shape (n, d)."""
        X, y = check_Xy(X, y, self.d)
        f, H, _ = self._pass(X, want_h=True)
        H *= (f - y)[:, None]
        return H

    def weight_gradient(self, X, y):
        """Gradient of the loss (1/(2n)) sum_i (f_i - y_i)^2 in W, shape (m, d)."""
        X, y = check_Xy(X, y, self.d)
        f = self._pass(X)[0]
        coef = (f - y) * (self.scale / X.shape[0])
        G = np.empty_like(self.W)
        _core.dense_weight_grad(X, self.W, self.a, self.b, coef, G)
        return G

    def fired(self, X):
        """The fired neurons of each input: a list of sorted int64 index arrays."""
        indptr, indices = self.fired_csr(X)
        return [indices[indptr[i]:indptr[i + 1]] for i in range(len(indptr) - 1)]

    def fired_csr(self, X):
        """The fired neurons of each input as CSR arrays (indptr of length n + 1, indices)."""
        X = check_matrix("X", X, ncols=self.d)
        return _core.dense_fired_pairs(X, self.W, self.b)

    def fired_counts(self, X):
        """Number of fired neurons for each input, shape (n,)."""
        X = check_matrix("X", X, ncols=self.d)
        return self._pass(X, want_fired=True)[2]
