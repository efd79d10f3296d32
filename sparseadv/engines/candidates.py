"""The certified engine's anchored candidate sets: anchors, drift budgets and the neuron-major
CSR of candidate points (docs/design.md §3, "Certified candidate sets").

For each neuron r: an anchor w_r° (its weights when last anchored), a drift budget B_r, and
the candidate points of r, stored neuron-major (CSR over neurons, point ids sorted within each
neuron). With Δ_r = w_r − w_r° and x̃ = x_i + δ, ‖δ‖_p ≤ ε:

    ⟨w_r, x̃⟩ = ⟨w_r°, x_i⟩ + ⟨w_r°, δ⟩ + ⟨Δ_r, x̃⟩
             ≤ s_ri + ε ‖w_r°‖_p* + ‖Δ_r‖₂ (‖x_i‖₂ + ‖δ‖₂),

with s_ri = ⟨w_r°, x_i⟩, p* = 2 and ‖δ‖₂ ≤ ε for the l2 ball, p* = 1 and ‖δ‖₂ ≤ ε√d for the
l∞ ball (``ball_l2_radius`` below: ε or ε√d). While ‖Δ_r‖₂ ≤ B_r, the pair (i, r) can fire
only if

    s_ri + B_r ‖x_i‖₂ > b − ε ‖w_r°‖_p* − B_r ε₂ − slack_r

so those pairs are the candidates. ‖x_i‖₂ is each clean point's own norm (no unit-norm
assumption); slack_r = 1e-9 (|b| + ε‖w_r°‖_p* + (‖w_r°‖₂ + B_r)(max_i ‖x_i‖₂ + ε₂)) absorbs
floating-point round-off (a relative 1e-9 where the errors are ~1e-15).

Budgets (``auto``). The first build gives every neuron ``initial_budget``. A neuron's drift rate
v_r (‖Δ_r‖ per update since its anchoring) is measured at its first update and whenever it is
re-anchored, and its budget is then set to the minimiser of the modelled cost per iteration

    P · |B| · φ · c · B   +   ρ · n · v_r / B     →     B_r = sqrt(ρ v_r n / (P |B| φ c)),

clipped to [1.1 v_r, 4 · initial_budget · sqrt(n / |B|)]: the first term is the candidate
pairs a budget B adds (|B| the points of an iteration: n in full batch, the batch size with
mini-batches; P = passes per iteration over the anchored sets, φ = density of anchored scores at the
candidate threshold per unit of score, measured by the anchoring GEMMs as the fraction of pairs
within 0.1 σ of the threshold, c = mean ‖x_i‖ + ε₂), the second the amortised re-anchoring (n
inner products every B / v_r iterations, ρ = ``reanchor_cost``). A budget changes only then:
past its budget a neuron is re-anchored with the modelled budget; at its first update, when the
modelled budget is below 3/4 of the current one and the neuron has drifted at most half of it,
the budget is lowered and the list shrunk in place (only its current candidates re-tested).
A fixed budget (``auto=False``) never changes (0: re-anchor whenever a neuron moves).
"""
import numpy as np

from .. import _core
from .base import NORM_SAFE_RANGE, all_rows, l2_row_norms

SLACK = 1e-9        # relative round-off allowance of every certified bound


def _rms(v):
    """sqrt(mean(v²)), scaled where the squares could underflow or overflow."""
    with np.errstate(over="ignore", under="ignore"):
        rms = float(np.sqrt(np.mean(v ** 2)))
    if not NORM_SAFE_RANGE[0] < rms < NORM_SAFE_RANGE[1]:
        peak = float(np.abs(v).max())
        rms = peak * float(np.sqrt(np.mean((v / peak) ** 2))) if peak > 0 else 0.0
    return rms


