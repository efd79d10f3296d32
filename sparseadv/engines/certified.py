"""The certified engine: lazily anchored candidate sets that provably contain every fired pair.

DESIGN.md §3. For each neuron r the engine keeps an anchor w_r° (its weights when last
anchored), a drift budget B_r and the candidate points of r, stored neuron-major (CSR over
neurons, point ids sorted). With Δ_r = w_r − w_r° and x̃ = x_i + δ, ‖δ‖_p ≤ ε:

    ⟨w_r, x̃⟩ = ⟨w_r°, x_i⟩ + ⟨w_r°, δ⟩ + ⟨Δ_r, x̃⟩
             ≤ s_ri + ε ‖w_r°‖_p* + ‖Δ_r‖₂ (‖x_i‖₂ + ‖δ‖₂),

with s_ri = ⟨w_r°, x_i⟩, p* = 2 and ‖δ‖₂ ≤ ε for the l2 ball, p* = 1 and ‖δ‖₂ ≤ ε√d for the
l∞ ball. While ‖Δ_r‖₂ ≤ B_r, the pair (i, r) can fire only if

    s_ri + B_r ‖x_i‖₂ > b − ε ‖w_r°‖_p* − B_r ε₂ − slack_r        (ε₂ = ε or ε√d)

so these pairs are the candidates. ‖x_i‖₂ is the actual norm of each clean point (no unit-norm
assumption), and slack_r = 1e-9 (|b| + ε‖w_r°‖_p* + (‖w_r°‖₂ + B_r)(max_i ‖x_i‖₂ + ε₂)) absorbs
floating-point round-off (a relative 1e-9 where the errors are ~1e-15), so the set is a proof,
not a heuristic, and the results equal the dense engine's to round-off.

Every attack step and the forward pass evaluate the candidates exactly (``nm_forward``; with
the refinement and tracked passes below, only the first pass does, the others decide most pairs
from carried bounds), and the weight gradient reuses the fired mask of the forward pass (no
inner products). After the
update, ``end_iteration(rows)`` measures ‖Δ_r‖ for the updated rows; the neurons past their
budget are re-anchored together: one blocked GEMM of those rows against all n clean points
(``anchor_candidates``) and a splice of their new lists into the CSR.

Budgets (``budget="auto"``, the default). The first build uses ``initial_budget`` (0.1) for
every neuron. A neuron's drift rate v_r (‖Δ_r‖ per update since its anchoring) is measured at
its first update and whenever it is re-anchored, and its budget is then set to the minimiser
of the modelled cost per iteration

    P · n · φ · c · B   +   ρ · n · v_r / B     →     B_r = sqrt(ρ v_r / (P φ c)),

clipped to [1.1 v_r, 4 · initial_budget]: the first term is the extra candidate pairs a budget
B adds (P = candidate passes per iteration over the anchored sets: steps + 1, or 1 when the
per-iteration refinement below serves the other passes; φ = density of the anchored scores at the
candidate threshold per unit of score, measured from the anchoring GEMMs as the fraction of
(point, neuron) pairs within 0.1 σ of the threshold, c = mean ‖x_i‖ + ε₂), the second the
amortised re-anchoring (n inner products every B / v_r iterations, ρ = ``reanchor_cost``, the
cost of a GEMM inner product relative to a candidate inner product). A neuron's budget changes
only at those two moments and only as follows: past its budget, it is re-anchored with the
modelled budget; at its first update, when the modelled budget is below 3/4 of the current one
and the neuron has drifted at most half the modelled budget, the budget is lowered and the
list shrunk in place (only its current candidates are re-tested; no GEMM).
``budget=<float >= 0>`` fixes B_r for every neuron (0: re-anchor whenever a neuron moves).

Candidate sets depend on the clean points, the attack's ε and norm and the network's a and b:
``begin_iteration`` compares them (X with ``np.array_equal`` against a private copy) and
rebuilds everything when any changed, or when ``net.W`` was replaced by another array. Weights
must only change through the trainer's update followed by ``end_iteration`` (the engine
contract); ``verify=True`` checks every evaluated point set against brute force and raises
RuntimeError on any fired pair that is not a candidate. Points outside the certified region
(not within ε of the clean points, or another number of points) are evaluated densely.

Per-iteration refinement (``refine=True``). The anchored sets must hold for every weight
within the budget; within one iteration the weights are fixed, so the first pass, when it is
at the clean points (PGD without random start), also marks the candidates with
⟨w_r, x_i⟩ > b − ε‖w_r‖_p* − slack at the CURRENT weights (``nm_forward``'s keep mask, no extra
inner products). Every pair that can fire anywhere in the ε-balls satisfies that test
(⟨w_r, x̃⟩ ≤ ⟨w_r, x_i⟩ + ε‖w_r‖_p*), so the marked pairs (``compact_pairs``) are a complete
candidate set for the remaining attack steps and the weight step of the iteration: the budget
margin B_r(‖x_i‖ + ε₂) is dropped for those K passes.

Tracked passes (``lazy=True``). The refined sets stay fixed for the rest of the iteration
while the points move, so the engine carries a state from pass to pass (``nm_track_forward``):
per pair, its score z° when last evaluated and the path length of its point at that time; per
point, H_i = Σ_fired scale·a_r w_r, F0_i = Σ_fired scale·a_r and the fired count. The first pass
(at the clean points) gives the exact start state. Since a point's later position lies within
min(path length since then, 2ε) of the earlier one (measured in the attack's norm, paired with
‖w_r‖₂ or ‖w_r‖₁), |⟨w_r, x̃⟩ − z°| ≤ g_ri ‖w_r‖_*: a pair whose interval lies clear of b (by the
slack) keeps or changes its fired state without an inner product, only the others are
evaluated, and only pairs whose state flips touch H_i, F0_i and the count. Then
f_i = ⟨H_i, x̃_i⟩ − b F0_i (n inner products). Exact: every pair's state is decided by a proof
or by its score; f and H differ from a fresh sum only by round-off (terms are added and
removed instead of summed anew). Measured at m = 2^18, n = 1024, d = 64, steps = 10: the
late attack steps (small moves) evaluate ~0.5M of 9.3M pairs and flip ~10k
(``benchmarks/kernel_profile.py`` gives the time per pass).
``inner_products`` counts the evaluated pairs plus n per pass; ``candidate_pairs`` the pairs
scanned.

Counters per iteration: ``inner_products`` = candidate inner products of every pass (attack
steps and forward) + n per re-anchored neuron (the GEMM) + the re-tests of shrunk lists;
``candidate_pairs`` = the candidate set size summed over the passes that evaluate it (K attack
steps + the forward pass; the weight-gradient pass reuses the forward mask and is counted only
when it has none, i.e. at other points than the last ``forward``); ``fired_pairs`` = fired
pairs at the final points; ``reanchored`` = neurons anchored this iteration (all m on a
(re)build); ``nodes_visited`` = 0. ``verify`` work is not counted. Points outside the
certified region go through the dense engine's kernels and count as the dense engine does.

Results do not depend on the number of OpenMP threads (every point sums its neurons in
increasing order, every neuron its points in increasing order; tracked passes add and remove
a point's terms in increasing neuron order within each pass).

Large per-iteration arrays (masks, the refined sets and their state, the CSR being spliced, the
weight gradient) are work buffers of the engine (``Engine._work``), reused across iterations.
Memory, measured at m = 2^18, n = 1024, d = 64, steps = 10 (``benchmarks/kernel_profile.py``
prints it): peak RSS 1.2 GB, W itself 128 MB
(the anchored scores of the first pass, 8 bytes per anchored pair, and the tracked state, 17
bytes per refined pair, are the largest buffers); ``lazy=False`` drops the state.
"""
import numpy as np

