"""The certified engine: lazily anchored candidate sets that provably contain every fired pair.

docs/design.md §3. The anchored sets, their bound and their drift budgets live in
``candidates.AnchoredCandidates``; this module runs the passes of an iteration over them,
following the engine protocol (docs/design.md §6, ``engines.base``): the threat model arrives
once per iteration with ``begin_iteration``, and the pass index with every call. A pass with an
index is at points the attack keeps inside the ε-balls of the clean points, so the candidate
sets hold for it; a pass without one (``pass_index=None``) goes through the dense engine's
kernels and counts as the dense engine does.

The sets depend on the clean points, the ball (ε, norm) and the network's b:
``begin_iteration`` rebuilds them when the clean points or the ball differ from those they were
built for. The weights are followed through the protocol: ``weights_changed(rows)`` measures
the drift of the moved rows and sets the neurons past their budgets aside; the next
``begin_iteration`` re-anchors them (one blocked GEMM of those rows against all n clean points,
spliced into the CSR); ``weights_reset()`` drops the sets (rebuilt at the next iteration).
``verify=True`` checks every pass against brute force (every fired pair is a candidate, the
fired counts and every pair's state are the brute-force ones) and that indexed passes lie in
the balls, and raises RuntimeError on any difference.

Mini-batches (``begin_iteration(..., batch=Batch(points, index))``, docs/design.md §3). The
sets are built for all n training points and stay a proof for every one of them, whichever
batch it is in: the bound uses only per-point anchored scores s_ri against the neuron's current
anchor, the point's norm and the neuron's budget, and after every weight step each moved row's
drift is measured and every neuron past its budget is re-anchored against all n points. A
batch iteration restricts the lists to the batch's points (``AnchoredCandidates.restrict``:
renumbered, still sorted; index work over the anchored pairs, no inner products) and runs the
passes below on them, so their inner products scale with the batch. What stays O(n): n inner
products per re-anchored neuron (the cost model weighs candidates by |B| / n, so budgets grow
by sqrt(n / |B|) and re-anchoring gets rarer) and the restriction's index work. The same
training-set object as in the previous batch is taken to be the same data (no O(n d)
comparison per iteration).

Passes (docs/design.md §3, "How the sets are used"; kernel ``_core.nm_pass``). The first
pass of an iteration (pass 0, at the clean points when ``threat.starts_clean``) evaluates
every candidate and starts the per-point sums H_i = Σ_fired scale·a_r w_r, F0_i =
Σ_fired scale·a_r and the fired counts, from which f_i = ⟨H_i, x̃_i⟩ − b F0_i. Each pair gets
a state byte (bit 0 fired, bit 1 kept by the refinement).

Per-iteration refinement (``refine=True``). The anchored sets hold for every weight within the
budget; within one iteration the weights are fixed, so pass 0, when it is at the clean points,
also keeps the candidates with ⟨w_r, x_i⟩ > b − ε‖w_r‖_p* − slack at the CURRENT weights (no
extra inner products). Every pair that can fire anywhere in the ε-balls passes that test
(⟨w_r, x̃⟩ ≤ ⟨w_r, x_i⟩ + ε‖w_r‖_p*), so the later passes evaluate only kept pairs: the budget
margin B_r(‖x_i‖ + ε₂) is dropped for them.

Tracked passes (``lazy=True``). The later passes carry each pair's state and a float32
deadline on a clock shared by the passes (the sum of the largest step any point took, attack
norm, rounded up): a pair decided with margin M cannot change state before its point moves
M / ‖w_r‖_*, so it is evaluated again only once the clock reaches its deadline (+inf when no
position in the ball is that far, and for the pairs the refinement dropped); only pairs whose
state flips change H_i, F0_i and the count. Exact: every pair's state is decided by a proof or
by its score; f and H differ from a fresh sum only by round-off (terms are added and removed
instead of summed anew). ``lazy=False``: every later pass evaluates every kept pair and sums
afresh.

Scores. Pairs are decided by the float32 screen (a float32 dot product within a proven bound of
the float64 score; each row is rounded to float32 by the thread that decides it); the few
pairs it cannot tell are evaluated in float64, whose score defines "fired".

Counters per iteration: ``inner_products`` = pairs evaluated by every pass (+1 for each float64
re-evaluation, + n per pass for f) + n per re-anchored neuron (the GEMM) + the re-tests of
shrunk lists; ``candidate_pairs`` = the candidate set size of every pass (pass 0: the anchored
list; later passes: the pairs pass 0 kept); ``fired_pairs`` = fired pairs at the final points;
``reanchored`` = neurons anchored in the iteration (all m on a (re)build; re-anchoring that a
weight step sets aside is done at the start of the next iteration and counted there);
``nodes_visited`` = 0. ``verify`` work is not counted.

Results do not depend on the number of OpenMP threads (every point sums its neurons in
increasing order, every neuron its points in increasing order). The large per-iteration arrays
are work buffers of the engine (``Engine._work``), kept from iteration to iteration (fresh
memory would cost its page faults every time): the pair states, and one arena shared by the
arrays that are never live together, the passes' deadlines and records (the changes a pass
hands from its decisions to its sums) and then the weight gradient, so the peak holds the
larger of the two, not both.
"""
from typing import NamedTuple

