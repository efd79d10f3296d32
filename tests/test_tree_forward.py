"""The tree engine's fused pass (PartitionTree.forward_batch) against plain recomputations.

Two-sided and bit for bit: the fired set of every point is exactly {r : <w_r, x> > b} with the
sequential dot product that defines "fired" (recomputed here in numpy: one rounded multiply
and one rounded add per coordinate, in order, as ``sa_dot_seq``), ties included (dyadic data
with b an attained score); f, H and the counts equal a plain sum of scale a_r (z_r - b) and
scale a_r w_r over those pairs in the returned order, in 8 lanes by tree position combined
in a fixed order (the pass's definition), on every SIMD level and thread count. The weight gradient over the fused
pass's pairs with ``all_fired`` equals the one that re-evaluates every pair, and a numpy sum.
"""
import numpy as np
import pytest

from sparseadv import _core
from sparseadv.engines import make_engine
from sparseadv.hsr import PartitionTree
from sparseadv.network import ShiftedReLUNet


def seq_scores(W, x):
    """<w_r, x> for every row, summed k = 0..d-1 in order (no fused multiply-add)."""
    z = W[:, 0] * x[0]
    for k in range(1, W.shape[1]):
        z = z + W[:, k] * x[k]
    return z


def hsum8(v):
    """The lanes' fixed combination: ((v0 + v4) + (v1 + v5)) + ((v2 + v6) + (v3 + v7))."""
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))


def plain_pass(W, a, scale, b, x, order, pos):
    """f, H of one point summed pair by pair in the given order of rows, in 8 lanes by tree
    position (lane pos[r] mod 8), the lanes combined by hsum8."""
    d = W.shape[1]
    F, Hl = np.zeros(8), np.zeros((8, d))
    z = seq_scores(W, x)
    for r in order:
        c = scale * a[r]
        j = pos[r] % 8
        F[j] = F[j] + c * (z[r] - b)
        Hl[j] = Hl[j] + c * W[r]
    return hsum8(F), np.array([hsum8(Hl[:, k]) for k in range(d)])


def check_fused(tree, W, a, scale, X, b):
    n, d = X.shape
    f, H, fired = np.full(n, np.nan), np.full((n, d), np.nan), np.full(n, -1, np.int64)
    before = tree.stats
    ip, ind = tree.forward_batch(X, b, a, scale, f, H, fired, pairs=True)
    after = tree.stats
    assert after["reported_without_eval"] == before["reported_without_eval"]
    assert ip.dtype == np.int64 and ind.dtype == np.int64 and ip[0] == 0 and ip[-1] == len(ind)
    np.testing.assert_array_equal(np.diff(ip), fired)
    for i in range(n):
        got = ind[ip[i]:ip[i + 1]]
        z = seq_scores(W, X[i])
        np.testing.assert_array_equal(np.sort(got), np.flatnonzero(z > b))   # two-sided
        fi, hi = plain_pass(W, a, scale, b, X[i], got, tree._tree.pos_arr)
        assert f[i] == fi and np.array_equal(H[i], hi), i                    # bit for bit
    # without pairs, and without H: the same bits
    f2, H2, fired2 = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)
    assert tree.forward_batch(X, b, a, scale, f2, H2, fired2) == (None, None)
    f3 = np.empty(n)
    tree.forward_batch(X, b, a, scale, f3)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(f3, f)
    np.testing.assert_array_equal(H2, H)
    np.testing.assert_array_equal(fired2, fired)
    # the same sets as the plain query
    qp, qi = tree.query_batch(X, b)
    np.testing.assert_array_equal(qp, ip)
    for i in range(n):
        np.testing.assert_array_equal(np.sort(ind[ip[i]:ip[i + 1]]), qi[qp[i]:qp[i + 1]])
    return ip, ind, f


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("leaf_size", [1, 4, 32])
@pytest.mark.parametrize("b", [-50.0, 0.0, 0.8, 1.6, 50.0])
def test_fused_pass_is_exact_and_bitwise(d, leaf_size, b):
    rng = np.random.default_rng(d * 1000 + leaf_size)
    m, n = 700, 23
    W = rng.standard_normal((m, d)) + 0.5            # off-centre: whole nodes fire at b = 0
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((n, d))
    X[3] = 0.0                                        # a zero query
    tree = PartitionTree(W, leaf_size=leaf_size, fallback="tree")
    check_fused(tree, W, a, 0.37, X, b)


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_fused_pass_on_ties_dyadic(d, seed):
    """Dyadic data: scores are exact and many rows sit exactly on b; they must not fire."""
    rng = np.random.default_rng(seed)
    W = rng.integers(-4, 5, size=(900, d)) * 0.25
    X = rng.integers(-2, 3, size=(9, d)) * 0.5
    b = float(seq_scores(W, X[0])[rng.integers(0, 900)])
    assert np.any(seq_scores(W, X[0]) == b)
    a = rng.choice([-1.0, 1.0], 900)
    check_fused(PartitionTree(W, leaf_size=8, fallback="tree"), W, a, 1.0, X, b)


