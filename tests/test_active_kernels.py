"""The active-set kernels of _core against plain numpy on random pair sets."""
import numpy as np
import pytest

from sparseadv import _core


def _problem(m, n, d, density, seed, empty_rows=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 2
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    M = rng.random((m, n)) < density
    if empty_rows and m > 2:
        M[::3] = False                      # some neurons without any pair
    if empty_rows and n > 2:
        M[:, 1] = False                     # a point without any pair
    return X, W, a, M


def _nm(M):
    cptr = np.concatenate([[0], np.cumsum(M.sum(1))]).astype(np.int64)
    return cptr, np.nonzero(M)[1].astype(np.int32)


def _pm(M):
    Mt = M.T
    indptr = np.concatenate([[0], np.cumsum(Mt.sum(1))]).astype(np.int64)
    return indptr, np.nonzero(Mt)[1].astype(np.int64)


def _numpy_forward(X, W, a, b, scale, M):
    Z = X @ W.T
    F = (Z > b) & M.T
    f = scale * ((np.maximum(Z - b, 0) * F) @ a)
    H = scale * ((F * a) @ W)
    return f, H, F


# (2500, 60, 64): the neuron-major passes walk the neurons in chunks of 65536 // d = 1024,
# so three chunks (the last one partial)
# d in {4, 8, 16, 32, 64} run the kernels specialised for a compile-time width, the others the
# generic loop: both against the numpy reference
SHAPES = [(1, 1, 1), (1, 7, 3), (9, 1, 4), (40, 30, 3), (300, 50, 8), (257, 129, 64),
          (120, 40, 13), (2500, 60, 64), (150, 30, 16), (90, 25, 32), (70, 20, 33)]


@pytest.mark.parametrize("m,n,d", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_neuron_and_point_major_forward(m, n, d, density):
    X, W, a, M = _problem(m, n, d, density, seed=m * n + d)
    b, scale = 0.3, 0.7
    f_ref, H_ref, F = _numpy_forward(X, W, a, b, scale, M)
    cptr, cidx = _nm(M)
    f = np.full(n, np.nan); H = np.full((n, d), np.nan); fired = np.full(n, -1, np.int64)
    mask = np.full(len(cidx), 7, np.uint8)
    ev, nf = _core.nm_forward(X, W, a, b, scale, cptr, cidx, f, H, fired, mask)
    assert ev == M.sum() and nf == F.sum()
    np.testing.assert_allclose(f, f_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, H_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fired, F.sum(1))
    np.testing.assert_array_equal(mask, F.T[M].astype(np.uint8))
    # point-major on the same pairs: the same bits
    indptr, indices = _pm(M)
    f2 = np.empty(n); H2 = np.empty((n, d)); fired2 = np.empty(n, np.int64)
    assert _core.pm_forward(X, W, a, b, scale, indptr, indices, f2, H2, fired2) == (ev, nf)
    assert np.array_equal(f, f2) and np.array_equal(H, H2) and np.array_equal(fired, fired2)
    # optional outputs omitted
    f3 = np.empty(n)
    assert _core.nm_forward(X, W, a, b, scale, cptr, cidx, f3) == (ev, nf)
    assert np.array_equal(f, f3)


@pytest.mark.parametrize("m,n,d", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_weight_gradients(m, n, d, density):
    X, W, a, M = _problem(m, n, d, density, seed=7 + m + n + d)
    b = 0.2
    rng = np.random.default_rng(1)
    coef = rng.standard_normal(n)
    F = (X @ W.T > b) & M.T
    G_ref = ((F * coef[:, None]).T * a[:, None]) @ X
    cptr, cidx = _nm(M)
    rows = np.flatnonzero(M.sum(1)).astype(np.int64)
    G = np.full((len(rows), d), np.nan)
    ev, nf = _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G)
    assert ev == M.sum() and nf == F.sum()
    np.testing.assert_allclose(G, G_ref[rows], rtol=1e-12, atol=1e-12)
    # with the forward mask: no inner products, same bits
    mask = np.empty(len(cidx), np.uint8)
    _core.nm_forward(X, W, a, b, 1.0, cptr, cidx, np.empty(n), None, None, mask)
    Gm = np.empty_like(G)
    assert _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, Gm, mask) == (0, nf)
    assert np.array_equal(G, Gm)
    # an arbitrary subset of rows, including rows without pairs
    sub = np.arange(0, m, 2, dtype=np.int64)
    Gs = np.empty((len(sub), d))
    _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, sub, Gs)
    np.testing.assert_allclose(Gs, G_ref[sub], rtol=1e-12, atol=1e-12)
    # point-major: transpose then neuron-major
    indptr, indices = _pm(M)
    r2, G2, ev2, nf2 = _core.pm_weight_grad(X, W, a, b, coef, indptr, indices)
    assert np.array_equal(r2, rows) and np.array_equal(G2, G) and (ev2, nf2) == (ev, nf)


