"""The certified engine's memory layout: per-pair state sized to the refined pairs, compacted
in place, one byte per pair for the tracked passes' path lengths, per-iteration buffers
released; each against the obvious array-copying version (bitwise) and against dense."""
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


def _csr(rng, m, n, density):
    M = rng.random((m, n)) < density
    if m > 3:
        M[1] = False                                    # an empty row
        M[3] = True                                     # a full one
    cptr = np.concatenate(([0], np.cumsum(M.sum(1)))).astype(np.int64)
    return cptr, np.nonzero(M)[1].astype(np.int32)


@pytest.mark.parametrize("seed,m,n,density", [(0, 40, 30, 0.3), (1, 300, 7, 0.9),
                                               (2, 5, 50, 0.05), (3, 1, 4, 1.0),
                                               (4, 0, 4, 0.5)])
@pytest.mark.parametrize("kept", ["random", "all", "none"])
def test_compact_in_place_equals_compact_pairs(seed, m, n, density, kept):
    rng = np.random.default_rng(seed)
    cptr, cidx = _csr(rng, m, n, density)
    nnz = len(cidx)
    mask = rng.integers(0, 4, nnz).astype(np.uint8)   # bit 0: fired, bit 1: kept
    if kept != "random":
        mask = (mask & 1) | (2 if kept == "all" else 0)
    vals = rng.standard_normal(nnz)
    out_vals, out_bit0 = np.empty(nnz), np.empty(nnz, np.uint8)
    ptr, idx = _core.compact_pairs(cptr, cidx, mask, 1, None, vals, out_vals, out_bit0)
    sizes = []

    def out(size):
        sizes.append(size)
        return np.empty(size, np.int32)

    ptr2, idx2 = _core.compact_in_place(cptr, cidx, mask, 1, out, vals)
    k = len(idx)
    assert np.array_equal(ptr, ptr2) and np.array_equal(idx, idx2)
    assert sizes == [k]                                 # the ids are sized to the kept pairs
    assert np.array_equal(vals[:k], out_vals[:k])       # values: bitwise, over their heads
    assert np.array_equal(mask[:k], out_bit0[:k])       # the kept pairs' bit 0
    # without values, and refusing an output that overlaps the inputs
    mask2 = rng.integers(0, 4, nnz).astype(np.uint8)
    ref_ptr, ref_idx = _core.compact_pairs(cptr, cidx, mask2, 1)
    ptr3, idx3 = _core.compact_in_place(cptr, cidx, mask2, 1)
    assert np.array_equal(ref_ptr, ptr3) and np.array_equal(ref_idx, idx3)
    if len(ref_idx):
        with pytest.raises(ValueError, match="overlap"):
            _core.compact_in_place(cptr, cidx, mask2 | 2, 1, cidx)


