"""Tests for sparseadv.hsr: PartitionTree and BruteForceHSR.

The core check is two-sided (after SciPy's test_kdtree.py): every reported row r satisfies
<w_r, x> > b and every row not reported does not. Truth comes from a NumPy oracle. Two kinds
of data make the truth unambiguous: continuous random data with thresholds placed halfway
between two consecutive attained values (so no row is within rounding of b), and dyadic
data (small multiples of 1/4 and 1/2) whose dot products are exact in float64, with b set to
an attained value so that many rows lie exactly on the threshold.
"""
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseadv.hsr import BruteForceHSR, PartitionTree

FAST = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------- helpers
def oracle(W, x, b):
    return np.flatnonzero(W @ x > b).astype(np.int64)


def oracle_csr(W, X, b):
    Z = X @ W.T > b
    indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(Z.sum(axis=1))
    return indptr, np.nonzero(Z)[1].astype(np.int64)


def two_sided(W, x, b, got):
    """Everything reported fires, everything else does not (exact truth expected)."""
    z = W @ x
    got = np.asarray(got)
    assert got.dtype == np.int64
    assert np.all(np.diff(got) > 0), "indices must be strictly increasing"
    mask = np.zeros(W.shape[0], dtype=bool)
    mask[got] = True
    assert np.all(z[mask] > b), "reported a row with <w, x> <= b"
    assert not np.any(z[~mask] > b), "missed a row with <w, x> > b"


def check_batch(struct, W, X, b):
    indptr, ind = struct.query_batch(X, b)
    assert indptr.dtype == np.int64 and ind.dtype == np.int64
    assert indptr.shape == (X.shape[0] + 1,) and indptr[0] == 0 and indptr[-1] == ind.size
    for i in range(X.shape[0]):
        two_sided(W, X[i], b, ind[indptr[i]:indptr[i + 1]])
    return indptr, ind


def gap_threshold(z, q):
    """A threshold halfway between two consecutive distinct attained values (or beyond all)."""
    u = np.unique(z)
    if q <= 0.0:
        return float(u[0] - 1.0)
    if q >= 1.0 or u.size == 1:
        return float(u[-1] + 1.0)
    k = min(int(q * (u.size - 1)), u.size - 2)
    return float(0.5 * (u[k] + u[k + 1]))


def dyadic(rng, shape, lo=-4, hi=4, scale=0.25):
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64) * scale


# --------------------------------------------------------------------- correctness (random)
@FAST
@given(d=st.integers(1, 64), m=st.integers(1, 3000), leaf_size=st.integers(1, 64),
       q=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]), seed=st.integers(0, 2 ** 31 - 1))
def test_two_sided_random(d, m, leaf_size, q, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, d))
    X = rng.standard_normal((6, d))
    b = gap_threshold(W @ X[0], q)
    tree = PartitionTree(W, leaf_size=leaf_size)
    brute = BruteForceHSR(W)
    two_sided(W, X[0], b, tree.query(X[0], b))
    indptr, ind = check_batch(tree, W, X[:1], b)
    # batch over several points, single queries agree with the batch, tree agrees with brute
    b2 = float(np.median(W @ X[1])) + 1e-7 if m > 1 else 0.123
    ip_t, ind_t = tree.query_batch(X, b2)
    ip_b, ind_b = brute.query_batch(X, b2)
    np.testing.assert_array_equal(ip_t, ip_b)
    np.testing.assert_array_equal(ind_t, ind_b)
    for i in range(X.shape[0]):
        np.testing.assert_array_equal(tree.query(X[i], b2), ind_t[ip_t[i]:ip_t[i + 1]])
        np.testing.assert_array_equal(brute.query(X[i], b2), ind_t[ip_t[i]:ip_t[i + 1]])


@FAST
@given(d=st.integers(1, 12), m=st.integers(1, 2000), leaf_size=st.integers(1, 40),
       seed=st.integers(0, 2 ** 31 - 1), dup=st.booleans())
