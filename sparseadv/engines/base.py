"""The engine interface: how the trainer and the attacks talk to dense and sparse engines.

An engine computes, for the network it is bound to, the three quantities one adversarial
iteration needs, at the (perturbed) points the attack produces:

* ``input_gradient(Xt, y)`` -> (G, f): per-example input gradients and outputs (attack steps);
* ``forward(Xt)`` -> (f, fired): outputs and fired-neuron counts at the final points;
* ``weight_gradient(Xt, coef)`` -> (rows, G_rows): sum_i coef_i a_r 1[fired] x_i for the neurons
  ``rows`` that can have a non-zero gradient (all of them for the dense engine);

and is told when an iteration starts (``begin_iteration``, with the clean points, so a sparse
engine can build its candidate sets) and which weight rows changed (``end_iteration``). Every
engine reproduces DESIGN.md §2 to round-off and counts its work in ``counters`` with the same
names, so reports and benchmarks can compare engines directly.

Arrays an engine returns may be its work buffers (``Engine._work``): they are valid until the
engine's next call, which is all the trainer and the attacks need.
"""
import numpy as np

# Work counters every engine reports (zero where a concept does not apply to an engine).
COUNTER_NAMES = ("inner_products", "candidate_pairs", "fired_pairs", "reanchored",
                 "nodes_visited")


class Engine:
    """Base class; subclasses set ``name`` and implement ``input_gradient``, ``forward`` and
    ``weight_gradient``; ``begin_iteration`` and ``end_iteration`` are hooks."""

    name = "base"

    def __init__(self, net):
        self.net = net
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._bufs = {}

    def reset_counters(self):
        for key in self.counters:
            self.counters[key] = 0

    def begin_iteration(self, X, y, attack):
        """Called with the clean points before the attack of each iteration."""
        self.reset_counters()

    def input_gradient(self, Xt, y):
        raise NotImplementedError

    def forward(self, Xt):
        raise NotImplementedError

    def weight_gradient(self, Xt, coef):
        raise NotImplementedError

    def end_iteration(self, rows):
        """Called after ``net.W[rows]`` changed."""

    def _work(self, key, size, dtype=np.float64):
        """A flat work array of ``size`` entries, reused across passes and iterations.

        Why: the large per-iteration arrays (weight gradients, pair masks, candidate lists: up
        to hundreds of MB at m = 2^18) cost their page faults again on every fresh allocation,
        measured at up to 0.4 s of system time per iteration. A buffer only grows (by at least
        a quarter, so slowly growing sizes settle), and its unused tail is never touched."""
        dtype = np.dtype(dtype)
        buf = self._bufs.get(key)
        if buf is None or buf.dtype != dtype or buf.size < size:
            grow = 0 if buf is None or buf.dtype != dtype else buf.size + buf.size // 4
            buf = np.empty(max(int(size), grow), dtype=dtype)
            self._bufs[key] = buf
        return buf[:size]

    def _add(self, key, value):
        self.counters[key] += int(value)


def all_rows(m):
    return np.arange(m, dtype=np.int64)
