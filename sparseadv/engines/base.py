"""The engine protocol: how the trainer, the attacks and the network talk to an engine.

An engine computes, for the network it is bound to, the quantities one adversarial iteration
needs, at the points the attack produces. Every engine reproduces docs/design.md §2 to
round-off and counts its work in ``counters`` under the same names (§4). The protocol
(docs/design.md §6) is explicit: the engine is told everything it may rely on, and guesses
nothing.

One iteration, in call order (``AdversarialTrainer.step`` does exactly this)::

    threat = attack.threat_model                       # ThreatModel, immutable
    engine.begin_iteration(X, y, threat[, batch])      # clean points; resets the counters
    Xt = attack.run(X, y, engine, loss)                # calls, for k = 0 .. K-1:
        # engine.input_direction(X + delta_k, pass_index=k) -> (H, f), H_i = grad_x f(x_i),
        # scaled by the loss: G_i = loss'(f_i) H_i (for the squared loss the engine's own
        # input_gradient(X + delta_k, y, pass_index=k) = H (f - y), the same bits)
    f, fired = engine.forward(Xt, pass_index=K)        # K = threat.steps
    rows, G = engine.weight_gradient(Xt, coef, pass_index=K)  # coef_i = loss'(f_i) / |B| / sqrt(m)
    net.apply_step(rows, G, lr)                        # W[rows] -= lr G, then, on every
        # engine bound to net: engine.weights_changed(rows)

The pass index. ``pass_index=k`` (0 <= k <= threat.steps) says: these are the points after k
attack steps of the current iteration, x_i + delta_i with delta_i inside the threat model's
ball (the attack guarantees it). Pass 0 is at the clean points exactly unless
``threat.random_start``; ``forward`` and ``weight_gradient`` of one pass receive the same
points, so an engine may reuse what ``forward`` found for the ``weight_gradient`` of the same
pass. ``pass_index=None`` (the default) says nothing about the points: the engine must evaluate
them without any of those assumptions (the certified engine uses the dense kernels there).

Batches. With mini-batches the trainer passes ``batch=Batch(points, index)``: the clean points
X of this iteration are the rows ``index`` (sorted, distinct) of the training set ``points``,
which stays the same object-for-object from iteration to iteration. An engine whose state
depends on the clean points (certified) keeps it per training point and serves any batch from
it; the others ignore ``batch``. Without it (full batch, or outside training) X is the whole
set.

Weights. The network owns them: ``net.apply_step`` is the only in-place change, and it notifies
every engine bound to the network through one path, ``weights_changed(rows)`` (the rows that
moved, sorted). Assigning ``net.W``, ``net.a`` or ``net.b`` anew, or a step that fails half-way
(any exception, KeyboardInterrupt included), calls ``weights_reset()`` instead: the engine drops
or marks stale whatever it derived from the weights, and rebuilds it from ``net`` on its next
use. Either way an engine is never out of step with ``net.W``.

Arrays an engine returns may be its work buffers (``Engine._work``): they are valid until the
engine's next call, which is all the trainer and the attacks need.
"""
import dataclasses
import numbers
import typing

import numpy as np

from ..errors import InputError, InputTypeError