def test_exact_on_threshold_dyadic(d, m, leaf_size, seed, dup):
    """Dyadic data: dot products are exact, many rows sit exactly on b and must not fire."""
    rng = np.random.default_rng(seed)
    if dup:   # few distinct rows, many duplicates
        base = dyadic(rng, (max(1, m // 50), d))
        W = base[rng.integers(0, base.shape[0], size=m)]
    else:
        W = dyadic(rng, (m, d))
    X = dyadic(rng, (5, d), -2, 2, 0.5)
    z = W @ X[0]
    b = float(z[rng.integers(0, m)])           # an attained value: rows exactly on b
    assert np.any(z == b)
    tree = PartitionTree(W, leaf_size=leaf_size)
    two_sided(W, X[0], b, tree.query(X[0], b))
    ip, ind = oracle_csr(W, X, b)
    for struct in (tree, BruteForceHSR(W), PartitionTree(W, leaf_size=leaf_size, fallback="brute")):
        got = struct.query_batch(X, b)
        np.testing.assert_array_equal(got[0], ip)
        np.testing.assert_array_equal(got[1], ind)


def test_report_everything_and_nothing():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((5000, 3))
    X = rng.standard_normal((20, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tree = PartitionTree(W, leaf_size=16)
    ip, ind = tree.query_batch(X, -100.0)
    assert np.array_equal(np.diff(ip), np.full(20, 5000))
    assert np.array_equal(ind, np.tile(np.arange(5000), 20))
    st_ = tree.stats
    assert st_["inner_products"] == 0 and st_["reported_without_eval"] == 5000 * 20
    tree.reset_stats()
    ip, ind = tree.query_batch(X, 100.0)
    assert ind.size == 0 and np.all(ip == 0)
    assert tree.stats["inner_products"] == 0
    assert tree.stats["nodes_visited"] == 20        # the root is pruned at once


def test_zero_query_and_identical_rows():
    W = np.ones((300, 4))
    tree = PartitionTree(W, leaf_size=3)
    assert tree.query(np.zeros(4), 0.0).size == 0            # 0 > 0 is false
    np.testing.assert_array_equal(tree.query(np.zeros(4), -1e-300), np.arange(300))
    np.testing.assert_array_equal(tree.query(np.full(4, 0.25), 1.0), [])    # exactly on b
    np.testing.assert_array_equal(tree.query(np.full(4, 0.25), 0.5), np.arange(300))


def test_single_row_and_single_column():
    t = PartitionTree(np.array([[2.0]]), leaf_size=1)
    assert len(t) == 1
    np.testing.assert_array_equal(t.query(np.array([1.0]), 1.0), [0])
    np.testing.assert_array_equal(t.query(np.array([0.5]), 1.0), [])
    W = np.arange(-50, 50, dtype=np.float64).reshape(-1, 1)
    t = PartitionTree(W, leaf_size=2)
    np.testing.assert_array_equal(t.query(np.array([-1.0]), 10.0), np.arange(0, 40))


# ------------------------------------------------------------------------------ updates
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 8), m=st.integers(2, 1500), leaf_size=st.integers(1, 32),
       seed=st.integers(0, 2 ** 31 - 1))
def test_random_update_sequences(d, m, leaf_size, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, d))
    tree = PartitionTree(W, leaf_size=leaf_size)
    brute = BruteForceHSR(W)
    ref = W.copy()
    X = rng.standard_normal((4, d))
    for step in range(25):
        k = int(rng.integers(0, min(m, 20) + 1))
        rows = rng.choice(m, size=k, replace=False)
        kind = rng.integers(0, 3)
        if kind == 0:     # small drift
            vals = ref[rows] + 0.05 * rng.standard_normal((k, d))
        elif kind == 1:   # fresh draws
            vals = rng.standard_normal((k, d))
        else:             # far away
            vals = 50.0 * rng.standard_normal((k, d))
        tree.update(rows, vals)
        brute.update(rows, vals)
        ref[rows] = vals
        np.testing.assert_array_equal(tree.W, ref)
        b = gap_threshold(ref @ X[step % 4], rng.choice([0.0, 0.5, 0.95, 1.0]))
        two_sided(ref, X[step % 4], b, tree.query(X[step % 4], b))
        got = tree.query_batch(X, b)
        exp = brute.query_batch(X, b)
        np.testing.assert_array_equal(got[0], exp[0])
        np.testing.assert_array_equal(got[1], exp[1])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(tree)).query_batch(X, 0.3)[1],
                                  tree.query_batch(X, 0.3)[1])


