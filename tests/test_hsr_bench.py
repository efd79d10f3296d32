"""pytest-benchmark micro-benchmarks for sparseadv.hsr (CI runs them with
--benchmark-disable, which executes each once as a smoke test)."""
import math

import numpy as np
import pytest

from sparseadv.hsr import BruteForceHSR, PartitionTree

M = 2 ** 13


def _data(d, n=256, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((M, d))
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return W, X, math.sqrt(0.4 * math.log(M))


@pytest.mark.parametrize("d", [3, 16])
@pytest.mark.parametrize("cls", [PartitionTree, BruteForceHSR])
def test_bench_query_batch(benchmark, cls, d):
    W, X, b = _data(d)
    s = cls(W)
    indptr, ind = benchmark(s.query_batch, X, b)
    assert indptr.shape == (X.shape[0] + 1,) and indptr[-1] == ind.size


@pytest.mark.parametrize("d", [3, 16])
def test_bench_build(benchmark, d):
    W, _, _ = _data(d, n=1)
    t = benchmark(PartitionTree, W)
    assert len(t) == M


def test_bench_update(benchmark):
    # The rebuild policy is switched off (as in benchmarks/bench_hsr.py Update): with the
    # defaults, the repeated 1% update would rebuild the tree every ~100 calls while timed.
    W, _, _ = _data(3, n=1)
    t = PartitionTree(W, rebuild_fraction=1e300, rebuild_factor=1e300)
    rng = np.random.default_rng(1)
    rows = rng.choice(M, size=M // 100, replace=False)
    vals = W[rows] + 0.01 * rng.standard_normal((rows.size, 3))
    benchmark(t.update, rows, vals)
    assert t.n_rebuilds == 0