def test_superset_and_unsorted_point_major():
    X, W, a, M = _problem(200, 60, 5, 0.5, seed=3)
    b = 0.4
    rng = np.random.default_rng(0)
    indptr, indices = _pm(M)
    for i in range(60):                      # shuffle within each point: same values
        seg = indices[indptr[i]:indptr[i + 1]]
        rng.shuffle(seg)
    f_ref, H_ref, F = _numpy_forward(X, W, a, b, 1.0, M)
    f = np.empty(60); H = np.empty((60, 5))
    _core.pm_forward(X, W, a, b, 1.0, indptr, indices, f, H)
    np.testing.assert_allclose(f, f_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, H_ref, rtol=1e-12, atol=1e-12)
    cptr, cidx = _core.csr_transpose(indptr, indices, 200)
    c2, i2 = _nm(M)
    assert np.array_equal(cptr, c2) and np.array_equal(cidx, i2)


def test_kernels_reject_bad_csr():
    X, W, a, M = _problem(10, 8, 3, 0.5, seed=5, empty_rows=False)
    cptr, cidx = _nm(M)
    f = np.empty(8)
    bad = cidx.copy(); bad[0] = 8
    with pytest.raises(ValueError, match="range"):
        _core.nm_forward(X, W, a, 0.1, 1.0, cptr, bad, f)
    if M[0].sum() >= 2:
        uns = cidx.copy(); uns[0], uns[1] = uns[1], uns[0]
        with pytest.raises(ValueError, match="increasing"):
            _core.nm_forward(X, W, a, 0.1, 1.0, cptr, uns, f)
    with pytest.raises(ValueError, match="offsets"):
        _core.nm_forward(X, W, a, 0.1, 1.0, cptr[::-1].copy(), cidx, f)
    with pytest.raises(ValueError):
        _core.nm_forward(X, W, a, 0.1, 1.0, cptr[:-1].copy(), cidx, f)
    indptr, indices = _pm(M)
    badi = indices.copy(); badi[0] = 10
    with pytest.raises(ValueError, match="range"):
        _core.pm_forward(X, W, a, 0.1, 1.0, indptr, badi, f)


# (130, 700, 40): several dgemm point tiles per block (2^18 / (64 * 40) = 102 points each,
# the last one partial) and per-thread buffers that grow
@pytest.mark.parametrize("m,n,d", [(1, 1, 2), (50, 1, 3), (1, 40, 5), (333, 77, 17),
                                   (130, 700, 40)])