def test_far_moves_force_automatic_rebuild():
    rng = np.random.default_rng(7)
    m, d = 4000, 3
    W = rng.standard_normal((m, d))
    tree = PartitionTree(W, leaf_size=16, rebuild_factor=2.0)
    ref = W.copy()
    X = rng.standard_normal((8, d))
    assert tree.n_rebuilds == 0 and tree.looseness == 1.0
    rows = rng.choice(m, size=40, replace=False)
    vals = rng.standard_normal((40, d)) + 1000.0
    tree.update(rows, vals)
    ref[rows] = vals
    assert tree.n_rebuilds == 1 and tree.stats["rebuilds"] == 1
    assert tree.looseness == 1.0
    check_batch(tree, ref, X, 2.0)
    check_batch(tree, ref, X, 1000.0)
    # small moves stay below the policy: no rebuild
    tree.update(rows[:5], ref[rows[:5]] + 1e-3)
    ref[rows[:5]] += 1e-3
    assert tree.n_rebuilds == 1
    assert tree.looseness >= 1.0
    check_batch(tree, ref, X, 1.5)
    # rebuild_fraction: many small updates since the build trigger a rebuild
    t2 = PartitionTree(W, leaf_size=16, rebuild_factor=1e9, rebuild_fraction=0.1)
    t2.update(np.arange(300), W[:300] + 1e-6)
    assert t2.n_rebuilds == 0
    t2.update(np.arange(300, 500), W[300:500] + 1e-6)
    assert t2.n_rebuilds == 1
    tree.rebuild()
    assert tree.n_rebuilds == 2
    check_batch(tree, ref, X, 1.5)


def test_update_without_rebuild_widens_radii_exactly():
    """With rebuilds disabled, far moves only widen radii, and answers stay exact."""
    rng = np.random.default_rng(3)
    m, d = 3000, 2
    W = rng.standard_normal((m, d))
    tree = PartitionTree(W, leaf_size=8, rebuild_factor=1e300, rebuild_fraction=1e300)
    ref = W.copy()
    X = rng.standard_normal((16, d))
    for _ in range(30):
        rows = rng.choice(m, size=50, replace=False)
        vals = rng.standard_normal((50, d)) * rng.choice([0.1, 1.0, 30.0])
        tree.update(rows, vals)
        ref[rows] = vals
    assert tree.n_rebuilds == 0 and tree.looseness > 1.0
    for b in (-5.0, 0.0, 1.0, 3.0, 40.0):
        check_batch(tree, ref, X, b)


# --------------------------------------------------------------------- pickling and misc
@pytest.mark.parametrize("cls", [PartitionTree, BruteForceHSR])
def test_pickle_roundtrip(cls):
    rng = np.random.default_rng(11)
    W = rng.standard_normal((2500, 5))
    s = cls(W)
    s.update(np.array([3, 17, 400]), rng.standard_normal((3, 5)) * 4)
    X = rng.standard_normal((30, 5))
    s.query_batch(X, 1.0)
    r = pickle.loads(pickle.dumps(s))
    assert len(r) == len(s) and r.nbytes == s.nbytes and r.stats == s.stats
    np.testing.assert_array_equal(r.W, s.W)
    for b in (-1.0, 0.5, 2.0):
        a1, a2 = s.query_batch(X, b), r.query_batch(X, b)
        np.testing.assert_array_equal(a1[0], a2[0])
        np.testing.assert_array_equal(a1[1], a2[1])
        np.testing.assert_array_equal(s.query(X[0], b), r.query(X[0], b))
    assert r.stats == s.stats
    if cls is PartitionTree:
        assert r.n_rebuilds == s.n_rebuilds and r.leaf_size == s.leaf_size


