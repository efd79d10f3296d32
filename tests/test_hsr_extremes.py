"""PartitionTree and BruteForceHSR at extreme scales, on ties, and against planted bugs.

"Fired" is defined by the sequential dot product (see the sparseadv.hsr docstring); the
oracle here computes exactly that arithmetic with NumPy ufuncs, so the checks are exact even
where rows lie on the threshold or the norms are near the ends of the float64 range.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from sparseadv import _core
from sparseadv.errors import InputError
from sparseadv.hsr import BruteForceHSR, PartitionTree


def seq_scores(W, X):
    """<w_r, x_i> in the arithmetic that defines "fired" (sparseadv.hsr docstring): summed over
    k = 0..d-1 in order from 0.0, one rounding per multiply and per add (numpy ufuncs)."""
    Z = np.zeros((X.shape[0], W.shape[0]))
    for k in range(W.shape[1]):
        Z = Z + np.multiply.outer(X[:, k], W[:, k])
    return Z


def seq_csr(W, X, b):
    Z = seq_scores(W, X) > b
    indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(Z.sum(axis=1))
    return indptr, np.nonzero(Z)[1].astype(np.int64)


def assert_csr_equal(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_tiny_queries_regression():
    """Below ||x|| ~ 1e-162 the squared norm underflowed to 0 and the tree pruned or reported
    whole nodes wrongly (the issue's example missed 27,573 of 49,924 pairs)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((2000, 3))
    X = rng.standard_normal((50, 3)) * 1e-170
    got = PartitionTree(W, leaf_size=8, fallback="tree").query_batch(X, 0.0)
    want = seq_csr(W, X, 0.0)
    assert want[1].size > 40000
    assert_csr_equal(got, want)
    assert_csr_equal(BruteForceHSR(W).query_batch(X, 0.0), want)


def test_tree_versus_brute_force_over_norms_1e_200_to_1e200():
    """Randomized: queries of norm 1e-200 .. 1e200 and rows of norm 1e-50 .. 1e50, thresholds
    0, at a computed score (a tie) or in a gap; the tree (both paths) and the brute force give
    the defining arithmetic's answer, two-sided: everything reported has <w,x> > b, everything
    else not."""
    rng = np.random.default_rng(123)
    for case in range(60):
        d = int(rng.choice([1, 2, 3, 5]))
        m = int(rng.integers(1, 500))
        W = rng.standard_normal((m, d)) * 10.0 ** rng.uniform(-50, 50)
        X = rng.standard_normal((int(rng.integers(1, 12)), d)) * 10.0 ** rng.uniform(-200, 200)
        Z = seq_scores(W, X)
        b = float(rng.choice([0.0, Z.flat[rng.integers(Z.size)], np.median(Z)]))
        want = seq_csr(W, X, b)
        tree = PartitionTree(W, leaf_size=int(rng.integers(1, 9)), fallback="tree")
        assert_csr_equal(tree.query_batch(X, b), want)
        assert_csr_equal(BruteForceHSR(W).query_batch(X, b), want)
        assert_csr_equal(PartitionTree(W, fallback="brute").query_batch(X, b), want)
        i = int(rng.integers(X.shape[0]))
        np.testing.assert_array_equal(tree.query(X[i], b), want[1][want[0][i]:want[0][i + 1]])


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_out_of_range_inputs_are_refused(scale):
    """Products that could overflow are refused with an InputError naming the argument; tiny
    inputs are fine."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, 3))
    tree, brute = PartitionTree(W, leaf_size=4), BruteForceHSR(W)
    X = rng.standard_normal((5, 3)) * scale
    if scale > 1:
        for s in (tree, brute):
            with pytest.raises(InputError, match="X"):
                s.query_batch(X, 0.0)
            with pytest.raises(InputError, match="x"):
                s.query(X[0], 0.0)
        with pytest.raises(InputError, match="W"):
            PartitionTree(W * scale)
        with pytest.raises(InputError, match="values"):
            tree.update(np.array([1]), np.full((1, 3), scale))
        with pytest.raises(InputError, match="W"):
            tree.update_from(np.array([1]), W * scale)
        np.testing.assert_array_equal(tree.W, W)
    else:
        assert_csr_equal(tree.query_batch(X, 0.0), brute.query_batch(X, 0.0))


@pytest.mark.parametrize("d", [3, 16])
def test_ties_tree_and_brute_force_agree(d):
    """A threshold equal to a computed score: both structures (and every path) report the
    same set, the one of the sequential dot product (the tie row is not reported). At least
    one query must be one where the GEMM alone rounds the tie the other way, so that the
    brute force's re-evaluation band is exercised."""
    rng = np.random.default_rng(d)
    W = rng.standard_normal((600, d))
    X = rng.standard_normal((150, d))
    Z = seq_scores(W, X)
    tree = PartitionTree(W, leaf_size=8, fallback="tree")
    auto = PartitionTree(W, leaf_size=8)            # d = 16: the GEMM fallback answers
    brute = BruteForceHSR(W)
    gemm_differs = 0
    for i in range(X.shape[0]):
        r = int(rng.integers(600))
        b = float(Z[i, r])
        x = X[i:i + 1]
        want = seq_csr(W, x, b)
        assert r not in want[1]
        for s in (tree, auto, brute):
            assert_csr_equal(s.query_batch(x, b), want)
            np.testing.assert_array_equal(s.query(X[i], b), want[1])
        assert_csr_equal(auto.query_batch(np.repeat(x, 40, axis=0), b),
                         seq_csr(W, np.repeat(x, 40, axis=0), b))
        plain = _core.hsr_brute_csr(W, x, b, exact_ties=False)
        gemm_differs += not np.array_equal(plain[1], want[1])
    assert gemm_differs > 0


def test_update_from_refuses_non_finite_rows():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((100, 3))
    tree = PartitionTree(W, leaf_size=4)
    for bad in (np.nan, np.inf):
        W2 = W.copy()
        W2[7, 1] = bad
        with pytest.raises(ValueError, match="finite"):
            tree.update_from(np.array([3, 7]), W2)
        np.testing.assert_array_equal(tree.W, W)
    W2 = W.copy()
    W2[50] = np.nan                                  # a row not updated may be anything
    tree.update_from(np.array([3, 7]), W2)


def test_out_is_honoured_on_the_brute_force_paths():
    """query_batch(out=...) writes into ``out`` when the GEMM path answers (fallback "brute",
    and "auto" at high d after the pilot), as on the tree path."""
    rng = np.random.default_rng(8)
    W = rng.standard_normal((500, 16))
    X = rng.standard_normal((300, 16))
    for fallback in ("brute", "auto"):
        tree = PartitionTree(W, leaf_size=8, fallback=fallback)
        ip, ind = tree.query_batch(X, 0.5)
        if fallback == "auto":
            assert tree.stats["brute_force_queries"] > 0
        out = np.full(ind.size + 10, -7, dtype=np.int64)
        ip2, ind2 = tree.query_batch(X, 0.5, out=out)
        assert_csr_equal((ip2, ind2), (ip, ind))
        assert np.shares_memory(ind2, out) and np.all(out[ind.size:] == -7)
        small = np.zeros(3, dtype=np.int64)
        ip3, ind3 = tree.query_batch(X, 0.5, out=small)
        assert_csr_equal((ip3, ind3), (ip, ind)) and not np.shares_memory(ind3, small)


@pytest.mark.parametrize("leaf_size", [2 ** 63, 2 ** 62 + 1, 10 ** 30])
def test_huge_leaf_size_is_an_input_error(leaf_size):
    with pytest.raises(InputError, match="leaf_size"):
        PartitionTree(np.ones((5, 2)), leaf_size=leaf_size)
    tree = PartitionTree(np.ones((5, 2)), leaf_size=2 ** 62)   # the largest allowed: one leaf
    assert tree.n_nodes == 1


def test_whole_node_report_slack_pinned_example():
    """d = 1, m = 262, leaf_size = 1, b equal to the score of row 219: the bound
    <c,x> - R|x| of a node holding row 219 exceeds b by rounding, so a whole-node report
    without the safety slack would report row 219 (whose score is not > b). Pinned (hypothesis
    found such cases in about 29% of runs)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((262, 1))
    x = np.array([-1.0658380219633747])
    j = 219
    b = float(W[j, 0] * x[0])
    tree = PartitionTree(W, leaf_size=1, fallback="tree")
    t = tree._tree
    lower = t.centers_arr[:, 0] * x[0] - t.radius_arr * abs(x[0])
    holds = [node for node in range(t.n_nodes)
             if j in t.idx_arr[t.nstart_arr[node]:t.nend_arr[node]]]
    assert any(lower[node] > b for node in holds), "example no longer decides: re-pin it"
    want = np.flatnonzero(W[:, 0] * x[0] > b)
    assert j not in want
    np.testing.assert_array_equal(tree.query(x, b), want)
    assert_csr_equal(tree.query_batch(x[None, :], b), seq_csr(W, x[None, :], b))


def test_node_bound_terms_each_decide():
    """Planted-bug check of the tree's node test (``sa_tree_node_decide``): each term of the
    bound decides one constructed case, so removing any of them fails here. Returns -1 prune,
    1 report the whole node, 0 undecided."""
    from sparseadv._core import _safe_norm, _tree_node_decision as decide
    # the radius term R ||x||: centre scores 1.0 > b = 0.9, but rows reach 1.0 - 0.5
    assert decide(1.0, 0.5, 1.0, 1.0, 0.9, 3) == 0
    assert decide(1.0, 0.5, 1.0, 1.0, 1.6, 3) == -1
    assert decide(1.0, 0.0, 1.0, 1.0, 0.9, 3) == 1          # and without radius: report
    # the relative slack: a gap of 1e-13 is within rounding of (||c|| + R) ||x|| = 1
    assert decide(1.0, 0.0, 1.0, 1.0, 1.0 - 1e-13, 3) == 0
    assert decide(1.0, 0.0, 1.0, 1.0, 1.0 + 1e-13, 3) == 0
    assert decide(1.0, 0.0, 1.0, 1.0, 1.0 - 1e-9, 3) == 1
    # the |b| part of the relative slack: cx = 1e6 + 1e-5 vs b = 1e6 with tiny ||c|| ||x||
    assert decide(1e6 + 1e-5, 0.0, 1e-20, 1e-20, 1e6, 3) == 0
    # the absolute (underflow) slack: subnormal scores, relative terms all 0
    assert decide(5e-323, 0.0, 0.0, 0.0, 0.0, 3) == 0
    assert decide(-5e-323, 0.0, 0.0, 0.0, 0.0, 3) == 0
    assert decide(1e-300, 0.0, 0.0, 0.0, 0.0, 3) == 1
    # the scaled norm: no underflow at 1e-170, no overflow at 1e200
    for s in (1e-170, 1e-300, 1e200, 1.0):
        v = np.array([3.0, 4.0]) * s
        assert abs(_safe_norm(v) / (5.0 * s) - 1.0) < 1e-15


def test_batched_tree_merge_independent_of_thread_count():
    """The batched tree query at d = 3 (the tree answers, not the GEMM fallback) gives the
    same bytes with 1, 2 and 3 OpenMP threads, sorted and unsorted (a swap of the per-thread
    buffers in the merge shows only with >= 2 threads)."""
    code = (
        "import numpy as np, sys\n"
        "from sparseadv.hsr import PartitionTree\n"
        "rng = np.random.default_rng(0)\n"
        "W = rng.standard_normal((20000, 3)); X = rng.standard_normal((400, 3))\n"
        "t = PartitionTree(W, leaf_size=16)\n"
        "out = []\n"
        "for sort in (True, False):\n"
        "    ip, ind = t.query_batch(X, 0.8, sort=sort)\n"
        "    out.append(ip.tobytes().hex() + ind.tobytes().hex())\n"
        "assert t.stats['brute_force_queries'] == 0\n"
        "sys.stdout.write(str(hash(tuple(out))) + ' ' + str(len(out[0])))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONHASHSEED="0",
                   PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                   capture_output=True, text=True, timeout=120).stdout)
    assert outs[0] == outs[1] == outs[2]
    # and the one-thread answer is the exact one
    rng = np.random.default_rng(0)
    W, X = rng.standard_normal((20000, 3)), rng.standard_normal((400, 3))
    assert_csr_equal(PartitionTree(W, leaf_size=16).query_batch(X, 0.8), seq_csr(W, X, 0.8))