def test_anchor_filter_and_splice(m, n, d):
    rng = np.random.default_rng(m + n)
    X = rng.standard_normal((n, d))
    Wa = rng.standard_normal((m, d))
    xnorm = np.linalg.norm(X, axis=1)
    rows = np.arange(m, dtype=np.int64)
    budget = rng.random(m) * 0.3
    thr = rng.standard_normal(m)
    S = Wa @ X.T
    keep = S + budget[:, None] * xnorm[None, :] > thr[:, None]
    ptr, idx, band, ip = _core.anchor_candidates(X, Wa, rows, thr, budget, xnorm, 0.5, block=7,
                                                 single=False)
    assert ip == m * n
    c2, i2 = _nm(keep)
    assert np.array_equal(ptr, c2) and np.array_equal(idx, i2)
    v = S + budget[:, None] * xnorm[None, :] - thr[:, None]
    assert band == ((v > 0) & (v <= 0.5)).sum()
    # float32 scores (the default): every pair of the float64 test, and besides it only
    # pairs within the float32 screen's bound of the threshold
    p32, i32, band32, ip32 = _core.anchor_candidates(X, Wa, rows, thr, budget, xnorm, 0.5,
                                                     block=7)
    assert ip32 == m * n
    K32 = np.zeros((m, n), bool)
    K32[np.repeat(np.arange(m), np.diff(p32)), i32] = True
    assert all(np.all(np.diff(i32[p32[k]:p32[k + 1]]) > 0) for k in range(m))
    assert np.all(K32[keep])
    bound = (2 * (d + 3) * 2.0 ** -24 * (np.linalg.norm(Wa, axis=1)[:, None] + 2.0 ** -50)
             * (xnorm[None, :] + 2.0 ** -50))
    assert np.all(np.abs(v[K32 & ~keep]) <= bound[K32 & ~keep])
    # filter with raised thresholds == fresh anchoring at those thresholds
    sub = np.arange(0, m, 2, dtype=np.int64)
    thr2 = thr[sub] + 0.3
    b2 = budget[sub] * 0.5
    p3, i3, ip3 = _core.filter_candidates(X, Wa, sub, thr2, b2, xnorm, ptr, idx)
    assert ip3 == keep[sub].sum()
    p4, i4, _, _ = _core.anchor_candidates(X, Wa, sub, thr2, b2, xnorm, single=False)
    assert np.array_equal(p3, p4) and np.array_equal(i3, i4)
    # splice them back in
    cp, ci = _core.csr_replace_rows(ptr, idx, sub, p3, i3)
    K = keep.copy()
    K[sub] = (S[sub] + b2[:, None] * xnorm[None, :] > thr2[:, None])
    c5, i5 = _nm(K)
    assert np.array_equal(cp, c5) and np.array_equal(ci, i5)
    # drift and anchor copies
    W = Wa + 0.01 * rng.standard_normal((m, d))
    out = np.empty(len(sub))
    _core.row_drift(W, Wa, sub, out)
    np.testing.assert_allclose(out, np.linalg.norm(W[sub] - Wa[sub], axis=1), rtol=1e-13)
    Wc = np.zeros_like(W); n2 = np.zeros(m); n1 = np.zeros(m)
    _core.copy_rows_norms(W, Wc, sub, n2, n1)
    assert np.array_equal(Wc[sub], W[sub])
    np.testing.assert_allclose(n2[sub], np.linalg.norm(W[sub], axis=1), rtol=1e-13)
    np.testing.assert_allclose(n1[sub], np.abs(W[sub]).sum(1), rtol=1e-13)


def test_csr_replace_rows_rejects_unsorted():
    cptr = np.array([0, 1, 2], np.int64); cidx = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match="sorted"):
        _core.csr_replace_rows(cptr, cidx, np.array([1, 0], np.int64),
                               np.array([0, 0, 0], np.int64), np.zeros(0, np.int32))


def _clock_up(clock):
    """The pass clock rounded up to float32 (the deadlines' precision)."""
    c = np.float32(clock)
    return np.nextafter(c, np.float32(np.inf)) if float(c) < clock else c


def _pass(X, W, a, b, scale, cptr, cidx, state, H, F0, fired, f, fresh, **kw):
    return _core.nm_pass(X, W, a, b, scale, cptr, cidx, state, H, F0, fired, f, fresh, **kw)


@pytest.mark.parametrize("m,n,d", [(1, 1, 1), (40, 30, 3), (300, 50, 8), (257, 129, 64),
                                   (2500, 60, 64), (150, 30, 16), (90, 25, 32), (60, 20, 4)])