def test_core_tree_pickles_and_rejects_corrupt_state():
    from sparseadv import _core
    rng = np.random.default_rng(8)
    W = rng.standard_normal((300, 3))
    core = _core._BallTree(W, 8)
    x = rng.standard_normal(3)
    again = pickle.loads(pickle.dumps(core))
    np.testing.assert_array_equal(again.query(x, 0.3)[0], core.query(x, 0.3)[0])
    tree = PartitionTree(W, leaf_size=8)
    state = tree.__getstate__()
    state["idx"] = state["idx"].copy()
    state["idx"][0] = state["idx"][1]
    with pytest.raises(ValueError, match="inconsistent"):
        PartitionTree.__new__(PartitionTree).__setstate__(state)


def test_properties():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1000, 6)).astype(np.float32)
    W_before = W.copy()
    tree = PartitionTree(W, leaf_size=10)
    brute = BruteForceHSR(W)
    for s in (tree, brute):
        assert len(s) == 1000
        assert s.W.dtype == np.float64 and s.W.shape == (1000, 6)
        np.testing.assert_array_equal(s.W, W.astype(np.float64))    # original row order
        assert not s.W.flags.writeable
        with pytest.raises(ValueError):
            s.W[0, 0] = 1.0
        assert s.nbytes >= 1000 * 6 * 8
    assert tree.nbytes > brute.nbytes
    np.testing.assert_array_equal(W, W_before)
    # non-contiguous input is accepted and converted
    Wf = np.asfortranarray(rng.standard_normal((500, 4)))
    t = PartitionTree(Wf[::2])
    x = rng.standard_normal(4)
    np.testing.assert_array_equal(t.query(x[::1], 0.5), oracle(Wf[::2], x, 0.5))
    Xs = rng.standard_normal((10, 8))[:, ::2]
    check_batch(t, np.ascontiguousarray(Wf[::2]), Xs, 0.5)


# ------------------------------------------------------------------------------- stats
def test_stats_deterministic_and_pruning_at_d2():
    rng = np.random.default_rng(5)
    m, n, d = 20000, 64, 2
    W = rng.standard_normal((m, d))
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    b = np.sqrt(0.4 * np.log(m))
    tree = PartitionTree(W, leaf_size=16)
    tree.query_batch(X, b)
    s1 = tree.stats
    tree.reset_stats()
    assert all(v == 0 for v in tree.stats.values())
    tree.query_batch(X, b)
    assert tree.stats == s1
    assert s1["queries"] == n
    assert 0 < s1["inner_products"] < 0.2 * m * n
    assert s1["nodes_visited"] > 0
    # single queries count the same work as the batch (tree path)
    tree.reset_stats()
    for i in range(n):
        tree.query(X[i], b)
    assert tree.stats == s1
    brute = BruteForceHSR(W)
    brute.query_batch(X, b)
    brute.query(X[0], b)
    assert brute.stats["inner_products"] == m * (n + 1)
    assert brute.stats["queries"] == n + 1


def test_fallback_policy_high_d():
    rng = np.random.default_rng(9)
    m, d, n = 4096, 64, 64
    W = rng.standard_normal((m, d))
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    b = np.sqrt(0.4 * np.log(m))
    ref = oracle_csr(W, X, b)
    auto = PartitionTree(W)
    got = auto.query_batch(X, b)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert auto.stats["brute_force_queries"] == n - auto._pilot_size(n) > 0
    for mode in ("tree", "brute"):
        t = PartitionTree(W, fallback=mode)
        got = t.query_batch(X, b)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
        assert t.stats["brute_force_queries"] == (n if mode == "brute" else 0)
    # low d: the pilot keeps the tree
    W2 = rng.standard_normal((m, 2))
    X2 = rng.standard_normal((n, 2))
    t2 = PartitionTree(W2)
    t2.query_batch(X2, 1.0)
    assert t2.stats["brute_force_queries"] == 0