def _kernel_problem(seed, m, n, d, b, data_seed):
    """(rng, W, a, X, b, scale) of a kernel-level test."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X, _ = _data(n, d, data_seed)
    return rng, W, a, X, b, 1 / np.sqrt(m)


def test_nm_track_passes_equals_nm_track_forward():
    """Same decisions, same bits, same counts as the double-per-pair tracked pass."""
    m, n, d, eps = 600, 40, 8, 0.2
    rng, W, a, X, b, scale = _kernel_problem(5, m, n, d, 1.2, 6)
    cptr, cidx = _csr(rng, m, n, 0.4)
    nnz = len(cidx)
    f = np.empty(n); H = np.empty((n, d)); cnt = np.empty(n, np.int64); F0 = np.empty(n)
    z = np.empty(nnz); mask = np.empty(nnz, np.uint8)
    _core.nm_forward(X, W, a, b, scale, cptr, cidx, f, H, cnt, mask, True, None, F0, z)
    wd = np.linalg.norm(W, axis=1)
    slack = np.full(m, 1e-9)
    A = dict(z=z.copy(), st=(mask & 1).copy(), mref=np.zeros(nnz), path=np.zeros(n),
             H=H.copy(), F0=F0.copy(), cnt=cnt.copy())
    B = dict(z=z.copy(), st=(mask & 1).copy(), passes=np.zeros(nnz, np.uint8),
             hist=np.zeros((6, n)), H=H.copy(), F0=F0.copy(), cnt=cnt.copy())
    prev = X.copy()
    for p in range(1, 6):
        step = rng.standard_normal((n, d))
        step *= (0.3 * eps * rng.random(n) / np.linalg.norm(step, axis=1))[:, None]
        Xt = prev + step
        moved = np.linalg.norm(Xt - prev, axis=1)
        prev = Xt
        A["path"] += moved
        np.add(B["hist"][p - 1], moved, out=B["hist"][p])
        fa, fb = np.empty(n), np.empty(n)
        ra = _core.nm_track_forward(Xt, W, a, b, scale, cptr, cidx, A["z"], A["mref"], A["st"],
                                    A["path"], 2 * eps, wd, slack, A["H"], A["F0"], A["cnt"],
                                    fa)
        rb = _core.nm_track_passes(Xt, W, a, b, scale, cptr, cidx, B["z"], B["passes"],
                                   B["st"], B["hist"], p, 2 * eps, wd, slack, B["H"], B["F0"],
                                   B["cnt"], fb)
        assert ra == rb and ra[0] > n                   # some pairs evaluated, some not
        assert np.array_equal(fa, fb)
        for key in ("z", "st", "H", "F0", "cnt"):
            assert np.array_equal(A[key], B[key]), key
        assert np.array_equal(A["mref"], B["hist"][B["passes"], cidx])
        assert B["passes"].max() == p                   # evaluated pairs carry this pass
    with pytest.raises(ValueError, match="pass_ref"):
        _core.nm_track_passes(Xt, W, a, b, scale, cptr, cidx, B["z"], B["passes"], B["st"],
                              B["hist"], 2, 2 * eps, wd, slack, B["H"], B["F0"], B["cnt"], fb)
    with pytest.raises(ValueError, match="pass_now"):
        _core.nm_track_passes(Xt, W, a, b, scale, cptr, cidx, B["z"], B["passes"], B["st"],
                              B["hist"], 6, 2 * eps, wd, slack, B["H"], B["F0"], B["cnt"], fb)


def _trainers(steps=4, m=1500, n=64, d=8, **opts):
    X, y = _data(n, d, 2)
    nets = [ShiftedReLUNet(m, d, seed=3) for _ in range(3)]
    attack = PGD(0.05, steps=steps)
    return X, y, [AdversarialTrainer(nets[0], attack, lr=0.5, engine="dense"),
                  AdversarialTrainer(nets[1], attack, lr=0.5, engine="certified", **opts),
                  AdversarialTrainer(nets[2], attack, lr=0.5, engine="certified", **opts)]


def test_state_is_sized_to_the_refined_pairs_and_released():
    X, y, (td, tc, _) = _trainers()
    eng = tc.engine
    seen = {}
    real = eng._tracked_pass

    def spy(Xt, pairs, f):
        T = eng._tracked
        bufs = eng._bufs
        k = len(eng._refined.idx)
        seen.setdefault("checked", 0)
        seen["checked"] += 1
        # the carried state: one entry per refined pair, over the heads of pass 0's arrays
        assert len(T.score) == len(T.fired) == len(pairs.idx) == k
        assert np.shares_memory(T.score, bufs["z_first"])
        assert np.shares_memory(T.fired, bufs["mask_first"])
        assert bufs["refined"].size == k or seen.get("grown")
        assert T.passes is not None and T.passes.dtype == np.uint8 and len(T.passes) == k
        assert T.hist.shape == (tc.attack.steps + 1, X.shape[0])
        assert not {"track_score", "track_fired", "track_score_path"} & set(bufs)
        anchored = len(eng._sets.idx)
        assert k < anchored        # refined: fewer pairs than the anchored list
        return real(Xt, pairs, f)

    eng._tracked_pass = spy
    rec = tc.step(X, y)
    td.step(X, y)
    assert seen["checked"] == tc.attack.steps
    # released once the weights moved; one CSR, no double buffer
    assert not set(certified.CertifiedEngine._ITERATION_BUFFERS) & set(eng._bufs)
    assert not {"cidx0", "cidx1"} & set(eng._bufs)
    assert eng._tracked is None and rec["fired_pairs"] > 0
    np.testing.assert_allclose(tc.net.W, td.net.W, rtol=0, atol=1e-12)


def test_more_tracked_passes_than_pass_rows_give_the_same_bits(monkeypatch):
    """Past the rows of per-pass path lengths the state switches to doubles per pair: the
    same decisions, bits and counters as with enough rows, and dense to round-off."""
    X, y, (td, t_rows, t_few) = _trainers(steps=5)
    for _ in range(3):
        rd, ra = td.step(X, y), t_rows.step(X, y)
        monkeypatch.setattr(certified, "_PASS_ROWS", 3)
        rb = t_few.step(X, y)
        monkeypatch.setattr(certified, "_PASS_ROWS", 256)
        for key in ("inner_products", "candidate_pairs", "fired_pairs", "reanchored"):
            assert ra[key] == rb[key], key
        assert ra["loss"] == rb["loss"]
        assert rb["loss"] == pytest.approx(rd["loss"], rel=1e-10)
    assert np.array_equal(t_rows.net.W, t_few.net.W)
    np.testing.assert_allclose(t_few.net.W, td.net.W, rtol=0, atol=1e-12)


def test_passes_after_the_final_forward_use_the_refined_list():
    """The carried scores are dropped after the final forward pass: a further pass of the
    same iteration (outside the protocol) evaluates the refined list, exactly."""
    X, y = _data(50, 6, 9)
    net = ShiftedReLUNet(900, 6, seed=2)
    attack = PGD(0.05, steps=2)
    eng = CertifiedEngine(net, verify=True)
    Xt = attack.perturb(net, X, y)                      # points in the balls
    eng.begin_iteration(X, y, attack.threat_model)
    for k in range(attack.steps):
        eng.input_direction(X if k == 0 else Xt, pass_index=k)
    f, fired = eng.forward(Xt, pass_index=attack.steps)
    assert eng._tracked is None and "z_first" not in eng._bufs
    before = eng.counters["inner_products"]
    H, f2 = eng.input_direction(Xt, pass_index=attack.steps)
    assert eng.counters["inner_products"] - before == len(eng._refined.idx)
    np.testing.assert_allclose(f2, net.forward(Xt), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(f, f2, rtol=1e-12, atol=1e-14)
    assert np.array_equal(fired, net.fired_counts(Xt))


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
    """cap0 = the ball's radius for pairs whose score is from the clean points: every state
    still agrees two-sided with brute force, f and H with a fresh pass, with fewer
    evaluations than the diameter bound alone."""
    m, n, d, eps = 900, 48, 8, 0.15
    rng, W, a, X, b, scale = _kernel_problem(8, m, n, d, 1.0, 4)
    cptr = np.arange(0, m * n + 1, n, dtype=np.int64)       # every pair listed
    cidx = np.tile(np.arange(n, dtype=np.int32), m)
    nnz = len(cidx)
    f = np.empty(n); H = np.empty((n, d)); cnt = np.empty(n, np.int64); F0 = np.empty(n)
    z = np.empty(nnz); mask = np.empty(nnz, np.uint8)
    _core.nm_forward(X, W, a, b, scale, cptr, cidx, f, H, cnt, mask, True, None, F0, z)
    wd = np.abs(W).sum(1) if norm == np.inf else np.linalg.norm(W, axis=1)
    slack = 1e-9 * (1 + 2 * wd)
    states = {}
    for cap0 in (2 * eps, eps):
        S = dict(z=z.copy(), st=(mask & 1).copy(), passes=np.zeros(nnz, np.uint8),
                 hist=np.zeros((5, n)), H=H.copy(), F0=F0.copy(), cnt=cnt.copy())
        prev, delta, evals = X.copy(), np.zeros_like(X), 0
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
            np.add(S["hist"][p - 1], moved, out=S["hist"][p])
            ft = np.empty(n)
            ev, _ = _core.nm_track_passes(Xt, W, a, b, scale, cptr, cidx, S["z"], S["passes"],
                                          S["st"], S["hist"], p, 2 * eps * (1 + 1e-9), wd,
                                          slack, S["H"], S["F0"], S["cnt"], ft,
                                          cap0=cap0 * (1 + 1e-9))
            evals += ev
            truth = (Xt @ W.T > b).T.reshape(-1)            # neuron-major like cidx
            assert np.array_equal(S["st"].astype(bool), truth), (cap0, p)
            fd = np.empty(n)
            _core.nm_forward(Xt, W, a, b, scale, cptr, cidx, fd)
            np.testing.assert_allclose(ft, fd, rtol=1e-10, atol=1e-12)
        states[cap0] = (evals, S)
    (e_diam, A), (e_rad, B) = states[2 * eps], states[eps]
    assert e_rad < e_diam                                   # fewer inner products
    assert np.array_equal(A["st"], B["st"]) and np.array_equal(A["cnt"], B["cnt"])