@pytest.mark.parametrize("norm", [2, np.inf])
def test_tracked_passes_match_full_passes(m, n, d, norm):
    """Tracked passes (nm_pass with deadlines, the certified engine's use) along a path of
    moving points give at every position the full pass's fired counts and pair states and
    its f and H to round-off; a pass at unchanged points evaluates only the pairs whose
    deadline the clock has reached and flips none; small moves skip inner products.
    (tests/test_pass_kernel.py tests the kernel in depth; this one runs the shapes above:
    empty rows and points, the specialised widths, several neuron chunks.)"""
    X0, W, a, M = _problem(m, n, d, 0.5, 7)
    b, scale, eps = 0.3, 1 / np.sqrt(m), 0.05
    rng = np.random.default_rng(1)
    cptr, cidx = _nm(M)
    nnz = len(cidx)
    wd = np.abs(W).sum(1) if norm == np.inf else np.linalg.norm(W, axis=1)
    slack = 1e-9 * (abs(b) + 2 * wd * (np.linalg.norm(X0, axis=1).max() + 2 * eps + 1))
    state, dl = np.zeros(nnz, np.uint8), np.zeros(nnz, np.float32)
    f, H, F0, fired = np.empty(n), np.empty((n, d)), np.empty(n), np.empty(n, np.int64)
    kw = dict(deadline=dl, dual_norm=wd, slack=slack)
    _pass(X0, W, a, b, scale, cptr, cidx, state, H, F0, fired, f, True, cap=eps * (1 + 1e-9),
          **kw)
    Xp, clock, moved_ev = X0, 0.0, []
    for step in range(6):
        D = rng.standard_normal(X0.shape)
        if norm == np.inf:
            Xt = X0 + eps * np.clip(D, -1, 1)
            move = np.abs(Xt - Xp).max(1)
        else:
            D *= eps * rng.random((n, 1)) / np.linalg.norm(D, axis=1, keepdims=True)
            Xt = X0 + D
            move = np.linalg.norm(Xt - Xp, axis=1)
        if step == 3:
            Xt, move = Xp.copy(), np.zeros(n)          # a pass at unchanged points
        clock += move.max() * (1 + 1e-12)
        due = int((dl <= _clock_up(clock)).sum())       # the pairs this pass evaluates
        before = state.copy()
        ev, ex, flips, _ = _pass(Xt, W, a, b, scale, cptr, cidx, state, H, F0, fired, f, False,
                                 kept_only=True, clock=clock, cap=2 * eps * (1 + 1e-9), **kw)
        if step != 3:
            moved_ev.append(ev)
        assert flips == int(((before ^ state) & 1).sum()) and 0 <= ex <= ev
        f2, H2 = np.empty(n), np.empty((n, d))
        fired2, mask2 = np.empty(n, np.int64), np.empty(nnz, np.uint8)
        _core.nm_forward(Xt, W, a, b, scale, cptr, cidx, f2, H2, fired2, mask2)
        np.testing.assert_array_equal(fired, fired2)
        np.testing.assert_array_equal(state & 1, mask2)
        np.testing.assert_allclose(H, H2, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(f, f2, rtol=1e-11, atol=1e-12)
        assert ev == due
        if step == 3:
            assert flips == 0                     # nothing moved: no state changes
        Xp = Xt
    assert all(0 <= e <= nnz for e in moved_ev)
    if nnz > 100:
        assert min(moved_ev) < nnz                 # the deadlines skip pairs


def test_tracked_pass_leaves_exact_zeros_when_a_point_stops_firing():
    """A point whose last fired neuron stops firing gets H_i = 0 and F0_i = 0 exactly, as a
    fresh sum would (an l-inf attack follows the signs of H)."""
    W = np.array([[0.3, 0.7, 0.1], [0.2, 0.9, 0.4]])
    a = np.array([1.0, -0.7])
    b, scale = 0.5, 1 / 3
    X0 = np.array([[0.6, 0.8, 0.3]])
    cptr, cidx = np.array([0, 1, 2], np.int64), np.zeros(2, np.int32)
    f, H, F0, fired = np.empty(1), np.empty((1, 3)), np.empty(1), np.empty(1, np.int64)
    state = np.zeros(2, np.uint8)
    _pass(X0, W, a, b, scale, cptr, cidx, state, H, F0, fired, f, True)
    assert fired[0] == 2 and F0[0] != 0.0
    X1 = np.array([[0.1, 0.1, 0.1]])
    for deadline in (None, np.zeros(2, np.float32)):        # all pairs, or the due ones
        st, H1, F1, c1, f1 = state.copy(), H.copy(), F0.copy(), fired.copy(), f.copy()
        kw = {} if deadline is None else dict(
            deadline=deadline, clock=float(np.linalg.norm(X1 - X0)) * (1 + 1e-12),
            dual_norm=np.linalg.norm(W, axis=1), slack=np.full(2, 1e-9), cap=10.0)
        ev, _, flips, _ = _pass(X1, W, a, b, scale, cptr, cidx, st, H1, F1, c1, f1, False,
                                **kw)
        assert ev == 2 and flips == 2
        assert c1[0] == 0 and not st.any()
        assert np.all(H1 == 0.0) and F1[0] == 0.0 and f1[0] == 0.0


def test_tracked_pass_rejects_bad_state():
    X, W, a, M = _problem(20, 10, 3, 0.5, 2)
    cptr, cidx = _nm(M)
    nnz, n = len(cidx), 10
    args = [X, W, a, 0.1, 1.0, cptr, cidx, np.zeros(nnz, np.uint8), np.zeros((n, 3)),
            np.zeros(n), np.zeros(n, np.int64), np.zeros(n), False]
    kw = dict(deadline=np.zeros(nnz, np.float32), clock=0.1, dual_norm=np.ones(20),
              slack=np.zeros(20), cap=0.1)
    _core.nm_pass(*args, **kw)
    bad = list(args)
    bad[7] = np.zeros(nnz + 1, np.uint8)
    with pytest.raises(ValueError, match="inconsistent"):
        _core.nm_pass(*bad, **kw)
    with pytest.raises(ValueError, match="cap"):
        _core.nm_pass(*args, **dict(kw, cap=-1.0))
    with pytest.raises(ValueError, match="deadline"):
        _core.nm_pass(*args, **dict(kw, deadline=np.zeros(nnz + 1, np.float32)))
    bad = list(args)
    bad[6] = cidx[::-1].copy()
    with pytest.raises(ValueError):
        _core.nm_pass(*bad, **kw)


@pytest.mark.parametrize("screen", [False, True])
def test_keep_bits_match_numpy(screen):
    """nm_pass's keep bit (score > keep_thr[r]) and fired bit against numpy; nm_weight_grad
    reads bit 0 of such a state and ignores bit 1."""
    X, W, a, M = _problem(120, 60, 5, 0.4, 11)
    b, scale = 0.4, 0.1
    keep_thr = b - np.random.default_rng(3).random(120)
    cptr, cidx = _nm(M)
    nnz = len(cidx)
    state = np.full(nnz, 0xFF, np.uint8)
    f, H, F0, fired = np.empty(60), np.empty((60, 5)), np.empty(60), np.empty(60, np.int64)
    ev, ex, flips, kept = _core.nm_pass(X, W, a, b, scale, cptr, cidx, state, H, F0, fired, f,
                                        True, keep_thr=keep_thr, screen=screen)
    pairs_r = np.repeat(np.arange(120), np.diff(cptr))
    z = np.einsum("kj,kj->k", W[pairs_r], X[cidx])
    np.testing.assert_array_equal(state & 1, z > b)
    np.testing.assert_array_equal(state >> 1, z > keep_thr[pairs_r])
    assert (ev, flips, kept) == (nnz, 0, int((z > keep_thr[pairs_r]).sum()))
    assert 0 < kept < nnz and (ex == 0 or screen)
    coef = np.random.default_rng(5).standard_normal(60)
    rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)
    G1, G2 = np.empty((len(rows), 5)), np.empty((len(rows), 5))
    _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G1, state)
    _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G2, state & 1)
    assert np.array_equal(G1, G2)