def test_fused_pass_after_updates_and_rebuilds():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((2000, 3))
    a = rng.choice([-1.0, 1.0], 2000)
    X = rng.standard_normal((30, 3))
    tree = PartitionTree(W, leaf_size=16, fallback="tree")     # (auto: the GEMM path here)
    for step in range(6):
        rows = np.sort(rng.choice(2000, 300, replace=False))
        W[rows] += rng.standard_normal((300, 3)) * (0.1 if step < 3 else 3.0)
        tree.update(rows, W[rows])
        check_fused(tree, W, a, 0.5, X, 1.0)
    assert tree.stats["rebuilds"] >= 1


@pytest.mark.parametrize("fallback", ["brute", "auto"])
def test_fused_pass_on_the_gemm_path(fallback):
    """At high d the policy sends points to the GEMM path: there f, H, fired are pm_forward's
    over the brute-force answer, and the pairs are that answer."""
    rng = np.random.default_rng(2)
    m, n, d = 600, 80, 48
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    b = 0.5
    tree = PartitionTree(W, leaf_size=8, fallback=fallback)
    f, H, fired = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)
    ip, ind = tree.forward_batch(X, b, a, 0.3, f, H, fired, pairs=True)
    assert tree.stats["brute_force_queries"] > 0
    qp, qi = tree.query_batch(X, b)
    np.testing.assert_array_equal(qp, ip)
    for i in range(n):
        np.testing.assert_array_equal(np.sort(ind[ip[i]:ip[i + 1]]), qi[qp[i]:qp[i + 1]])
    Z = X @ W.T
    F = Z > b
    np.testing.assert_allclose(f, 0.3 * ((np.maximum(Z - b, 0) * F) @ a), atol=1e-12)
    np.testing.assert_allclose(H, 0.3 * ((F * a) @ W), atol=1e-12)
    np.testing.assert_array_equal(fired, F.sum(1))


def test_fused_pass_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((50, 3))
    tree = PartitionTree(W)
    X = rng.standard_normal((4, 3))
    a = np.ones(50)
    with pytest.raises(ValueError):
        tree.forward_batch(X, 0.0, np.ones(49), 1.0, np.empty(4))
    with pytest.raises(ValueError):
        tree.forward_batch(X, 0.0, a, 1.0, np.empty(3))
    with pytest.raises(ValueError):
        tree.forward_batch(X, 0.0, a, 1.0, np.empty(4), np.empty((4, 2)))
    with pytest.raises(ValueError):
        tree.forward_batch(X, 0.0, a, 1.0, np.empty(4), None, np.empty(5, np.int64))
    with pytest.raises(ValueError):
        tree.forward_batch(rng.standard_normal((4, 2)), 0.0, a, 1.0, np.empty(4))


def test_weight_gradient_without_re_evaluation():
    rng = np.random.default_rng(7)
    m, n, d = 3000, 64, 3
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((n, d))
    coef = rng.standard_normal(n)
    b = 1.2
    tree = PartitionTree(W, leaf_size=16)
    ip, ind = tree.forward_batch(X, b, a, 1.0, np.empty(n), pairs=True)
    rows, G, ev, nf = _core.pm_weight_grad(X, W, a, b, coef, ip, ind, False, all_fired=True)
    assert ev == 0 and nf == len(ind)
    rows2, G2, ev2, nf2 = _core.pm_weight_grad(X, W, a, b, coef, ip, ind, False)
    assert ev2 == len(ind) and nf2 == nf
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_array_equal(G, G2)
    F = seq_scores(W, X.T) > b if d == 1 else (X @ W.T > b)
    Gref = ((F * coef[:, None]).T @ X) * a[:, None]
    np.testing.assert_array_equal(rows, np.flatnonzero(F.any(0)))
    np.testing.assert_allclose(G, Gref[rows], atol=1e-12)