class AnchoredCandidates:
    """Anchors, budgets and candidate CSR of one network on one set of clean points under one
    ball (eps, norm). Built by one blocked GEMM of all m rows against all n points.

    ``work(key, size, dtype)`` gives reusable work buffers and ``add(counter, value)`` counts
    work (both the owning engine's)."""

    def __init__(self, net, X, threat, budget, auto, initial_budget, reanchor_cost, work, add):
        m, d = net.W.shape
        self.points = np.array(X, dtype=np.float64, order="C", copy=True)  # the clean points
        self.point_norms = l2_row_norms(self.points)        # exact at any scale
        self.max_point_norm = float(self.point_norms.max())
        self.eps = float(threat.eps)
        self.norm = threat.norm
        self.ball_l2_radius = self.eps * (np.sqrt(d) if self.norm == np.inf else 1.0)
        # every position of a point in an iteration lies within this distance (attack norm)
        # of its clean point: ε plus the rounding of x + δ
        self.region_radius = self.eps * (1 + 1e-9) + 1e-12 * (1 + self.max_point_norm)
        self.b = float(net.b)
        self.auto = auto
        self.initial_budget = initial_budget
        self.reanchor_cost = reanchor_cost
        self._work, self._add = work, add
        # w_r°, stored as float32 rows times a power of two per row, with an upper bound on
        # what that rounding lost (``anchor_err``): half the memory of a float64 anchor;
        # every use is an upper bound (``_core.copy_rows_norms32``)
        self.anchor32 = np.empty((m, d), dtype=np.float32)
        self.anchor_scale = np.empty(m)
        self.anchor_err = np.empty(m)
        self.anchor_norm2 = np.empty(m)             # ‖w_r°‖₂
        self.anchor_norm1 = np.empty(m)             # ‖w_r°‖₁
        self.budget = np.full(m, float(budget))     # B_r
        self.age = np.zeros(m, dtype=np.int64)      # updates since anchoring
        self.rate_known = np.zeros(m, dtype=bool)   # drift rate measured once already
        # neurons whose lists wait for ``settle`` (sorted ids)
        self._pending_anchor = self._pending_shrink = np.empty(0, dtype=np.int64)
        self._idx_buf = None    # the lists' memory once spliced (``_replace_rows``)
        self.band_pairs = 0     # anchored pairs within band_halfwidth of their threshold
        self.band_rows = 0      # neurons those counts come from
        self.passes = 1         # P of the cost model, set by the engine every iteration
        self.batch_fraction = 1.0   # |B| / n of the current iteration (mini-batches)
        rows = all_rows(m)
        self._copy_anchor(net.W, rows)
        # ‖w_r‖₂, ‖w_r‖₁ at the CURRENT weights (the refinement's thresholds), the bits of
        # _core.row_norms: kept up to date for the moved rows by weights_moved
        self.norm2, self.norm1 = self.anchor_norm2.copy(), self.anchor_norm1.copy()
        sigma = float(np.median(self.anchor_norm2)) * _rms(self.point_norms) / np.sqrt(d)
        self.band_halfwidth = 0.1 * sigma if sigma > 0 else 0.1
        ptr, idx, band, ip = _core.anchor_candidates(     # W[rows] is the anchor now
            self.points, net.W, rows, self.thresholds(rows), self.budget,
            self.point_norms, self.band_halfwidth)
        self.band_pairs += band
        self.band_rows += m
        self._add("inner_products", ip)
        self._add("reanchored", m)
        self._set_csr(ptr, idx)

    def valid_for(self, net, X, threat):
        """True when these sets were built for the clean points X, the ball of ``threat`` and
        the network's b (the weights are followed through the engine protocol)."""
        return (threat.eps == self.eps and threat.norm == self.norm and net.b == self.b
                and X.shape == self.points.shape and np.array_equal(X, self.points))

    def _set_csr(self, ptr, idx):
        self.ptr, self.idx = ptr, idx       # neuron-major CSR: points of neuron r in
        self.rows = np.flatnonzero(np.diff(ptr)).astype(np.int64)   # idx[ptr[r]:ptr[r+1]]

    def threshold(self, norm2, norm1, budget):
        """b − ε‖w‖_* − B ε₂ − slack: the right-hand side of the candidate test for rows with
        norms ‖w‖₂ = norm2, ‖w‖₁ = norm1 and budgets B (B = 0 at the current weights: the
        engine's per-iteration refinement)."""
        dual = self.eps * (norm1 if self.norm == np.inf else norm2)
        slack = SLACK * (abs(self.b) + dual
                         + (norm2 + budget) * (self.max_point_norm + self.ball_l2_radius))
        return np.ascontiguousarray(self.b - dual - budget * self.ball_l2_radius - slack)

    def thresholds(self, rows):
        """Candidate thresholds of the anchored rows ``rows`` at their budgets."""
        return self.threshold(self.anchor_norm2[rows], self.anchor_norm1[rows],
                              self.budget[rows])

    def anchor(self, W, rows):
        """Re-anchor the sorted neuron ids ``rows`` at W: one blocked GEMM against all n
        points."""
        if len(rows) == 0:
            return
        self._copy_anchor(W, rows)
        self.age[rows] = 0
        ptr, idx, band, ip = _core.anchor_candidates(     # W[rows] is the anchor now
            self.points, W, rows, self.thresholds(rows),
            np.ascontiguousarray(self.budget[rows]), self.point_norms, self.band_halfwidth)
        self.band_pairs += band
        self.band_rows += len(rows)
        self._add("inner_products", ip)
        self._add("reanchored", len(rows))
        self._replace_rows(rows, ptr, idx)

    def _copy_anchor(self, W, rows):
        _core.copy_rows_norms32(W, self.anchor32, self.anchor_scale, self.anchor_err, rows,
                                self.anchor_norm2, self.anchor_norm1)

    def anchor_rows(self, rows):
        """The stored anchors of ``rows`` as float64 (within ``anchor_err`` of w_r°)."""
        return self.anchor32[rows].astype(np.float64) * self.anchor_scale[rows, None]

    def shrink(self, rows):
        """Re-test the current candidates of ``rows`` against their (raised) thresholds. The
        stored anchor's score is within anchor_err ‖x_i‖ of the anchored one, so that margin
        is added to the budget's: every pair of the exact test is kept."""
        if len(rows) == 0:
            return
        lens = self.ptr[rows + 1] - self.ptr[rows]
        sub_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=sub_ptr[1:])
        pos = np.repeat(self.ptr[rows] - sub_ptr[:-1], lens) + np.arange(sub_ptr[-1])
        ptr, idx, ip = _core.filter_candidates(
            self.points, self.anchor_rows(rows), np.arange(len(rows), dtype=np.int64),
            self.thresholds(rows), self.budget[rows] + self.anchor_err[rows],
            self.point_norms, sub_ptr, self.idx[pos], False)    # our own CSR
        self._add("inner_products", ip)
        self._replace_rows(rows, ptr, idx)

    def _replace_rows(self, rows, ptr, idx):
        """Splice new lists for ``rows`` into the CSR: built in the engine's arena (free
        between iterations, when the sets settle), then copied back into the list buffer,
        which is kept and grows by a few percent when it must: no second list held at the peak,
        and no fresh memory (page faults) per splice."""
        arena = lambda need: self._work("arena", 4 * need, np.uint8).view(np.int32)
        new_ptr, new_idx = _core.csr_replace_rows(self.ptr, self.idx, rows, ptr, idx,
                                                  out_idx=arena)
        buf = self._idx_buf
        if buf is None or len(buf) < len(new_idx):
            # the old lists are done with (the new ones are in the arena): drop them first
            self.idx = self._idx_buf = buf = None
            buf = np.empty(len(new_idx) + len(new_idx) // 8 + 1024, dtype=np.int32)
        buf[:len(new_idx)] = new_idx
        self._idx_buf = buf
        self._set_csr(new_ptr, buf[:len(new_idx)])

    def auto_budget(self, rate):
        """The cost-model budget for drift rates ``rate`` (module docstring)."""
        n = self.points.shape[0]
        phi = self.band_pairs / (self.band_halfwidth * n * max(self.band_rows, 1))
        c = float(np.mean(self.point_norms)) + self.ball_l2_radius
        # a pass over a batch scans the fraction |B| / n of the pairs, re-anchoring still
        # scores all n points: both the optimum and the cap grow by sqrt(n / |B|)
        frac = self.batch_fraction
        cap = 4.0 * self.initial_budget / np.sqrt(frac)
        if phi > 0 and c > 0:
            B = np.sqrt(self.reanchor_cost * rate / (self.passes * frac * phi * c))
        else:
            B = np.full_like(rate, self.initial_budget)
        return np.minimum(np.maximum(B, 1.1 * rate), np.maximum(cap, 1.1 * rate))

    def weights_moved(self, W, rows):
        """After W[rows] moved (sorted distinct ids): measure the drifts, adapt the budgets
        (auto), and set aside the neurons past their
        budgets (re-anchored) and those whose lowered budgets shrink their lists, for
        ``settle``. Until then the lists of those neurons are stale: ``settled`` is False."""
        drift = np.empty(len(rows))
        _core.row_drift32(W, self.anchor32, self.anchor_scale, self.anchor_err, rows, drift,
                          self.norm2, self.norm1)
        # every row moved (the usual full-batch step): slices, not gathers over m
        at = slice(None) if len(rows) == len(self.age) else rows
        self.age[at] += 1
        budget = self.budget[at]
        over = drift > budget
        if self.auto:
            rate = drift / self.age[at]
            target = self.auto_budget(rate)
            first = ~self.rate_known[at]
            shrink = first & ~over & (target < 0.75 * budget) & (drift <= 0.5 * target)
            if first.any():
                self.rate_known[rows[first]] = True
            self.budget[rows[over]] = target[over]
            if shrink.any():
                self.budget[rows[shrink]] = target[shrink]
                self._pending_shrink = np.union1d(self._pending_shrink, rows[shrink])
        if over.any():
            self._pending_anchor = np.union1d(self._pending_anchor, rows[over])

    @property
    def settled(self):
        """False while moved neurons wait for their lists to be re-tested or re-anchored."""
        return not (len(self._pending_anchor) or len(self._pending_shrink))

    def settle(self, W):
        """Re-test (shrink) and re-anchor (at W) the neurons ``weights_moved`` set aside. Done
        before the lists are used, not inside the weight step: the step's gradient buffer is
        gone by then, so the new lists' memory does not add to it at the peak."""
        shrink, anchor = self._pending_shrink, self._pending_anchor
        self.shrink(np.setdiff1d(shrink, anchor, assume_unique=True))
        self.anchor(W, anchor)
        self._pending_shrink = self._pending_anchor = np.empty(0, dtype=np.int64)

    def restrict(self, index, work):
        """The anchored lists restricted to the training points ``index`` (sorted distinct),
        renumbered 0 .. len(index) - 1 (still sorted within each neuron): (ptr, idx). Index
        work O(n + anchored pairs), no inner products."""
        n = self.points.shape[0]
        local = work("batch_local", n, np.int32)
        local.fill(-1)
        local[index] = np.arange(len(index), dtype=np.int32)
        mapped = local[self.idx]
        keep = mapped >= 0
        before = np.zeros(len(self.idx) + 1, dtype=np.int64)
        np.cumsum(keep, out=before[1:])
        return np.ascontiguousarray(before[self.ptr]), np.ascontiguousarray(mapped[keep])

    def missing_pairs(self, fired_ptr, fired_idx, ptr, idx):
        """Keys (r * n + i) of the fired pairs (point-major CSR ``fired_ptr``/``fired_idx``,
        n = its points) that the neuron-major list (ptr, idx) lacks."""
        n, m = len(fired_ptr) - 1, len(ptr) - 1
        if not len(fired_idx):
            return np.empty(0, dtype=np.int64)
        keys = fired_idx * n + np.repeat(np.arange(n, dtype=np.int64), np.diff(fired_ptr))
        listed = np.repeat(np.arange(m, dtype=np.int64), np.diff(ptr)) * n + idx.astype(np.int64)
        if not len(listed):
            return keys
        pos = np.searchsorted(listed, keys)
        pos[pos == len(listed)] = 0
        return keys[listed[pos] != keys]