# ---------------------------------------------------------------------------- bad input
W0 = np.random.default_rng(0).standard_normal((50, 3))


@pytest.mark.parametrize("W, exc, word", [
    (np.zeros((5, 3), dtype=np.int64), TypeError, "W"),
    (np.zeros((5, 3), dtype=bool), TypeError, "W"),
    (np.zeros((5, 3), dtype=np.complex128), TypeError, "W"),
    (np.zeros((5, 3), dtype=object), TypeError, "W"),
    (np.zeros(5), ValueError, "W"),
    (np.zeros((2, 2, 2)), ValueError, "W"),
    (np.zeros((0, 3)), ValueError, "W"),
    (np.zeros((3, 0)), ValueError, "W"),
    (np.array([[1.0, np.nan]]), ValueError, "W"),
    (np.array([[1.0, np.inf]]), ValueError, "W"),
    ([[1, 2], [3, 4]], TypeError, "W"),
])
@pytest.mark.parametrize("cls", [PartitionTree, BruteForceHSR])
def test_bad_W(cls, W, exc, word):
    with pytest.raises(exc, match=word):
        cls(W)


@pytest.mark.parametrize("leaf_size, exc", [(0, ValueError), (-3, ValueError),
                                            (2.5, TypeError), (True, TypeError)])
def test_bad_leaf_size(leaf_size, exc):
    with pytest.raises(exc, match="leaf_size"):
        PartitionTree(W0, leaf_size=leaf_size)


@pytest.mark.parametrize("kw", [dict(rebuild_factor=1.0), dict(rebuild_fraction=0.0),
                                dict(fallback="gpu"), dict(pilot_queries=0)])
def test_bad_policy_params(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        PartitionTree(W0, **kw)


@pytest.mark.parametrize("cls", [PartitionTree, BruteForceHSR])
def test_bad_queries(cls):
    s = cls(W0)
    x = np.ones(3)
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"X must have 3 columns \(the tree's d\), got 2"):
        s.query_batch(np.ones((4, 2)), 0.0)
    with pytest.raises(ValueError, match="x must have length 3"):
        s.query(np.ones(4), 0.0)
    with pytest.raises(ValueError, match="x must be 1-D"):
        s.query(np.ones((1, 3)), 0.0)
    with pytest.raises(ValueError, match="X must be 2-D"):
        s.query_batch(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="X must have at least 1 row"):
        s.query_batch(np.ones((0, 3)), 0.0)
    for bad in (np.ones((2, 3), dtype=np.int32), np.ones((2, 3), dtype=complex)):
        with pytest.raises(TypeError, match="X"):
            s.query_batch(bad, 0.0)
    with pytest.raises(TypeError, match="x"):
        s.query(np.ones(3, dtype=np.int64), 0.0)
    with pytest.raises(ValueError, match="X"):
        s.query_batch(np.array([[0.0, np.nan, 1.0]]), 0.0)
    with pytest.raises(ValueError, match="x"):
        s.query(np.array([0.0, np.inf, 1.0]), 0.0)
    for b in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="b"):
            s.query(x, b)
        with pytest.raises(ValueError, match="b"):
            s.query_batch(X, b)
    for b in ("1", None, 1j, np.ones(2), True):
        with pytest.raises(TypeError, match="b"):
            s.query(x, b)
    # integer and 0-d thresholds are fine
    np.testing.assert_array_equal(s.query(x, 0), s.query(x, np.float32(0.0)))
    np.testing.assert_array_equal(s.query(x, np.array(0.0)), s.query(x, 0.0))
    assert s.stats["queries"] == 4     # rejected calls count nothing