def test_engine_counters_are_the_work_done():
    """inner products = the tree's evaluated rows (no kernel re-evaluates a pair on the tree
    path); candidate pairs = reported = fired pairs of each pass; fired pairs as dense."""
    net = ShiftedReLUNet(4096, 3, seed=1)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    eng = make_engine("tree", net)
    dense = make_engine("dense", net)
    eng.reset_counters()
    before = eng.tree.stats
    f, fired = eng.forward(X, pass_index=0)
    H, f2 = eng.input_direction(X, pass_index=0)
    rows, G = eng.weight_gradient(X, np.ones(40), pass_index=0)
    after = eng.tree.stats
    c = eng.counters
    assert c["inner_products"] == after["inner_products"] - before["inner_products"]
    assert c["candidate_pairs"] == 2 * int(fired.sum())
    fd, firedd = dense.forward(X)
    np.testing.assert_array_equal(fired, firedd)
    np.testing.assert_allclose(f, fd, atol=1e-12)
    np.testing.assert_array_equal(f, f2)
    Hd, _ = dense.input_direction(X)
    np.testing.assert_allclose(H, Hd, atol=1e-12)
    rd, Gd = dense.weight_gradient(X, np.ones(40))
    full = np.zeros((net.m, 3))
    full[rd] = Gd
    np.testing.assert_allclose(G, full[rows], atol=1e-12)
    assert np.all(full[np.setdiff1d(np.arange(net.m), rows)] == 0)


def test_weight_gradient_all_fired_checks_pairs():
    X, W, a = np.ones((2, 3)), np.ones((4, 3)), np.ones(4)
    ip = np.array([0, 1, 2], dtype=np.int64)
    with pytest.raises(ValueError):
        _core.pm_weight_grad(X, W, a, 0.0, np.ones(2), ip, np.array([0, 4]), all_fired=True)
    with pytest.raises(ValueError):
        _core.pm_weight_grad(X, W, a, 0.0, np.ones(2), np.array([0, 3, 2]), np.array([0, 1]),
                             all_fired=True)
    rows, G, ev, nf = _core.pm_weight_grad(X, W, a, 0.0, np.array([2.0, 3.0]), ip,
                                           np.array([3, 3]), all_fired=True)
    np.testing.assert_array_equal(rows, [3])
    np.testing.assert_array_equal(G, [[5.0, 5.0, 5.0]])
    assert (ev, nf) == (0, 2)


def test_weight_gradient_all_fired_same_bits_on_any_thread_count():
    """The parallel scatter splits the neurons into ranges: every row's sum keeps its order."""
    import subprocess
    import sys
    code = ("import hashlib, numpy as np; from sparseadv import _core;"
            "r = np.random.default_rng(3); m, n, d = 5000, 300, 3;"
            "W = r.standard_normal((m, d)); X = r.standard_normal((n, d)); a = np.ones(m);"
            "M = r.random((n, m)) < 0.05; ip = np.r_[0, np.cumsum(M.sum(1))].astype(np.int64);"
            "ind = np.nonzero(M)[1].astype(np.int64);"
            "rows, G, _, _ = _core.pm_weight_grad(X, W, a, 0.0, r.standard_normal(n), ip, ind,"
            " all_fired=True); print(rows.sum(), hashlib.sha256(G.tobytes()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": t}).stdout
            for t in ("1", "2", "3")}
    assert len(outs) == 1, outs