@pytest.mark.parametrize("m,d", [(0, 3), (1, 1), (37, 5), (300, 64)])
def test_row_norms_match_numpy(m, d):
    W = np.random.default_rng(m + d).standard_normal((m, d))
    n2, n1 = np.full(m, np.nan), np.full(m, np.nan)
    _core.row_norms(W, n2, n1)
    np.testing.assert_allclose(n2, np.linalg.norm(W, axis=1), rtol=1e-14)
    np.testing.assert_allclose(n1, np.abs(W).sum(1), rtol=1e-14)
    with pytest.raises(ValueError, match="row_norms"):
        _core.row_norms(W, np.empty(m + 1), n1)


@pytest.mark.parametrize("m,n,d", [(1, 1, 1), (0, 5, 3), (5, 0, 3), (300, 70, 3),
                                   (257, 129, 64), (2000, 40, 17)])
def test_dense_fired_pairs_match_numpy(m, n, d):
    rng = np.random.default_rng(m + n + d)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((m, d))
    b = 0.4
    indptr, indices = _core.dense_fired_pairs(X, W, b)
    F = X @ W.T > b                   # exact ties at b have probability zero here
    ref_ptr, ref_idx = _pm(F.T)
    assert indptr.dtype == np.int64 and indices.dtype == np.int64
    np.testing.assert_array_equal(indptr, ref_ptr)
    np.testing.assert_array_equal(indices, ref_idx)
    p2, i2 = _core.dense_fired_pairs(X, W, b, tile=100)
    assert np.array_equal(p2, indptr) and np.array_equal(i2, indices)


