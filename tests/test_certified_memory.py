"""The certified engine's memory layout: one state byte and one float32 deadline per anchored
pair, per-iteration buffers released, the float32 anchors and screen rows kept up to date;
each against the obvious float64 computation and against dense."""
import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, _core
from sparseadv.engines import certified
from sparseadv.engines.certified import CertifiedEngine


def _data(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, rng.choice([-1.0, 1.0], n)


def _kernel_problem(seed, m, n, d, b, data_seed):
    """(rng, W, a, X, b, scale) of a kernel-level test."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X, _ = _data(n, d, data_seed)
    return rng, W, a, X, b, 1 / np.sqrt(m)


def _trainers(steps=4, m=1500, n=64, d=8, **opts):
    X, y = _data(n, d, 2)
    nets = [ShiftedReLUNet(m, d, seed=3) for _ in range(3)]
    attack = PGD(0.05, steps=steps)
    return X, y, [AdversarialTrainer(nets[0], attack, lr=0.5, engine="dense"),
                  AdversarialTrainer(nets[1], attack, lr=0.5, engine="certified", **opts),
                  AdversarialTrainer(nets[2], attack, lr=0.5, engine="certified", **opts)]


def test_pass_state_is_one_byte_and_one_float32_per_pair_in_kept_buffers():
    """The passes of an iteration carry one state byte and one float32 deadline per anchored
    pair (work buffers, not copies; the deadlines and the records in the arena that the weight
    gradient takes over afterwards) and n-sized sums; no per-pair float64 state; the buffers
    are kept from iteration to iteration (no fresh memory, so no page faults, per
    iteration)."""
    X, y, (td, tc, _) = _trainers()
    eng = tc.engine
    n, d = X.shape
    seen = {"checked": 0}
    real = eng._next_pass

    def spy(Xt, f):
        T, bufs = eng._passes, eng._bufs
        k = len(T.pairs.idx)
        assert T.pairs.idx is eng._sets.idx             # full batch: the anchored list itself
        assert T.state.dtype == np.uint8 and T.state.shape == (k,)
        assert np.shares_memory(T.state, bufs["pass_state"])
        assert T.deadline.dtype == np.float32 and T.deadline.shape == (k,)
        assert np.shares_memory(T.deadline, bufs["arena"])
        assert np.shares_memory(T.records, bufs["arena"])
        assert not np.shares_memory(T.deadline, T.records)
        for name, key, shape in (("H", "pass_H", (n, d)), ("F0", "pass_F0", (n,)),
                                 ("count", "pass_count", (n,)),
                                 ("previous", "pass_previous", (n, d))):
            arr = getattr(T, name)
            assert arr.shape == shape and np.shares_memory(arr, bufs[key]), name
        # the refinement of pass 0 keeps fewer pairs than the anchored list: bit 1
        assert T.kept_only and 0 < T.kept < k and T.kept == int(((T.state >> 1) & 1).sum())
        # the pairs pass 0 drops never fire and are never due
        dropped = (T.state & 2) == 0
        assert not (T.state[dropped] & 1).any() and np.all(np.isinf(T.deadline[dropped]))
        per_pair = [key for key, buf in bufs.items()
                    if buf.size >= k and key not in ("pass_state", "arena")]
        assert not per_pair, per_pair                  # no other per-pair array
        seen["checked"] += 1
        return real(Xt, f)

    eng._next_pass = spy
    rec = tc.step(X, y)
    td.step(X, y)
    assert seen["checked"] == tc.attack.steps           # passes 1..K: attack steps, forward
    # the pass state is gone once the weights moved; the buffers stay, and serve again (the
    # first iteration sizes the records without a fired count to go by: from the second on,
    # the same memory)
    assert eng._passes is None and rec["fired_pairs"] > 0
    assert {"pass_state", "arena"} <= set(eng._bufs)
    tc.step(X, y)
    td.step(X, y)
    kept = {key: eng._bufs[key] for key in ("pass_state", "arena")}
    for _ in range(2):
        tc.step(X, y)
        td.step(X, y)
    assert seen["checked"] == 4 * tc.attack.steps
    assert all(eng._bufs[key] is buf for key, buf in kept.items())
    np.testing.assert_allclose(tc.net.W, td.net.W, rtol=0, atol=1e-12)


def test_tracked_and_fresh_passes_give_the_same_decisions():
    """lazy=True (tracked passes: the pairs past their deadlines only) and lazy=False (every
    kept pair evaluated in every pass): the same fired pairs and candidate counters, fewer
    inner products when tracked, dense to round-off."""
    X, y = _data(64, 8, 2)
    nets = [ShiftedReLUNet(1500, 8, seed=3) for _ in range(3)]
    attack = PGD(0.05, steps=5)
    td = AdversarialTrainer(nets[0], attack, lr=0.5, engine="dense")
    tl = AdversarialTrainer(nets[1], attack, lr=0.5, engine="certified")
    tf = AdversarialTrainer(nets[2], attack, lr=0.5, engine="certified", lazy=False)
    assert tl.engine.lazy and not tf.engine.lazy
    for _ in range(3):
        rd, rl, rf = td.step(X, y), tl.step(X, y), tf.step(X, y)
        for key in ("candidate_pairs", "fired_pairs", "reanchored"):
            assert rl[key] == rf[key], key
        assert rl["inner_products"] < rf["inner_products"]
        assert rl["loss"] == pytest.approx(rf["loss"], rel=1e-10)
        assert rl["loss"] == pytest.approx(rd["loss"], rel=1e-10)
    np.testing.assert_allclose(tl.net.W, td.net.W, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tf.net.W, td.net.W, rtol=0, atol=1e-12)


def test_passes_after_the_final_forward_evaluate_the_kept_pairs():
    """The final forward pass frees the deadlines (the weight gradient needs only the fired
    mask): a further pass of the same iteration at the final points (outside the protocol)
    evaluates every kept pair afresh (plus the n output inner products), exactly."""
    X, y = _data(50, 6, 9)
    net = ShiftedReLUNet(900, 6, seed=2)
    attack = PGD(0.05, steps=2)
    eng = CertifiedEngine(net, verify=True)
    Xt = attack.perturb(net, X, y)                      # points in the balls
    eng.begin_iteration(X, y, attack.threat_model)
    for k in range(attack.steps):
        eng.input_direction(X if k == 0 else Xt, pass_index=k)
        assert eng._passes.deadline is not None         # tracked passes until the last
    f, fired = eng.forward(Xt, pass_index=attack.steps)
    T = eng._passes
    assert T.deadline is None and T.records is None     # the arena is given up
    assert 0 < T.kept < len(T.pairs.idx)
    before = eng.counters["inner_products"]
    H, f2 = eng.input_direction(Xt, pass_index=attack.steps)
    assert eng._passes is T and T.calls == attack.steps + 2
    # d = 6: below SCREEN_MIN_D the pass decides in float64 (nothing screened)
    assert eng.counters["inner_products"] - before == T.kept + 50
    np.testing.assert_allclose(f2, net.forward(Xt), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(f, f2, rtol=1e-12, atol=1e-14)
    assert np.array_equal(fired, net.fired_counts(Xt))
    assert np.array_equal(T.count, fired)


def _true_norm(D):
    """Row l2 norms from scaled rows (exact at any scale)."""
    big = np.abs(D).max(axis=1)
    safe = np.where(big > 0, big, 1.0)
    return big * np.linalg.norm(D / safe[:, None], axis=1)


@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e300, 1e-170, 5e-324])
def test_float32_anchor_bounds_the_drift_at_any_scale(scale):
    """row_drift32 is an upper bound on ||w - w°|| (and tight: within the float32 rounding
    of the anchor), the norms are copy_rows_norms's bits, at any scale of the rows."""
    rng = np.random.default_rng(11)
    m, d = 60, 7
    W0 = rng.standard_normal((m, d)) * scale
    W0[0] = 0.0                                         # a zero row
    W0[1, 2:] = 0.0                                     # a sparse one
    W0[2] *= np.logspace(0, -200, d) if scale >= 1e-100 else 1.0   # very unequal entries
    rows = np.arange(m, dtype=np.int64)
    a32, sc, err = np.empty((m, d), np.float32), np.empty(m), np.empty(m)
    n2, n1, r2, r1 = (np.empty(m) for _ in range(4))
    _core.copy_rows_norms32(W0, a32, sc, err, rows, n2, n1)
    _core.copy_rows_norms(W0, np.empty((m, d)), rows, r2, r1)
    assert np.array_equal(n2, r2) and np.array_equal(n1, r1)
    assert np.all(np.isfinite(err)) and np.all(err >= 0)
    stored = a32.astype(np.float64) * sc[:, None]
    assert np.all(_true_norm(W0 - stored) <= err)
    assert np.all(err <= 1e-7 * _true_norm(W0) + 1e-149 * sc)
    for step in (0.0, 1e-9, 1e-3, 1.0):
        W = W0 + step * scale * rng.standard_normal((m, d))
        out = np.empty(m)
        _core.row_drift32(W, a32, sc, err, rows, out)
        true = _true_norm(W - W0)
        assert np.all(out >= true), step
        assert np.all(out <= true * (1 + 1e-9) + 2 * err + 1e-149 * sc), step


def test_shrink_keeps_every_pair_of_the_exact_test():
    """A shrunk list (its stored float32 anchor plus the error margin) contains every pair
    the float64 anchor's candidate test keeps."""
    X, y = _data(80, 6, 3)
    net = ShiftedReLUNet(500, 6, seed=5)
    eng = CertifiedEngine(net, budget="auto", initial_budget=0.2)
    eng.begin_iteration(X, y, PGD(0.05, 2).threat_model)
    sets = eng._sets
    anchor = net.W.copy()                               # w° of every row (a fresh build)
    rows = np.arange(0, 500, 3, dtype=np.int64)
    old_ptr, old_idx = sets.ptr.copy(), sets.idx.copy()
    sets.budget[rows] *= 0.3                            # raised thresholds
    thr = sets.thresholds(rows)
    ref_ptr, ref_idx, _ = _core.filter_candidates(
        sets.points, anchor, rows, thr, np.ascontiguousarray(sets.budget[rows]),
        sets.point_norms, old_ptr, old_idx)
    sets.shrink(rows)
    kept_total = 0
    for k, r in enumerate(rows):
        got = set(sets.idx[sets.ptr[r]:sets.ptr[r + 1]])
        want = set(ref_idx[ref_ptr[k]:ref_ptr[k + 1]])
        assert want <= got
        assert got <= set(old_idx[old_ptr[r]:old_ptr[r + 1]])
        kept_total += len(want)
    others = np.setdiff1d(np.arange(500), rows)
    for r in others[:50]:                               # the other rows are untouched
        assert np.array_equal(sets.idx[sets.ptr[r]:sets.ptr[r + 1]],
                              old_idx[old_ptr[r]:old_ptr[r + 1]])
    assert 0 < kept_total < int((old_ptr[rows + 1] - old_ptr[rows]).sum())   # it shrank
    assert sets.anchor32.dtype == np.float32 and not hasattr(sets, "anchor_W")


def test_current_row_norms_are_kept_with_the_bits_of_row_norms():
    """The refinement's norms of the current rows are updated by the drift pass of the moved
    rows instead of a pass over all m rows: the same bits as row_norms after every step."""
    X, y, (td, tc, _) = _trainers(steps=2, m=800)
    n2, n1 = np.empty(800), np.empty(800)
    for _ in range(4):
        tc.step(X, y)
        td.step(X, y)
        sets = tc.engine._sets
        _core.row_norms(tc.net.W, n2, n1)
        assert np.array_equal(sets.norm2, n2) and np.array_equal(sets.norm1, n1)
    # row_drift32's norms: only of the given rows, the others untouched
    W = tc.net.W
    rows = np.array([1, 5, 7], dtype=np.int64)
    out, a2, a1 = np.empty(3), np.full(800, -1.0), np.full(800, -1.0)
    _core.row_drift32(W, sets.anchor32, sets.anchor_scale, sets.anchor_err, rows, out, a2, a1)
    assert np.array_equal(a2[rows], n2[rows]) and np.array_equal(a1[rows], n1[rows])
    assert np.all(np.delete(a2, rows) == -1.0)
    with pytest.raises(ValueError, match="together"):
        _core.row_drift32(W, sets.anchor32, sets.anchor_scale, sets.anchor_err, rows, out, a2)


@pytest.mark.parametrize("norm", [2, np.inf])
def test_radius_bound_for_pairs_last_evaluated_at_the_clean_points(norm):
    """cap = the ball's radius for the deadlines of a fresh pass at the clean points (no
    later position is farther), the diameter for the later passes: every state still agrees
    with brute force, f with a fresh pass, with fewer evaluations than the diameter bound
    alone."""
    m, n, d, eps = 900, 48, 8, 0.15
    rng, W, a, X, b, scale = _kernel_problem(8, m, n, d, 1.0, 4)
    cptr = np.arange(0, m * n + 1, n, dtype=np.int64)       # every pair listed
    cidx = np.tile(np.arange(n, dtype=np.int32), m)
    nnz = len(cidx)
    wd = np.abs(W).sum(1) if norm == np.inf else np.linalg.norm(W, axis=1)
    slack = 1e-9 * (1 + 2 * wd)
    states = {}
    for cap0 in (2 * eps, eps):
        S = dict(st=np.zeros(nnz, np.uint8), dl=np.zeros(nnz, np.float32), H=np.empty((n, d)),
                 F0=np.empty(n), cnt=np.empty(n, np.int64), f=np.empty(n))
        kw = dict(deadline=S["dl"], dual_norm=wd, slack=slack)
        _core.nm_pass(X, W, a, b, scale, cptr, cidx, S["st"], S["H"], S["F0"], S["cnt"],
                      S["f"], True, cap=cap0 * (1 + 1e-9), **kw)
        prev, delta, evals, clock = X.copy(), np.zeros_like(X), 0, 0.0
        srng = np.random.default_rng(1)
        for p in range(1, 5):
            step = srng.standard_normal((n, d))
            if norm == np.inf:
                delta = np.clip(delta + 0.6 * eps * np.sign(step), -eps, eps)
            else:
                delta = delta + 0.6 * eps * step / np.linalg.norm(step, axis=1)[:, None]
                delta *= np.minimum(1, eps / np.linalg.norm(delta, axis=1))[:, None]
            Xt = X + delta
            D = Xt - prev
            moved = np.abs(D).max(1) if norm == np.inf else np.linalg.norm(D, axis=1)
            prev = Xt
            clock += moved.max() * (1 + 1e-12)
            ev, _, _, _ = _core.nm_pass(Xt, W, a, b, scale, cptr, cidx, S["st"], S["H"],
                                        S["F0"], S["cnt"], S["f"], False, clock=clock,
                                        cap=2 * eps * (1 + 1e-9), **kw)
            evals += ev
            truth = (Xt @ W.T > b).T.reshape(-1)            # neuron-major like cidx
            assert np.array_equal((S["st"] & 1).astype(bool), truth), (cap0, p)
            fd = np.empty(n)
            _core.nm_forward(Xt, W, a, b, scale, cptr, cidx, fd)
            np.testing.assert_allclose(S["f"], fd, rtol=1e-10, atol=1e-12)
        states[cap0] = (evals, S)
    (e_diam, A), (e_rad, B) = states[2 * eps], states[eps]
    assert e_rad < e_diam                                   # fewer inner products
    assert np.array_equal(A["st"], B["st"]) and np.array_equal(A["cnt"], B["cnt"])