def _same_output_on_every_level(code):
    """Run ``code`` in a fresh interpreter on every SIMD level this CPU has (SPARSEADV_SIMD)
    with 1 and 3 threads; every run must print the same thing."""
    import os
    import subprocess
    import sys
    levels = ["baseline", "avx2", "avx512"][:("baseline", "avx2+fma", "avx512").index(
        _core.active_kernels_simd()) + 1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = {}
    for level in levels:
        for threads in ("1", "3"):
            env = dict(os.environ, SPARSEADV_SIMD=level, OMP_NUM_THREADS=threads,
                       PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
            outs[level, threads] = subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True,
                text=True, timeout=300).stdout
    assert len(set(outs.values())) == 1, outs


def test_fused_pass_same_bits_on_every_simd_level_and_thread_count():
    """The pass sums in 8 lanes by tree position with the same operations in every build
    (baseline: lanes as arrays; AVX2: two ymm halves; AVX-512: one zmm and masked adds), one
    point per thread: the same bytes for every SIMD level the CPU has and any thread count,
    for the specialised widths (d = 2, 3, 4) and the generic ones (d = 1, 5, 9: the H lanes
    in the scratch)."""
    code = (
        "import hashlib, numpy as np\n"
        "from sparseadv.hsr import PartitionTree\n"
        "out = []\n"
        "for d in (1, 2, 3, 4, 5, 9):\n"
        "    r = np.random.default_rng(d); m, n = 3001, 57\n"
        "    W = r.standard_normal((m, d)) + 0.3; a = r.choice([-1.0, 1.0], m)\n"
        "    X = r.standard_normal((n, d))\n"
        "    for ls in (3, 16):\n"
        "        t = PartitionTree(W, leaf_size=ls, fallback='tree')\n"
        "        f, H, c = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)\n"
        "        ip, ind = t.forward_batch(X, 1.1, a, 0.7, f, H, c, pairs=True)\n"
        "        out.append(b''.join(v.tobytes() for v in (f, H, c, ip, ind)))\n"
        "print(hashlib.sha256(b''.join(out)).hexdigest())\n")
    _same_output_on_every_level(code)


def test_fused_pass_coefficients_follow_a_scale_and_rebuilds():
    """The pass keeps scale * a in tree order between calls; a changed in place, another
    scale, a rebuild (new tree order) and a restored pickle must each be seen."""
    import pickle
    rng = np.random.default_rng(11)
    m, n, d = 1500, 20, 3
    W = rng.standard_normal((m, d)) + 0.4
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((n, d))
    tree = PartitionTree(W, leaf_size=8, fallback="tree")
    check_fused(tree, W, a, 0.5, X, 0.9)
    a[::3] *= -2.0                                   # in place: the same array object
    check_fused(tree, W, a, 0.5, X, 0.9)
    check_fused(tree, W, a, -0.25, X, 0.9)
    rows = np.sort(rng.choice(m, 700, replace=False))
    W[rows] = rng.standard_normal((700, d)) * 3
    tree.update(rows, W[rows])
    tree.rebuild()
    check_fused(tree, W, a, -0.25, X, 0.9)
    check_fused(pickle.loads(pickle.dumps(tree)), W, a, -0.25, X, 0.9)


@pytest.mark.parametrize("s", [1e-160, 1e-100, 1e140])
def test_fused_pass_at_extreme_scales(s):
    """Rows whose sums of squares underflow (1e-160) or pass 2^900 (1e140): the node and
    block radii are then computed with scaling, and the pass stays exact (two-sided)."""
    rng = np.random.default_rng(int(-np.log10(s)) % 97)
    m, n, d = 1200, 15, 3
    W = (rng.standard_normal((m, d)) + 0.5) * s
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((n, d)) / s
    for b in (0.0, 0.7, 2.0):
        tree = PartitionTree(W, leaf_size=8, fallback="tree")
        check_fused(tree, W, a, 1.0, X, b)
        rows = np.arange(0, m, 5)
        W2 = W.copy()
        W2[rows] *= 1.5
        tree.update(rows, W2[rows])
        check_fused(tree, W2, a, 1.0, X, b)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_weight_gradient_all_fired_with_kept_scratch(d):
    """The engine's path: full-size buffers kept zero between calls and an output buffer;
    the same rows and bits as fresh buffers, the scratch left zero, bad scratch refused."""
    rng = np.random.default_rng(d)
    m, n = 700, 40
    W, X, a = rng.standard_normal((m, d)), rng.standard_normal((n, d)), rng.choice([-1.0, 1.0], m)
    tree = PartitionTree(W, leaf_size=8, fallback="tree")
    gs = 4 if d == 3 else d
    scratch = (np.zeros((m, gs)), np.zeros(m, dtype=np.uint8))
    out = np.full(m * d, np.nan)
    for b in (0.3, 1.1, -2.0):
        ip, ind = tree.forward_batch(X, b, a, 1.0, np.empty(n), pairs=True)
        coef = rng.standard_normal(n)
        rows, G, _, nf = _core.pm_weight_grad(X, W, a, b, coef, ip, ind, False, all_fired=True)
        rows2, G2, _, nf2 = _core.pm_weight_grad(X, W, a, b, coef, ip, ind, False,
                                                 all_fired=True, scratch=scratch, out=out)
        np.testing.assert_array_equal(rows2, rows)
        np.testing.assert_array_equal(G2, G)
        assert nf2 == nf and np.shares_memory(G2, out)
        assert not scratch[0].any() and not scratch[1].any()
        # and a numpy sum over the pairs (each row's points in increasing order)
        ref = np.zeros((m, d))
        for i in range(n):
            for r in ind[ip[i]:ip[i + 1]]:
                ref[r] += coef[i] * a[r] * X[i]
        np.testing.assert_array_equal(rows, np.unique(ind))
        np.testing.assert_allclose(G, ref[rows], rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="scratch"):
        _core.pm_weight_grad(X, W, a, 0.0, np.ones(n), ip, ind, False, all_fired=True,
                             scratch=(np.zeros((m, gs + 1)), np.zeros(m, np.uint8)))


def _ball_points(rng, X0, r):
    """X0 moved by exactly l2 distance r (rounded), in random directions."""
    U = rng.standard_normal(X0.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return X0 + r * U


@pytest.mark.parametrize("d,leaf_size", [(2, 4), (3, 8), (3, 32), (5, 16)])
def test_anchored_passes_are_exact_and_the_same_bits(d, leaf_size):
    """The passes of one attack with an anchor: points inside the ball (anchored walk, done
    once) and outside it (walked), ties included: the same fired sets as brute force
    (two-sided), and the same bits as the pass without an anchor, every pass."""
    rng = np.random.default_rng(100 + d)
    m, n, rho = 2500, 40, 0.3
    W = rng.standard_normal((m, d)) + 0.3
    a = rng.choice([-1.0, 1.0], m)
    X0 = rng.standard_normal((n, d))
    tree = PartitionTree(W, leaf_size=leaf_size, fallback="tree")
    for b in (0.5, 1.5):
        anchor = tree.anchor(X0, rho)
        for r in (0.0, 0.5 * rho, 0.999 * rho, 1.5 * rho):
            X = _ball_points(rng, X0, r)
            if r == 0.0:
                X[5] = X0[5]
            f, H, c = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)
            ip, ind = tree.forward_batch(X, b, a, 0.7, f, H, c, pairs=True, anchor=anchor)
            f2, H2, c2 = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)
            ip2, ind2 = tree.forward_batch(X, b, a, 0.7, f2, H2, c2, pairs=True)
            for got, want in ((f, f2), (H, H2), (c, c2), (ip, ip2), (ind, ind2)):
                np.testing.assert_array_equal(got, want)
            for i in range(n):
                z = seq_scores(W, X[i])
                np.testing.assert_array_equal(np.sort(ind[ip[i]:ip[i + 1]]),
                                              np.flatnonzero(z > b))