@pytest.mark.parametrize("cls", [PartitionTree, BruteForceHSR])
@pytest.mark.parametrize("rows, values, exc, word", [
    (np.array([0, 50]), np.zeros((2, 3)), ValueError, "rows"),
    (np.array([-1]), np.zeros((1, 3)), ValueError, "rows"),
    (np.array([4, 4]), np.zeros((2, 3)), ValueError, "duplicates"),
    (np.array([[1, 2]]), np.zeros((2, 3)), ValueError, "rows"),
    (np.array([1.0, 2.0]), np.zeros((2, 3)), TypeError, "rows"),
    (np.array([True, False]), np.zeros((2, 3)), TypeError, "rows"),
    (np.array([1, 2]), np.zeros((3, 3)), ValueError, "values"),
    (np.array([1, 2]), np.zeros((2, 4)), ValueError, "values"),
    (np.array([1]), np.zeros(3), ValueError, "values"),
    (np.array([1, 2]), np.array([[0, 0, np.nan], [0, 0, 0]]), ValueError, "values"),
    (np.array([1, 2]), np.array([[0, 0, np.inf], [0, 0, 0]]), ValueError, "values"),
    (np.array([1, 2]), np.zeros((2, 3), dtype=np.int64), TypeError, "values"),
    (np.array([1, 2]), np.zeros((2, 3), dtype=complex), TypeError, "values"),
])
def test_rejected_update_changes_nothing(cls, rows, values, exc, word):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((50, 3))
    s = cls(W, **({"leaf_size": 4} if cls is PartitionTree else {}))
    s.update(np.array([7]), np.full((1, 3), 9.0))     # some history first
    X = rng.standard_normal((10, 3))
    before = s.query_batch(X, 0.4)
    W_before, state_before = s.W.copy(), pickle.dumps(s)
    rows_c, values_c = rows.copy(), values.copy()
    with pytest.raises(exc, match=word):
        s.update(rows, values)
    np.testing.assert_array_equal(rows, rows_c)
    np.testing.assert_array_equal(values, values_c)
    np.testing.assert_array_equal(s.W, W_before)
    after = s.query_batch(X, 0.4)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    s.reset_stats()
    restored = pickle.loads(state_before)
    restored.reset_stats()
    assert pickle.dumps(s) == pickle.dumps(restored)