# Work counters every engine reports (zero where a concept does not apply to an engine).
COUNTER_NAMES = ("inner_products", "candidate_pairs", "fired_pairs", "reanchored",
                 "nodes_visited")


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """What an attack may do to each point in one iteration (built by the attack, given to the
    engine once per iteration by ``begin_iteration``).

    eps : radius of the ball around each clean point; norm : 2 or numpy.inf (its geometry);
    steps : the attack's K (passes 0 .. K - 1 are attack steps, pass K the final points);
    step_size : the attack's alpha; random_start : pass 0 starts at a random point of the ball.
    """

    eps: float
    norm: float
    steps: int
    step_size: float
    random_start: bool

    def __post_init__(self):
        if self.norm not in (2, np.inf):
            raise InputError(f"norm must be 2 or numpy.inf, got {self.norm!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) \
                or self.steps < 1:
            raise InputError(f"steps must be a positive integer, got {self.steps!r}")
        if not (self.eps >= 0 and np.isfinite(self.eps)):
            raise InputError(f"eps must be finite and >= 0, got {self.eps!r}")

    @property
    def starts_clean(self):
        """True when pass 0 is at the clean points exactly (no random start, or eps = 0)."""
        return not self.random_start or self.eps == 0


def _as_threat_model(threat):
    """The ThreatModel given, or an attack's (``attack.threat_model``)."""
    if isinstance(threat, ThreatModel):
        return threat
    model = getattr(threat, "threat_model", None)
    if isinstance(model, ThreatModel):
        return model
    raise InputTypeError(f"threat must be a ThreatModel (attack.threat_model), got "
                         f"{type(threat).__name__}")


class Batch(typing.NamedTuple):
    """The clean points of a mini-batch iteration are ``points[index]``: ``points`` the whole
    training set (n, d), ``index`` sorted distinct int64 row ids."""
    points: np.ndarray
    index: np.ndarray


class Engine:
    """Base class. Subclasses set ``name`` and implement ``input_direction``, ``forward`` and
    ``weight_gradient``; ``begin_iteration``, ``weights_changed`` and ``weights_reset`` are
    hooks (the protocol is in the module docstring)."""

    name = "base"

    def __init__(self, net):
        self.net = net
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.threat = None          # the ThreatModel of the current iteration
        self._bufs = {}
        net.add_listener(self)

    def reset_counters(self):
        for key in self.counters:
            self.counters[key] = 0

    def begin_iteration(self, X, y, threat, batch=None):
        """Start an iteration at the clean points X (validated, float64) under ``threat`` (a
        ThreatModel; an attack is accepted and its ``threat_model`` used). ``batch``: a
        ``Batch`` when X are rows of a larger training set (module docstring). Resets the
        counters."""
        self.reset_counters()
        self.threat = _as_threat_model(threat)

    def input_direction(self, Xt, pass_index=None):
        """(H, f): the gradient in x of the output, H_i = grad_x f(x_i), shape (n, d), and the
        outputs f, shape (n,), at the points Xt. A loss scales H per row by its derivative
        (``sparseadv.losses``)."""
        raise NotImplementedError

    def input_gradient(self, Xt, y, pass_index=None):
        """(G, f): the gradient in x of each example's squared loss 0.5 (f(x_i) - y_i)^2,
        G = H (f - y) from ``input_direction``, and the outputs f."""
        H, f = self.input_direction(Xt, pass_index=pass_index)
        H *= (f - y)[:, None]
        return H, f

    def forward(self, Xt, pass_index=None):
        """(f, fired): outputs and fired-neuron counts at the points Xt."""
        raise NotImplementedError

    def weight_gradient(self, Xt, coef, pass_index=None):
        """(rows, G_rows): G_r = sum_i coef_i a_r 1[<w_r, x_i> > b] x_i for the sorted neuron ids
        ``rows`` that can have a non-zero gradient (all m for the dense engine)."""
        raise NotImplementedError

    def weights_changed(self, rows):
        """``net.W[rows]`` moved in place (``net.apply_step``); ``rows`` sorted int64."""

    def weights_reset(self):
        """``net.W``, ``a`` or ``b`` were replaced, or a step was rolled back: forget what was
        derived from them."""

    def _work(self, key, size, dtype=np.float64):
        """A flat work array of ``size`` entries, reused across passes and iterations.

        Why: the large per-iteration arrays (weight gradients, pair masks, candidate lists: up
        to hundreds of MB at m = 2^18) cost their page faults again on every fresh allocation.
        A buffer only grows (by at least a quarter, so slowly growing sizes settle), and its
        unused tail is never touched."""
        dtype = np.dtype(dtype)
        buf = self._bufs.get(key)
        if buf is None or buf.dtype != dtype or buf.size < size:
            grow = 0 if buf is None or buf.dtype != dtype else buf.size + buf.size // 4
            buf = np.empty(max(int(size), grow), dtype=dtype)
            self._bufs[key] = buf
        return buf[:size]

    def _arena(self, count, dtype):
        """The head of the engine's byte arena as ``count`` entries of ``dtype``: one buffer
        for the arrays of an iteration that are never live at the same time (``_work``)."""
        dtype = np.dtype(dtype)
        return self._work("arena", count * dtype.itemsize, np.uint8).view(dtype)

    def _add(self, key, value):
        self.counters[key] += int(value)


def all_rows(m):
    return np.arange(m, dtype=np.int64)


# l2 norms outside this range may have lost their squares to underflow or overflow
NORM_SAFE_RANGE = (1e-140, 1e140)


def fix_extreme_norms(A, norms):
    """Make ``norms`` (the l2 norms of the rows of A, computed the plain way, sqrt of summed
    squares) exact at any scale: the rows whose norm lies outside ``NORM_SAFE_RANGE`` are
    recomputed from the row divided by its largest entry, in place; ordinary rows keep their
    bits. Returns the ids of the recomputed rows, or None when there are none."""
    low, high = NORM_SAFE_RANGE
    extreme = np.flatnonzero(~((norms > low) & (norms < high)))
    if not len(extreme):
        return None
    rows = A[extreme]
    peak = np.abs(rows).max(axis=1)
    scaled = peak > 0
    norms[extreme[~scaled]] = 0.0
    norms[extreme[scaled]] = peak[scaled] * np.linalg.norm(
        rows[scaled] / peak[scaled][:, None], axis=1)
    return extreme


def l2_row_norms(A):
    """The l2 norm of every row of A, exact at any scale (``fix_extreme_norms``)."""
    with np.errstate(over="ignore", under="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", A, A))
    fix_extreme_norms(A, norms)
    return norms