import numpy as np

from .. import _core
from .._validation import check_bool, check_real
from ..errors import InputError
from .base import Engine, l2_row_norms
from .candidates import SLACK, AnchoredCandidates
from .dense import DenseEngine


class _PairList(NamedTuple):
    """A neuron-major candidate list: the points of neuron r are idx[ptr[r]:ptr[r + 1]];
    ``rows`` are the neurons with a non-empty list."""
    ptr: np.ndarray
    idx: np.ndarray
    rows: np.ndarray


class _PassState:
    """What one iteration's passes carry from pass to pass over its candidate list ``pairs``
    (module docstring, "Passes"): per pair, ``state`` (bit 0 fired at its last evaluation,
    bit 1 kept by pass 0's refinement) and ``deadline`` (float32; None without tracked
    passes); ``clock``: the sum over the passes of the largest step a point took (attack
    norm); per point: ``previous`` (its position at the last pass), ``H``, ``F0``, ``count``
    (the sums over its fired pairs); per neuron: ``dual_norm`` and ``slack`` of the
    deadlines; ``kept_only``: later passes evaluate only the pairs pass 0 kept; ``kept``:
    their number; ``calls``: passes so far."""

    def __init__(self, **state):
        self.__dict__.update(state)


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
        Tracked passes: evaluate only the pairs whose deadline has come (module docstring,
        "Tracked passes"); exact either way.
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
            raise InputError(f"budget must be 'auto', None or a float >= 0, got {budget!r}")
        else:
            self.budget = check_real("budget", budget, low=0.0)
        self.initial_budget = check_real("initial_budget", initial_budget, low=0.0,
                                         low_inclusive=False)
        self.reanchor_cost = check_real("reanchor_cost", reanchor_cost, low=0.0,
                                        low_inclusive=False)
        # passes without an index go through the dense kernels (same counters)
        self._dense = DenseEngine(net)
        self._dense.counters = self.counters
        self._sets = None           # AnchoredCandidates, or None until (re)built
        self._source = None         # the training set object of the last mini-batch
        self._clean = None          # the clean points of the current iteration
        self._clear_pass_state()
        self._fired_hint = 0        # fired pairs of the last fresh pass (sizes its records)
        self.rebuilds_ = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def candidates(self):
        """The current candidate sets as neuron-major CSR (cptr, cidx), copies; None before
        use."""
        self._settle()
        if self._sets is None:
            return None
        return self._sets.ptr.copy(), self._sets.idx.copy()

    @property
    def budgets(self):
        """The current per-neuron drift budgets (copy); None before use."""
        return None if self._sets is None else self._sets.budget.copy()

    def _build(self, X):
        n = X.shape[0]
        if n >= 2 ** 31 - 1:
            raise InputError("the certified engine needs fewer than 2**31 points (rows of X)")
        self._sets = None           # an interrupted build leaves no sets (redone next time)
        auto = self.budget == "auto"
        self._sets = AnchoredCandidates(
            self.net, X, self.threat, self.initial_budget if auto else self.budget, auto,
            self.initial_budget, self.reanchor_cost, self._work, self._add)
        self.rebuilds_ += 1

    def _clear_pass_state(self):
        """Forget what one iteration derived: the pass state and the forward's mask."""
        self._passes = None         # _PassState of this iteration's passes
        self._forward_mask = None   # (pass index, _PairList, fired mask) of the last forward
        self._batch = None          # _PairList of the anchored sets over this batch's points

    # -- the engine protocol --------------------------------------------------------------

    def begin_iteration(self, X, y, threat, batch=None):
        super().begin_iteration(X, y, threat, batch)
        threat = self.threat
        X = np.ascontiguousarray(X, dtype=np.float64)
        points = X if batch is None else batch.points
        # the same training-set object as last time: its sets hold (no O(n d) comparison)
        same = batch is not None and points is self._source and self._sets is not None
        if not same and (self._sets is None or not self._sets.valid_for(self.net, points,
                                                                        threat)):
            self._build(np.ascontiguousarray(points, dtype=np.float64))
        self._settle()
        self._source = points if batch is not None else None
        n = self._sets.points.shape[0]
        # passes over the anchored sets per iteration (the budget's cost model): all K + 1,
        # or only pass 0 when the per-iteration refinement serves the other K
        self._sets.passes = 1 if self.refine and not threat.random_start else threat.steps + 1
        self._sets.batch_fraction = X.shape[0] / n
        self._clear_pass_state()
        self._clean = X
        if batch is not None:
            index = np.ascontiguousarray(batch.index, dtype=np.int64)
            if X.shape[0] != len(index) or (len(index) and (
                    index[0] < 0 or index[-1] >= n or np.any(index[1:] <= index[:-1]))):
                raise InputError(f"batch.index must be {X.shape[0]} sorted distinct row ids "
                                 f"of the {n} training points")
            ptr, idx = self._sets.restrict(index, self._work)
            self._batch = _PairList(ptr, idx, np.flatnonzero(np.diff(ptr)).astype(np.int64))

    def weights_changed(self, rows):
        self._clear_pass_state()
        sets = self._sets
        if sets is None:
            return
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) > 1 and not np.all(rows[1:] > rows[:-1]):
            rows = np.unique(rows)
        if len(rows) == 0:
            return
        self._sets = None           # an interrupted update leaves no sets (rebuilt later)
        sets.weights_moved(self.net.W, rows)
        self._sets = sets

    def _settle(self):
        """Re-anchor what the last weight steps left pending (``AnchoredCandidates.settle``);
        an interrupted re-anchoring leaves no sets (rebuilt at the next iteration)."""
        sets = self._sets
        if sets is not None and not sets.settled:
            self._sets = None
            sets.settle(self.net.W)
            self._sets = sets

    def weights_reset(self):
        self._clear_pass_state()
        self._sets = None

    def _pair_list(self, Xt, pass_index):
        """The candidate list of a pass: the anchored sets (restricted to the batch); None for
        a pass without an index (evaluated densely)."""
        if self._sets is None:
            raise RuntimeError("begin_iteration must be called before the certified engine "
                               "evaluates points")
        if pass_index is None:
            return None
        sets = self._sets
        clean = self._clean
        if not (0 <= pass_index <= self.threat.steps) or Xt.shape != clean.shape:
            raise InputError(f"pass_index {pass_index!r} must be in 0..{self.threat.steps} "
                             f"with points of shape {clean.shape}, got {Xt.shape}")
        if self.verify:
            far = float(self._attack_norm(Xt - clean).max())
            if far > sets.region_radius:
                raise RuntimeError(f"certified engine: points of pass {pass_index} lie "
                                   f"{far:g} from the clean points, outside the ε-ball")
        return self._batch or _PairList(sets.ptr, sets.idx, sets.rows)

    def _attack_norm(self, D):
        """Row norms of D in the attack's norm (l2 or l∞)."""
        if self._sets.norm == np.inf:
            return np.abs(D).max(axis=1)
        return l2_row_norms(D)          # exact for tiny moves too (no underflow to 0)

    def _refinement_thresholds(self):
        """Per-neuron refinement threshold at the current weights (module docstring), with
        the dual norms and slacks the tracked passes use."""
        sets = self._sets
        norm2, norm1 = sets.norm2, sets.norm1   # the current rows' (kept by weights_moved)
        dual = norm1 if sets.norm == np.inf else norm2
        # the deadlines' slack also covers the round-off of the clock
        slack = SLACK * (abs(sets.b)
                         + (norm2 + dual) * (sets.max_point_norm + sets.ball_l2_radius + 1.0))
        return sets.threshold(norm2, norm1, 0.0), dual, slack

    def _first_pass(self, Xt, pairs, f, pass_index):
        """The iteration's first pass over ``pairs``: every pair evaluated, the sums fresh,
        the refinement marked when it is pass 0 at the clean points, the deadlines set
        (lazy)."""
        net, n, sets = self.net, Xt.shape[0], self._sets
        clean = pass_index == 0 and self.threat.starts_clean
        refine = self.refine and clean
        lazy = self.lazy
        keep, dual, slack = self._refinement_thresholds() if (refine or lazy) else (None,) * 3
        nnz = len(pairs.idx)
        state = self._work("pass_state", nnz, np.uint8)
        # the deadlines and the records share the arena (the weight gradient's, later)
        dl_bytes = -(-4 * nnz // 64) * 64 if lazy else 0
        rec = int(1.25 * self._fired_hint) + 65536
        arena = self._work("arena", dl_bytes + 8 * rec, np.uint8)
        deadline = arena[:4 * nnz].view(np.float32) if lazy else None
        records = arena[dl_bytes:dl_bytes + 8 * rec].view(np.int64)
        T = _PassState(
            pairs=pairs, state=state, deadline=deadline, records=records, kept_only=refine,
            kept=0, calls=1,
            H=self._work("pass_H", n * net.d).reshape(n, net.d), F0=self._work("pass_F0", n),
            count=self._work("pass_count", n, np.int64), clock=0.0,
            previous=self._work("pass_previous", Xt.size).reshape(Xt.shape),
            dual_norm=dual, slack=slack)
        np.copyto(T.previous, Xt)
        # at the clean points (the balls' centres) no later position is farther than the
        # radius; otherwise than the diameter
        cap = sets.region_radius * (1.0 if clean else 2.0)
        ev, ex, _, kept = _core.nm_pass(
            Xt, net.W, net.a, net.b, net.scale, pairs.ptr, pairs.idx, state, T.H, T.F0,
            T.count, f, True, keep_thr=keep if refine else None, deadline=deadline,
            dual_norm=dual, slack=slack, cap=cap, records=records, check=False)
        self._fired_hint = int(T.count.sum())
        T.kept = kept if refine else len(pairs.idx)
        self._passes = T
        self._add("candidate_pairs", len(pairs.idx))
        return ev + ex + n

    def _next_pass(self, Xt, f):
        """A later pass of the iteration over the same pairs: tracked (lazy: only the pairs
        past their deadlines, flips only) or fresh over the kept pairs."""
        net, T, sets = self.net, self._passes, self._sets
        pairs = T.pairs
        T.calls += 1
        deadline = T.deadline           # None: not lazy, or freed after the final pass
        if deadline is not None:
            # the largest step, rounded up: the deadlines stay proofs
            step = float(self._attack_norm(Xt - T.previous).max()) if len(Xt) else 0.0
            T.clock += step * (1.0 + 1e-12) + 1e-300
        np.copyto(T.previous, Xt)
        ev, ex, _, _ = _core.nm_pass(
            Xt, net.W, net.a, net.b, net.scale, pairs.ptr, pairs.idx, T.state, T.H, T.F0,
            T.count, f, deadline is None, kept_only=T.kept_only, deadline=deadline,
            clock=T.clock, dual_norm=T.dual_norm,
            slack=T.slack, cap=2.0 * sets.region_radius, records=T.records, check=False)
        self._add("candidate_pairs", T.kept)
        return ev + ex + Xt.shape[0]

    def _release_arena(self):
        """The passes give the arena up (after the final forward, or to the weight gradient):
        a later pass of this iteration, outside the protocol, sums afresh over the kept pairs
        and hands its changes over in fresh memory."""
        T = self._passes
        if T is not None:
            T.deadline = None
            T.records = None

    def _evaluate(self, Xt, pairs, pass_index, f, H, fired):
        """One pass at Xt: the first of the iteration, or the next over its pairs. Writes f
        and (when given) H and the fired counts; returns the fired pair count."""
        if self._passes is None or self._passes.pairs.idx is not pairs.idx:
            ev = self._first_pass(Xt, pairs, f, pass_index)
        else:
            ev = self._next_pass(Xt, f)
        T = self._passes
        if H is not None:
            H[...] = T.H
        if fired is not None:
            fired[...] = T.count
        self._add("inner_products", ev)
        if self.verify:
            self._verify(Xt, T.count, pairs, T.state)
        return int(T.count.sum())

    def input_direction(self, Xt, pass_index=None):
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        pairs = self._pair_list(Xt, pass_index)
        if pairs is None:
            return self._dense.input_direction(Xt)
        f = np.empty(Xt.shape[0])
        H = np.empty_like(Xt)
        self._evaluate(Xt, pairs, pass_index, f, H, None)
        return H, f

    def forward(self, Xt, pass_index=None):
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        pairs = self._pair_list(Xt, pass_index)
        if pairs is None:
            return self._dense.forward(Xt)
        f = np.empty(Xt.shape[0])
        fired = np.empty(Xt.shape[0], dtype=np.int64)
        nf = self._evaluate(Xt, pairs, pass_index, f, None, fired)
        # bit 0 of the pass state is this pass's fired mask (the weight gradient's)
        self._forward_mask = (pass_index, pairs, self._passes.state)
        if pass_index == self.threat.steps:
            self._release_arena()
        self._add("fired_pairs", nf)
        return f, fired

    def weight_gradient(self, Xt, coef, pass_index=None):
        net = self.net
        Xt = np.ascontiguousarray(Xt, dtype=np.float64)
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        if (pass_index is not None and self._forward_mask is not None
                and self._forward_mask[0] == pass_index and self._sets is not None):
            _, pairs, mask = self._forward_mask     # same pass, same points: reuse the mask
        else:
            # no forward mask for this pass: evaluate the candidates (counted as a pass)
            pairs, mask = self._pair_list(Xt, pass_index), None
            if pairs is None:
                return self._dense.weight_gradient(Xt, coef)
            if self.verify:
                self._verify(Xt, None, pairs)
            self._add("candidate_pairs", len(pairs.idx))
        # the gradient in the arena (the passes' deadlines and records are done with)
        self._release_arena()
        G = self._arena(len(pairs.rows) * net.d, np.float64).reshape(len(pairs.rows), net.d)
        ev, _ = _core.nm_weight_grad(Xt, net.W, net.a, net.b, coef, pairs.ptr, pairs.idx,
                                     pairs.rows, G, mask, False)
        self._add("inner_products", ev)
        return pairs.rows.copy(), G

    # -- verification ---------------------------------------------------------------------

    def _verify(self, Xt, fired, pairs, state=None):
        """Every pair fired at Xt (brute force) must be in ``pairs``, ``fired`` (when given)
        must be the brute-force fired counts, and bit 0 of ``state`` (when given) set exactly
        for the listed pairs that fire."""
        net, n = self.net, Xt.shape[0]
        fired_ptr, fired_idx = _core.dense_fired_pairs(Xt, net.W, net.b)
        missing = self._sets.missing_pairs(fired_ptr, fired_idx, pairs.ptr, pairs.idx)
        if len(missing):
            r, i = divmod(int(missing[0]), n)
            drift = np.linalg.norm(net.W[r] - self._sets.anchor_rows([r])[0])
            raise RuntimeError(
                f"certified engine: {len(missing)} fired pair(s) missing from the candidate "
                f"sets (first: point {i}, neuron {r}, budget {self._sets.budget[r]:g}, "
                f"drift {drift:g})")
        if fired is not None and not np.array_equal(np.diff(fired_ptr), fired):
            raise RuntimeError("certified engine: fired counts differ from brute force")
        if state is not None:
            m = len(pairs.ptr) - 1
            listed = (np.repeat(np.arange(m, dtype=np.int64), np.diff(pairs.ptr)) * n
                      + pairs.idx.astype(np.int64))
            keys = fired_idx * n + np.repeat(np.arange(n, dtype=np.int64), np.diff(fired_ptr))
            if not np.array_equal(np.isin(listed, keys), (state & 1).astype(bool)):
                raise RuntimeError("certified engine: pair states differ from brute force")