def test_anchor_walks_once_and_goes_stale_with_the_tree():
    """An anchor's walk is done at the first pass (nodes visited then; later passes only test
    blocks); a changed threshold or tree is not served from it; an anchor of another tree is
    ignored by PartitionTree.forward_batch and refused by the core."""
    rng = np.random.default_rng(8)
    m, n, d, rho = 4000, 30, 3, 0.05
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X0 = rng.standard_normal((n, d))
    X0 /= np.linalg.norm(X0, axis=1, keepdims=True)
    tree = PartitionTree(W, leaf_size=32, fallback="tree")
    anchor = tree.anchor(X0, rho)
    f = np.empty(n)

    def nodes(X, b=1.2, anc=anchor):
        before = tree.stats["nodes_visited"]
        tree.forward_batch(X, b, a, 1.0, f, anchor=anc)
        return tree.stats["nodes_visited"] - before

    first = nodes(X0)
    plain = nodes(X0, anc=None)
    second = nodes(_ball_points(rng, X0, 0.5 * rho))
    assert second < first and second < plain        # no walk: the blocks only
    assert nodes(X0, b=1.3) == nodes(X0, b=1.3, anc=None)      # another b: walks again
    rows = np.arange(0, m, 7)
    W[rows] += 0.01
    tree.update(rows, W[rows])
    check_fused(tree, W, a, 1.0, _ball_points(rng, X0, 0.5 * rho), 1.2)
    assert nodes(X0) == nodes(X0, anc=None)         # stale after the update: walks again
    other = PartitionTree(W, leaf_size=32, fallback="tree")
    other.forward_batch(X0, 1.2, a, 1.0, f, anchor=anchor)      # ignored
    with pytest.raises(ValueError, match="anchor"):
        other._tree.forward_batch(X0, 1.2, a, 1.0, f, anchor=anchor)
    fresh = tree.anchor(X0, rho, reuse=anchor)
    assert fresh is anchor                                      # buffers taken over
    np.testing.assert_array_equal(_fwd(tree, X0, a, anchor), _fwd(tree, X0, a, None))