def test_caller_arrays_never_modified():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((200, 3))
    X = rng.standard_normal((5, 3))
    rows = np.array([5, 1, 9])
    vals = rng.standard_normal((3, 3))
    copies = [a.copy() for a in (W, X, rows, vals)]
    for s in (PartitionTree(W, leaf_size=4), BruteForceHSR(W)):
        s.query_batch(X, 0.1)
        s.query(X[0], 0.1)
        s.update(rows, vals)
        s.rebuild()
        vals[0, 0] = 123.0          # later changes to the caller's arrays do not leak in
        assert s.W[5, 0] != 123.0
        vals[0, 0] = copies[3][0, 0]
    for a, c in zip((W, X, rows, vals), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("hits", [1, 30, 49, 200, 1500, 20000, 70001])
def test_large_m_all_result_sizes(hits):
    """Large m so that every way of sorting a query's result (insertion, radix, bitmap) runs."""
    rng = np.random.default_rng(hits)
    m, d = 70001, 2
    W = rng.standard_normal((m, d))
    X = rng.standard_normal((3, d))
    z = np.sort(W @ X[0])
    b = float(0.5 * (z[m - hits - 1] + z[m - hits])) if hits < m else float(z[0] - 1.0)
    tree = PartitionTree(W, leaf_size=int(rng.integers(1, 64)))
    got = tree.query(X[0], b)
    assert got.size == hits
    two_sided(W, X[0], b, got)
    check_batch(tree, W, X, b)


@pytest.mark.parametrize("d", [2, 3, 8])
def test_unsorted_batch_is_the_same_sets_in_a_deterministic_order(d):
    rng = np.random.default_rng(d)
    W = rng.standard_normal((3000, d))
    X = rng.standard_normal((64, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tree = PartitionTree(W, leaf_size=8, fallback="tree")
    ip, ind = tree.query_batch(X, 0.7)
    ipu, indu = tree.query_batch(X, 0.7, sort=False)
    np.testing.assert_array_equal(ip, ipu)
    for i in range(len(X)):
        np.testing.assert_array_equal(np.sort(indu[ipu[i]:ipu[i + 1]]), ind[ip[i]:ip[i + 1]])
    ipu2, indu2 = tree.query_batch(X, 0.7, sort=False)
    np.testing.assert_array_equal(indu, indu2)
    with pytest.raises(TypeError, match="sort"):
        tree.query_batch(X, 0.7, sort="no")


def test_update_from_full_matrix_equals_update():
    """The engine's gather-free update gives the same tree answers as update(rows, W[rows])."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((2000, 3))
    X = rng.standard_normal((50, 3))
    t1, t2 = PartitionTree(W, leaf_size=16), PartitionTree(W, leaf_size=16)
    W2 = W.copy()
    for step in range(5):
        rows = np.unique(rng.integers(0, 2000, 700))
        W2[rows] += 0.3 * rng.standard_normal((len(rows), 3))
        t1.update(rows, W2[rows])
        t2.update_from(rows, W2)
        np.testing.assert_array_equal(t1.W, t2.W)
        for (ip1, i1), (ip2, i2) in [(t1.query_batch(X, 0.5), t2.query_batch(X, 0.5))]:
            np.testing.assert_array_equal(ip1, ip2)
            np.testing.assert_array_equal(i1, i2)
    assert t1.n_rebuilds == t2.n_rebuilds
    with pytest.raises(ValueError, match="strictly increasing"):
        t2.update_from(np.array([3, 3]), W2)
    with pytest.raises(ValueError, match="strictly increasing"):
        t2.update_from(np.array([1, 2000]), W2)
    with pytest.raises(ValueError, match="W must be"):
        t2.update_from(np.array([1, 2]), W2[:10])


@pytest.mark.parametrize("fallback", ["tree", "auto"])
def test_batch_into_caller_buffer(fallback):
    """``out``: the answer is written into the caller's buffer when it has room (a view of its
    head, same answer as without), otherwise returned in a new array; repeated batches (the
    tree keeps its per-thread buffers) and threads querying one tree at once give the same
    answers; a bad ``out`` is rejected."""
    import threading
    rng = np.random.default_rng(11)
    W = rng.standard_normal((4000, 3))
    X = rng.standard_normal((300, 3))          # n > the pilot size: "auto" takes the pilot path
    tree = PartitionTree(W, leaf_size=16, fallback=fallback)
    ip, ind = tree.query_batch(X, 0.6, sort=False)
    assert len(ind) > 0
    big = np.full(len(ind) + 50, -1, dtype=np.int64)
    ip2, ind2 = tree.query_batch(X, 0.6, sort=False, out=big)
    np.testing.assert_array_equal(ip2, ip)
    np.testing.assert_array_equal(ind2, ind)
    assert np.shares_memory(ind2, big) and np.all(big[len(ind):] == -1)
    small = np.zeros(len(ind) // 2, dtype=np.int64)
    ip3, ind3 = tree.query_batch(X, 0.6, sort=False, out=small)
    np.testing.assert_array_equal(ind3, ind)
    assert not np.shares_memory(ind3, small)
    results = [None] * 4

    def worker(j):
        results[j] = [tree.query_batch(X, 0.6, sort=False) for _ in range(3)]
    threads = [threading.Thread(target=worker, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in results:
        for ipj, indj in res:
            np.testing.assert_array_equal(ipj, ip)
            np.testing.assert_array_equal(indj, ind)
    for bad in (np.zeros(10, dtype=np.int32), np.zeros((5, 2), dtype=np.int64), [0, 1],
                np.zeros(20, dtype=np.int64)[::2]):
        with pytest.raises(TypeError, match="out"):
            tree.query_batch(X, 0.6, out=bad)