from .. import _core
from .._validation import check_bool, check_real
from .base import Engine, all_rows
from .dense import DenseEngine

_SLACK = 1e-9


class CertifiedEngine(Engine):
    """Exact sparse engine over certified candidate sets (see the module docstring).

    Parameters
    ----------
    net : ShiftedReLUNet
    budget : "auto", None or float >= 0
        Drift budget ‖w_r − w_r°‖₂ allowed before neuron r is re-anchored. "auto" (or None)
        chooses it per neuron from its measured drift rate; a float fixes it for all neurons.
    verify : bool
        Check every evaluated point set against brute force; RuntimeError on a missed pair.
    initial_budget : float > 0
        Budget of every neuron before its drift rate is known ("auto" only).
    reanchor_cost : float > 0
        Cost of one re-anchoring inner product relative to one candidate inner product, in the
        "auto" budget rule.
    refine : bool
        Narrow the candidate sets once per iteration at the current weights (module docstring,
        "Per-iteration refinement"); exact either way.
    lazy : bool
        Tracked passes over the refined sets: evaluate only the pairs whose fired state is not
        proven by carried score bounds (module docstring, "Tracked passes"); exact either
        way. Measured at m = 2^18, n = 1024, steps = 3 (s/iteration, on vs off; ``python
        benchmarks/engine_compare.py --engines certified certified:lazy=false --d D``): d = 3
        0.191 vs 0.191 (half the inner products), d = 16 0.358 vs 0.386.
    """

    name = "certified"

    def __init__(self, net, budget="auto", verify=False, initial_budget=0.1,
                 reanchor_cost=0.3, refine=True, lazy=True):
        super().__init__(net)
        self.refine = check_bool("refine", refine)
        self.lazy = check_bool("lazy", lazy)
        self.verify = check_bool("verify", verify)
        if budget is None or (isinstance(budget, str) and budget == "auto"):
            self.budget = "auto"
        elif isinstance(budget, str):
            raise ValueError(f"budget must be 'auto', None or a float >= 0, got {budget!r}")
        else:
            self.budget = check_real("budget", budget, low=0.0)
        self.initial_budget = check_real("initial_budget", initial_budget, low=0.0,
                                         low_inclusive=False)
        self.reanchor_cost = check_real("reanchor_cost", reanchor_cost, low=0.0,
                                        low_inclusive=False)
        # points outside the certified region go through the dense kernels (same counters)
        self._dense = DenseEngine(net)
        self._dense.counters = self.counters
        self._refined = None
        self._X = None          # private copy of the clean points of the current sets
        self._flip = 0          # which of the two CSR work buffers the next splice writes
        self._cptr = None
        self.rebuilds_ = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def candidates(self):
        """The current candidate sets as neuron-major CSR (cptr, cidx), copies; None before
        use."""
        if self._cptr is None:
            return None
        return self._cptr.copy(), self._cidx.copy()

    @property
    def budgets(self):
        """The current per-neuron drift budgets (copy); None before use."""
        return None if self._cptr is None else self._budget.copy()

    def _needs_rebuild(self, X, attack):
        net = self.net
        if self._X is None:
            return True
        if self._W_obj is not net.W:
            return True
        if attack.eps != self._eps or attack.norm != self._norm:
            return True
        if net.b != self._b or not np.array_equal(net.a, self._a):
            return True
        return X.shape != self._X.shape or not np.array_equal(X, self._X)

    def _build(self, X, attack):
        net = self.net
        m, d = net.W.shape
        n = X.shape[0]
        if n >= 2 ** 31 - 1:
            raise ValueError("the certified engine needs fewer than 2**31 points")
        # until the build completes the engine holds no sets (an interrupted build is redone)
        self._X = self._cptr = None
        Xc = np.array(X, dtype=np.float64, order="C", copy=True)
        self._xnorm = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
        self._xmax = float(self._xnorm.max())
        self._eps = float(attack.eps)
        self._norm = attack.norm
        self._eps2 = self._eps * (np.sqrt(d) if self._norm == np.inf else 1.0)
        # ``_in_region``'s tolerance: any two positions of a point are within 2 tol
        self._tol = self._eps * (1 + 1e-9) + 1e-12 * (1 + self._xmax)
        self._b = float(net.b)
        self._a = net.a.copy()
        self._W_obj = net.W
        self._Wa = np.empty((m, d))
        self._n2 = np.empty(m)
        self._n1 = np.empty(m)
        B0 = self.initial_budget if self.budget == "auto" else self.budget
        self._budget = np.full(m, B0)
        self._age = np.zeros(m, dtype=np.int64)
        self._rate_known = np.zeros(m, dtype=bool)
        self._band = 0
        self._band_rows = 0
        rows = all_rows(m)
        _core.copy_rows_norms(net.W, self._Wa, rows, self._n2, self._n1)
        sigma = float(np.median(self._n2)) * float(np.sqrt(np.mean(self._xnorm ** 2))) / np.sqrt(d)
        self._band_h = 0.1 * sigma if sigma > 0 else 0.1
        ptr, idx, band, ip = _core.anchor_candidates(
            Xc, self._Wa, rows, self._thresholds(rows), self._budget, self._xnorm,
            self._band_h)
        self._band += band
        self._band_rows += m
        self._add("inner_products", ip)
        self._add("reanchored", m)
        self._set_csr(ptr, idx)
        self._X = Xc
        self.rebuilds_ += 1

    def _set_csr(self, cptr, cidx):
        self._cptr, self._cidx = cptr, cidx
        self._rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)

    def _threshold(self, n2, n1, B):
        """b − ε‖w‖_* − B ε₂ − slack, the right-hand side of the module docstring's candidate
        test, for rows with norms n2 = ‖w‖₂, n1 = ‖w‖₁ and budgets B (B = 0 at the current
        weights: the refinement test)."""
        ed = self._eps * (n1 if self._norm == np.inf else n2)
        slack = _SLACK * (abs(self._b) + ed + (n2 + B) * (self._xmax + self._eps2))
        return np.ascontiguousarray(self._b - ed - B * self._eps2 - slack)

    def _thresholds(self, rows):
        """Candidate thresholds of the anchored rows ``rows`` at their budgets."""
        return self._threshold(self._n2[rows], self._n1[rows], self._budget[rows])

    def _anchor(self, rows):
        """Re-anchor the sorted neuron ids ``rows``: one blocked GEMM against all n points."""
        if len(rows) == 0:
            return
        _core.copy_rows_norms(self.net.W, self._Wa, rows, self._n2, self._n1)
        self._age[rows] = 0
        ptr, idx, band, ip = _core.anchor_candidates(
            self._X, self._Wa, rows, self._thresholds(rows),
            np.ascontiguousarray(self._budget[rows]), self._xnorm, self._band_h)
        self._band += band
        self._band_rows += len(rows)
        self._add("inner_products", ip)
        self._add("reanchored", len(rows))
        self._replace_rows(rows, ptr, idx)

    def _shrink(self, rows):
        """Re-test the current candidates of ``rows`` against their (raised) thresholds."""
        if len(rows) == 0:
            return
        ptr, idx, ip = _core.filter_candidates(
            self._X, self._Wa, rows, self._thresholds(rows),
            np.ascontiguousarray(self._budget[rows]), self._xnorm, self._cptr, self._cidx,
            False)                                  # the engine's own CSR: no re-validation
        self._add("inner_products", ip)
        self._replace_rows(rows, ptr, idx)

    def _replace_rows(self, rows, ptr, idx):
        """Splice new lists for ``rows`` into the CSR, written into the one of two work buffers
        that does not hold the current lists."""
        size = len(self._cidx) - int((self._cptr[rows + 1] - self._cptr[rows]).sum()) + len(idx)
        self._flip = 1 - self._flip
        out = self._work(f"cidx{self._flip}", size, np.int32)
        self._set_csr(*_core.csr_replace_rows(self._cptr, self._cidx, rows, ptr, idx, out))

    def _auto_budget(self, rate):
        """The cost-model budget for drift rates ``rate`` (module docstring)."""
        n = self._X.shape[0]
        phi = self._band / (self._band_h * n * max(self._band_rows, 1))
        c = float(np.mean(self._xnorm)) + self._eps2
        cap = 4.0 * self.initial_budget
        if phi > 0 and c > 0:
            B = np.sqrt(self.reanchor_cost * rate / (self._P * phi * c))
        else:
            B = np.full_like(rate, self.initial_budget)
        return np.minimum(np.maximum(B, 1.1 * rate), np.maximum(cap, 1.1 * rate))

    def _attack_norm(self, D):
        """Row norms of D in the attack's norm (l2 or l∞)."""
        if self._norm == np.inf:
            return np.abs(D).max(axis=1)
        return np.sqrt(np.einsum("ij,ij->i", D, D))

    def _in_region(self, Xt):
        """True when every row of Xt lies in the ε-ball around the matching clean point."""
        if Xt.shape != self._X.shape:
            return False
        return float(self._attack_norm(Xt - self._X).max()) <= self._tol

    # -- the engine interface -------------------------------------------------------------

    def begin_iteration(self, X, y, attack):
        self.reset_counters()
        # passes that evaluate the anchored sets (the budget's cost model): all K + 1, or only
        # the first when the per-iteration refinement serves the other K
        refines = self.refine and not attack.random_start
        self._P = 1 if refines else attack.steps + 1
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._needs_rebuild(X, attack):
            self._build(X, attack)
        self._clear_pass_state()

    def _keep_thresholds(self):
        """Per-neuron refinement threshold at the current weights (module docstring); also
        keeps the dual norms and slacks the tracked passes use."""
        m = self.net.m
        w2, w1 = self._work("keep_n2", m), self._work("keep_n1", m)
        _core.row_norms(self.net.W, w2, w1)
        self._lazy_wd = w1 if self._norm == np.inf else w2
        # the tracked passes' slack also covers the round-off of the carried path lengths
        self._lazy_slack = _SLACK * (abs(self._b)
                                     + (w2 + self._lazy_wd) * (self._xmax + self._eps2 + 1.0))
        return self._threshold(w2, w1, 0.0)

    def _move(self, Xt):
        """Per-point movement since the last tracked pass, in the attack's norm (paired with
        the dual norm of the weights in ``_lazy_wd``)."""
        return self._attack_norm(Xt - self._lazy_prev)

    def _pass_list(self, Xt):
        """(cptr, cidx, rows, refine) for a pass at Xt, or None when Xt must be evaluated
        densely (outside the certified region)."""
        if not self._in_region(Xt):
            return None
        if self._refined is not None:
            return self._refined + (False,)
        refine = self.refine and np.array_equal(Xt, self._X)
        return self._cptr, self._cidx, self._rows, refine

    def _evaluate(self, Xt, lst, f, H, fired, want_mask):
        """One candidate pass over ``lst``; refines the list when asked. Returns the fired
        mask over ``lst`` (None unless asked for or refining) and the fired pair count."""
        net = self.net
        n = Xt.shape[0]
        cptr, cidx, rows, refine = lst
        tracked = self.lazy and self._refined is not None and cidx is self._refined[1]
        start = None                    # the tracked passes' start state, set by a refine pass
        state_H = state_cnt = None      # the pass wrote H and counts into the tracked state
        if tracked:
            T = self._track
            T["path"] += self._move(Xt)
            self._lazy_prev = Xt.copy()
            ev, _ = _core.nm_track_forward(
                Xt, net.W, net.a, net.b, net.scale, cptr, cidx, T["zref"], T["mref"],
                T["state"], T["path"], 2.0 * self._tol, self._lazy_wd, self._lazy_slack,
                T["H"], T["F0"], T["cnt"], f, False)
            mask, state_H, state_cnt = T["state"], T["H"], T["cnt"]
            nf = int(state_cnt.sum())
        else:
            mask = (self._work("mask_fwd" if want_mask else "mask_first", len(cidx), np.uint8)
                    if (want_mask or refine) else None)
            keep = self._keep_thresholds() if refine else None
            if refine and self.lazy:
                # the start state of the tracked passes: exact scores, H, F0 and counts here
                state_H = self._work("track_H", n * net.d).reshape(n, net.d)
                state_cnt = self._work("track_cnt", n, np.int64)
                F0, z = self._work("track_F0", n), self._work("z_first", len(cidx))
                ev, nf = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f,
                                          state_H, state_cnt, mask, False, keep, F0, z)
                start = (z, state_H, F0, state_cnt)
            else:
                ev, nf = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f,
                                          H, fired, mask, False, keep)
        if state_H is not None:
            if H is not None:
                H[...] = state_H
            if fired is not None:
                fired[...] = state_cnt
        self._add("candidate_pairs", len(cidx))
        self._add("inner_products", ev)
        if self.verify:
            self._verify(Xt, fired if state_cnt is None else state_cnt, cptr, cidx)
        if refine:
            self._refine(Xt, cptr, cidx, mask, start)
        return mask, nf

    def _refine(self, Xt, cptr, cidx, mask, start):
        """Keep the pairs marked by the first pass; with the tracked passes' ``start`` state
        (scores, H, F0, counts of that pass), set up their state."""
        out = self._work("refined", len(cidx), np.int32)
        if start is None:
            rptr, ridx = _core.compact_pairs(cptr, cidx, mask, 1, out)
        else:
            z, Hs, F0, cnt = start
            zref = self._work("zref", len(cidx))
            state = self._work("state", len(cidx), np.uint8)
            rptr, ridx = _core.compact_pairs(cptr, cidx, mask, 1, out, z, zref, state)
            k = len(ridx)
            mref = self._work("mref", k)
            mref.fill(0.0)
            path = self._work("path", Xt.shape[0])
            path.fill(0.0)
            self._track = dict(zref=zref[:k], mref=mref, state=state[:k], path=path, H=Hs,
                               F0=F0, cnt=cnt)
            self._lazy_prev = Xt.copy()
        self._refined = (rptr, ridx, np.flatnonzero(np.diff(rptr)).astype(np.int64))

    def _check_ready(self):
        if self._X is None:
            raise RuntimeError("begin_iteration must be called before the certified engine "
                               "evaluates points")

    def _clear_pass_state(self):
        """Forget the forward mask and the refined sets (valid within one iteration)."""
        self._mask = self._mask_X = self._fwd_list = self._refined = None

    def input_gradient(self, Xt, y):
        self._check_ready()
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        lst = self._pass_list(Xt)
        if lst is None:
            return self._dense.input_gradient(Xt, y)
        f = np.empty(Xt.shape[0])
        G = np.empty_like(Xt)
        self._evaluate(Xt, lst, f, G, None, False)
        G *= (f - y)[:, None]
        return G, f

    def forward(self, Xt):
        self._check_ready()
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        lst = self._pass_list(Xt)
        if lst is None:
            return self._dense.forward(Xt)
        f = np.empty(Xt.shape[0])
        fired = np.empty(Xt.shape[0], dtype=np.int64)
        mask, nf = self._evaluate(Xt, lst, f, None, fired, True)
        self._fwd_list = lst[:3]
        self._mask = mask
        self._mask_X = Xt.copy()
        self._add("fired_pairs", nf)
        return f, fired

    def weight_gradient(self, Xt, coef):
        self._check_ready()
        net = self.net
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        if self._mask is not None and np.array_equal(Xt, self._mask_X):
            (cptr, cidx, rows), mask = self._fwd_list, self._mask
        else:
            # no forward mask at these points: evaluate the candidates (counted as a pass)
            lst = self._pass_list(Xt)
            if lst is None:
                return self._dense.weight_gradient(Xt, coef)
            cptr, cidx, rows, _ = lst
            mask = None
            if self.verify:
                self._verify(Xt, None, cptr, cidx)
            self._add("candidate_pairs", len(cidx))
        G = self._work("wgrad", len(rows) * net.d).reshape(len(rows), net.d)
        ev, _ = _core.nm_weight_grad(Xt, net.W, net.a, net.b, coef, cptr, cidx, rows, G, mask,
                                     False)
        self._add("inner_products", ev)
        return rows.copy(), G

    def end_iteration(self, rows):
        self._clear_pass_state()
        if self._X is None:
            return
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) > 1 and not np.all(rows[1:] > rows[:-1]):
            rows = np.unique(rows)
        if len(rows) == 0:
            return
        drift = np.empty(len(rows))
        _core.row_drift(self.net.W, self._Wa, rows, drift)
        self._age[rows] += 1
        budget = self._budget[rows]
        over = drift > budget
        if self.budget == "auto":
            rate = drift / self._age[rows]
            target = self._auto_budget(rate)
            first = ~self._rate_known[rows]
            shrink = first & ~over & (target < 0.75 * budget) & (drift <= 0.5 * target)
            self._rate_known[rows[first]] = True
            self._budget[rows[over]] = target[over]
            self._budget[rows[shrink]] = target[shrink]
            self._shrink(rows[shrink])
        self._anchor(rows[over])

    # -- verification ---------------------------------------------------------------------

    def _verify(self, Xt, fired, cptr, cidx):
        """Every pair fired at Xt (brute force) must be in the list evaluated (cptr, cidx), and
        ``fired`` (when given) must be the brute-force fired counts."""
        net = self.net
        n, m = Xt.shape[0], net.m
        indptr, indices = _core.dense_fired_pairs(Xt, net.W, net.b)
        if len(indices):
            keys = indices * n + np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
            ckeys = (np.repeat(np.arange(m, dtype=np.int64), np.diff(cptr)) * n
                     + cidx.astype(np.int64))
            pos = np.searchsorted(ckeys, keys)
            pos[pos == len(ckeys)] = 0
            miss = ckeys[pos] != keys if len(ckeys) else np.ones(len(keys), dtype=bool)
            if miss.any():
                k = int(np.flatnonzero(miss)[0])
                r, i = divmod(int(keys[k]), n)
                raise RuntimeError(
                    f"certified engine: {int(miss.sum())} fired pair(s) missing from the "
                    f"candidate sets (first: point {i}, neuron {r}, budget "
                    f"{self._budget[r]:g}, drift {np.linalg.norm(net.W[r] - self._Wa[r]):g})")
        if fired is not None and not np.array_equal(np.diff(indptr), fired):
            raise RuntimeError("certified engine: fired counts differ from brute force")