def _fwd(tree, X, a, anchor):
    f = np.empty(X.shape[0])
    tree.forward_batch(X, 1.2, a, 1.0, f, anchor=anchor)
    return f


def _pilot_problem(seed, m=20000, n=200, d=3):
    """Gaussian rows, signs and unit points, large enough for the pilot to run."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X0 = rng.standard_normal((n, d))
    X0 /= np.linalg.norm(X0, axis=1, keepdims=True)
    return rng, W, a, X0


def test_anchor_with_the_pilot_split():
    """fallback="auto" runs a pilot of the first rows, then the rest: the anchor's rows
    follow (the later passes visit fewer nodes than plain walks: no row was checked against
    another row's clean point), and the answers are exact."""
    rng, W, a, X0 = _pilot_problem(9)
    n = len(X0)
    tree = PartitionTree(W, leaf_size=32)              # auto: the tree path here
    anchor = tree.anchor(X0, 0.1)
    for r in (0.0, 0.05, 0.099):
        X = _ball_points(rng, X0, r)
        f, f2 = np.empty(n), np.empty(n)
        s0 = tree.stats["nodes_visited"]
        ip, ind = tree.forward_batch(X, 1.7, a, 1.0, f, pairs=True, anchor=anchor)
        s1 = tree.stats["nodes_visited"]
        ip2, ind2 = tree.forward_batch(X, 1.7, a, 1.0, f2, pairs=True)
        s2 = tree.stats["nodes_visited"]
        np.testing.assert_array_equal(f, f2)
        np.testing.assert_array_equal(ind, ind2)
        if r > 0:
            assert s1 - s0 < 0.8 * (s2 - s1)
        for i in range(0, n, 7):
            np.testing.assert_array_equal(np.sort(ind[ip[i]:ip[i + 1]]),
                                          np.flatnonzero(seq_scores(W, X[i]) > 1.7))
    assert tree.stats["brute_force_queries"] == 0


def test_kept_pairs_give_the_gradient_of_the_csr():
    """forward_batch(keep=True) leaves the pairs in the tree (indices None) and
    _pm_weight_grad_kept gives the same rows and bits as pm_weight_grad over the CSR; a pass
    without pairs keeps them, a query, another pass with pairs or an update ends them."""
    rng = np.random.default_rng(21)
    m, n, d = 5000, 70, 3
    W = rng.standard_normal((m, d))
    a = rng.standard_normal(m)              # not +-1: the gradient's a_r in tree order
    X = rng.standard_normal((n, d))
    coef = rng.standard_normal(n)
    tree = PartitionTree(W, leaf_size=16, fallback="tree")
    f, f2 = np.empty(n), np.empty(n)
    ip, ind = tree.forward_batch(X, 1.1, a, 1.0, f, pairs=True)
    ipk, indk = tree.forward_batch(X, 1.1, a, 1.0, f2, pairs=True, keep=True)
    assert indk is None
    np.testing.assert_array_equal(ipk, ip)
    np.testing.assert_array_equal(f2, f)
    rows, G, _, nf = _core.pm_weight_grad(X, W, a, 1.1, coef, ip, ind, False, all_fired=True)
    tree.forward_batch(X + 0.1, 1.1, a, 1.0, np.empty(n))          # no pairs: kept stays
    for scratch in (None, (np.zeros((m, 4)), np.zeros(m, np.uint8))):
        rows2, G2, _, nf2 = _core._pm_weight_grad_kept(tree._tree, X, a, coef, scratch)
        np.testing.assert_array_equal(rows2, rows)
        np.testing.assert_array_equal(G2, G)
        assert nf2 == nf == len(ind)
    with pytest.raises(ValueError, match="kept"):
        _core._pm_weight_grad_kept(tree._tree, X[:10], a, coef[:10])
    # another a than the pass's (its tree-order copy does not serve): the same as the CSR's
    a2 = a * 3.0
    tree.forward_batch(X, 1.1, a, 1.0, f2, pairs=True, keep=True)
    rows3, G3, _, _ = _core._pm_weight_grad_kept(tree._tree, X, a2, coef)
    rows4, G4, _, _ = _core.pm_weight_grad(X, W, a2, 1.1, coef, ip, ind, False, all_fired=True)
    np.testing.assert_array_equal(rows3, rows4)
    np.testing.assert_array_equal(G3, G4)
    for end in (lambda: tree.query_batch(X, 1.1),
                lambda: tree.forward_batch(X, 1.1, a, 1.0, np.empty(n), pairs=True),
                lambda: tree.update(np.array([3]), W[[3]] + 0.01)):
        tree.forward_batch(X, 1.1, a, 1.0, f2, pairs=True, keep=True)
        _core._pm_weight_grad_kept(tree._tree, X, a, coef)
        end()
        with pytest.raises(ValueError, match="kept"):
            _core._pm_weight_grad_kept(tree._tree, X, a, coef)


def test_kept_pairs_with_an_anchor_and_the_pilot():
    """fallback="auto": the pilot's pass decides the path for the anchor's later passes, so
    a later pass with pairs is kept whole (one call); without an anchor the pilot splits
    the batch and the pairs come back as a CSR."""
    rng, W, a, X0 = _pilot_problem(22)
    n = len(X0)
    coef = rng.standard_normal(n)
    tree = PartitionTree(W, leaf_size=32)
    anchor = tree.anchor(X0, 0.1)
    f = np.empty(n)
    assert tree.forward_batch(X0, 1.7, a, 1.0, f, anchor=anchor) == (None, None)
    assert anchor.path == "tree"
    X = _ball_points(rng, X0, 0.05)
    ip, ind = tree.forward_batch(X, 1.7, a, 1.0, f, pairs=True)         # pilot split: CSR
    assert ind is not None
    ipk, indk = tree.forward_batch(X, 1.7, a, 1.0, f, pairs=True, anchor=anchor, keep=True)
    assert indk is None
    np.testing.assert_array_equal(ipk, ip)
    rows, G, _, _ = _core.pm_weight_grad(X, W, a, 1.7, coef, ip, ind, False, all_fired=True)
    rows2, G2, _, _ = _core._pm_weight_grad_kept(tree._tree, X, a, coef)
    np.testing.assert_array_equal(rows2, rows)
    np.testing.assert_array_equal(G2, G)


def _seq_dist(V, c):
    """||v - c|| per row of V as the tree computes it: the sum of squares in order of the
    coordinates, each product and sum rounded, then one sqrt."""
    q = np.zeros(V.shape[0])
    for k in range(V.shape[1]):
        t = V[:, k] - c[k]
        q = q + t * t
    return np.sqrt(q)


def _rec_at(node, f, d):
    """Where field f of ``node`` lives in the tree's rec (sa_tree_rec_at)."""
    if node == 0:
        return f
    return (d + 2) + ((node - 1) >> 1) * 2 * (d + 2) + 2 * f + ((node - 1) & 1)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_update_widens_each_node_radius_exactly(d):
    """sa_tree_update (the nodes level by level, each with the new rows in its range):
    against brute force, every node's radius is max(old radius, the largest distance of its
    new rows) bit for bit (no widening missed, none extra), every row lies within the radius
    of each node holding it, the pass's node records follow, loose_sum grows by the nodes'
    size * widening, and the passes stay exact (the blocks' balls recomputed)."""
    rng = np.random.default_rng(40 + d)
    m = 3000
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    X = rng.standard_normal((25, d))
    tree = PartitionTree(W, leaf_size=8, fallback="tree", rebuild_factor=1e300,
                         rebuild_fraction=1e300)
    t = tree._tree
    for size in (1, 7, 150, 600):
        rows = rng.choice(m, size=size, replace=False)
        vals = rng.standard_normal((size, d)) * rng.choice([0.5, 3.0])
        R0, loose0 = t.radius_arr.copy(), t.loose_sum
        tree.update(rows, vals)
        W[rows] = vals
        C, ns, ne, R = t.centers_arr, t.nstart_arr, t.nend_arr, t.radius_arr
        P = t.pos_arr[rows]
        want = R0.copy()
        for node in range(t.n_nodes):
            new = (P >= ns[node]) & (P < ne[node])
            if new.any():
                want[node] = max(R0[node], _seq_dist(vals[new], C[node]).max())
            assert _seq_dist(W[t.idx_arr[ns[node]:ne[node]]], C[node]).max() <= R[node]
            assert t.rec_arr[_rec_at(node, d, d)] == R[node]
            assert t.rec_arr[_rec_at(node, d + 1, d)] == t.cnorm_arr[node] + R[node]
        np.testing.assert_array_equal(R, want)
        np.testing.assert_allclose(t.loose_sum - loose0, np.sum((ne - ns) * (want - R0)),
                                   rtol=1e-12, atol=0)
        check_fused(tree, W, a, 1.0, X, 0.8)
    assert tree.n_rebuilds == 0


def test_anchored_kept_and_updated_same_bits_on_every_simd_level_and_thread_count():
    """The anchored walk's passes and the update's widening (sa_tree_update: AVX2 or
    baseline distances) give the same bytes on every SIMD level the CPU has and any thread
    count; at each level the kept pairs' gradient (stride 4 at d = 3) has the bits of the
    re-evaluating nm_weight_grad over the CSR pairs (the gradient kernels contract into FMA
    where the level has it, so its bits are compared within a level, not across)."""
    code = (
        "import hashlib, numpy as np\n"
        "from sparseadv import _core\n"
        "from sparseadv.hsr import PartitionTree\n"
        "out = []\n"
        "for d in (3, 5):\n"
        "    r = np.random.default_rng(d); m, n = 3001, 57\n"
        "    W = r.standard_normal((m, d)); a = r.standard_normal(m)\n"
        "    X0 = r.standard_normal((n, d)); coef = r.standard_normal(n)\n"
        "    t = PartitionTree(W, leaf_size=16, fallback='tree')\n"
        "    anc = t.anchor(X0, 0.2)\n"
        "    for step in range(3):\n"
        "        U = r.standard_normal((n, d))\n"
        "        X = X0 + 0.15 * U / np.linalg.norm(U, axis=1, keepdims=True)\n"
        "        f, H, c = np.empty(n), np.empty((n, d)), np.empty(n, np.int64)\n"
        "        ip, _ = t.forward_batch(X, 0.9, a, 0.7, f, H, c, pairs=True, anchor=anc,\n"
        "                                keep=True)\n"
        "        rows, G, _, _ = _core._pm_weight_grad_kept(t._tree, X, a, coef)\n"
        "        ip2, ind2 = t.forward_batch(X, 0.9, a, 0.7, np.empty(n), pairs=True)\n"
        "        rows2, G2, _, _ = _core.pm_weight_grad(X, W, a, 0.9, coef, ip2, ind2)\n"
        "        assert np.array_equal(rows, rows2) and np.array_equal(G, G2)\n"
        "        out += [f, H, c, ip, rows]\n"
        "        up = r.choice(m, size=200, replace=False)\n"
        "        W[up] = r.standard_normal((200, d)) * 2.0\n"
        "        t.update(up, W[up])\n"
        "        out += [t._tree.radius_arr, t._tree.rec_arr, np.array([t._tree.loose_sum])]\n"
        "print(hashlib.sha256(b''.join(v.tobytes() for v in out)).hexdigest())\n")
    _same_output_on_every_level(code)