def test_csr_transpose_and_pm_weight_grad_without_check():
    """check=False skips the validation only: same results on valid pairs."""
    X, W, a, M = _problem(80, 40, 5, 0.4, 21)
    indptr, indices = _pm(M)
    c1, i1 = _core.csr_transpose(indptr, indices, 80)
    c2, i2 = _core.csr_transpose(indptr, indices, 80, False)
    assert np.array_equal(c1, c2) and np.array_equal(i1, i2)
    coef = np.random.default_rng(0).standard_normal(40)
    r1, G1, e1, f1 = _core.pm_weight_grad(X, W, a, 0.2, coef, indptr, indices)
    r2, G2, e2, f2 = _core.pm_weight_grad(X, W, a, 0.2, coef, indptr, indices, check=False)
    assert np.array_equal(r1, r2) and np.array_equal(G1, G2) and (e1, f1) == (e2, f2)
    bad = indices.copy(); bad[0] = 80
    with pytest.raises(ValueError, match="range"):
        _core.pm_weight_grad(X, W, a, 0.2, coef, indptr, bad)


def test_wrappers_reject_bad_input_without_crashing():
    """Inputs that used to reach the nogil loops unchecked (out-of-bounds reads and writes,
    division by zero under cdivision) raise ValueError."""
    rng = np.random.default_rng(0)
    n, m, d = 6, 5, 3
    X, W = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    a, b = np.ones(m), 0.1
    X0, W0 = np.zeros((n, 0)), np.zeros((m, 0))          # d = 0
    i64 = lambda *v: np.array(v, np.int64)
    i32 = lambda *v: np.array(v, np.int32)

    def bad(match, fn, *args, **kw):
        with pytest.raises(ValueError, match=match):
            fn(*args, **kw)

    # csr_replace_rows: offsets of the current and of the new lists
    cptr, cidx = i64(0, 1, 2, 2, 3, 3), i32(0, 1, 2)
    ok_rows, ok_ptr, ok_idx = i64(1, 3), i64(0, 2, 3), i32(4, 5, 0)
    _core.csr_replace_rows(cptr, cidx, ok_rows, ok_ptr, ok_idx)
    bad("cptr", _core.csr_replace_rows, i64(1, 1, 2, 2, 3, 3), cidx, ok_rows, ok_ptr, ok_idx)
    bad("cptr", _core.csr_replace_rows, i64(0, 2, 1, 2, 3, 3), cidx, ok_rows, ok_ptr, ok_idx)
    bad("cptr", _core.csr_replace_rows, i64(0, 1, 2, 2, 3, 4), cidx, ok_rows, ok_ptr, ok_idx)
    bad("cptr", _core.csr_replace_rows, i64(), i32(), i64(), i64(0), i32())
    bad("new_ptr", _core.csr_replace_rows, cptr, cidx, ok_rows, i64(1, 2, 3), ok_idx)
    bad("new_ptr", _core.csr_replace_rows, cptr, cidx, ok_rows, i64(0, 5, 3), ok_idx)
    bad("new_ptr", _core.csr_replace_rows, cptr, cidx, ok_rows, i64(0, 2, 2), ok_idx)
    bad("new_ptr", _core.csr_replace_rows, cptr, cidx, ok_rows, i64(0, 3), ok_idx)
    # filter_candidates: the candidate CSR is validated before use
    rows, thr, bud, xn = i64(0, 2), np.zeros(2), np.zeros(2), np.ones(n)
    _core.filter_candidates(X, W, rows, thr, bud, xn, cptr, cidx)
    bad("range", _core.filter_candidates, X, W, rows, thr, bud, xn, cptr, i32(0, n, 2))
    bad("range", _core.filter_candidates, X, W, rows, thr, bud, xn, cptr, i32(0, -1, 2))
    bad("offsets", _core.filter_candidates, X, W, rows, thr, bud, xn,
        i64(0, 3, 1, 2, 3, 3), cidx)
    bad("offsets", _core.filter_candidates, X, W, rows, thr, bud, xn,
        i64(0, 1, 2, 2, 3, 9), cidx)
    bad("range", _core.filter_candidates, X, W, i64(0, m), thr, bud, xn, cptr, cidx)
    # d = 0 (division by zero in the tile / chunk sizes) and leaf_size 0
    bad("column", _core.dense_forward, X0, W0, a, b, 1.0, np.empty(n))
    bad("column", _core.dense_weight_grad, X0, W0, a, b, np.ones(n), np.empty((m, 0)))
    bad("column", _core.hsr_brute_csr, W0, X0, b)
    bad("column", _core.dense_fired_pairs, X0, W0, b)
    c0, i0 = i64(*([0] * (m + 1))), i32()
    bad("column", _core.nm_forward, X0, W0, a, b, 1.0, c0, i0, np.empty(n))
    bad("column", _core.nm_pass, X0, W0, a, b, 1.0, c0, i0, np.zeros(0, np.uint8),
        np.zeros((n, 0)), np.zeros(n), np.zeros(n, np.int64), np.zeros(n), True)
    bad("column", _core.anchor_candidates, X0, W0, i64(0, 1), np.zeros(2), np.zeros(2),
        np.ones(n))
    bad("leaf_size", _core._BallTree, W, 0)
    bad("leaf_size", _core._BallTree, W, -3)
    # dense kernels: shapes
    f, H, fired = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)
    _core.dense_forward(X, W, a, b, 1.0, f, H, fired)
    bad("dense_forward", _core.dense_forward, X, W[:, :2].copy(), a, b, 1.0, f)
    bad("dense_forward", _core.dense_forward, X, W, a[:-1].copy(), b, 1.0, f)
    bad("dense_forward", _core.dense_forward, X, W, a, b, 1.0, np.empty(n - 1))
    bad("dense_forward", _core.dense_forward, X, W, a, b, 1.0, np.empty(n + 1))
    bad("dense_forward", _core.dense_forward, X, W, a, b, 1.0, f, np.empty((n, d + 1)))
    bad("dense_forward", _core.dense_forward, X, W, a, b, 1.0, f, np.empty((n - 1, d)))
    bad("dense_forward", _core.dense_forward, X, W, a, b, 1.0, f, H, np.empty(n - 1, np.int64))
    coef, G = np.ones(n), np.empty((m, d))
    _core.dense_weight_grad(X, W, a, b, coef, G)
    bad("dense_weight_grad", _core.dense_weight_grad, X, W[:, :2].copy(), a, b, coef, G)
    bad("dense_weight_grad", _core.dense_weight_grad, X, W, a[:-1].copy(), b, coef, G)
    bad("dense_weight_grad", _core.dense_weight_grad, X, W, a, b, coef[:-1].copy(), G)
    bad("dense_weight_grad", _core.dense_weight_grad, X, W, a, b, coef, np.empty((m - 1, d)))
    bad("dense_weight_grad", _core.dense_weight_grad, X, W, a, b, coef, np.empty((m, d + 1)))
    # brute-force half-space reporting: W and X must agree on d
    bad("columns", _core.hsr_brute_csr, rng.standard_normal((m, d + 1)), X, b)
    bad("columns", _core.dense_fired_pairs, X, rng.standard_normal((m, d - 1)), b)
    # csr_transpose: empty offsets
    bad("csr_transpose", _core.csr_transpose, i64(), i64(), 3)
