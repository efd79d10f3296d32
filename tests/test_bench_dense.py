"""pytest-benchmark micro-benchmarks of the dense kernels and one dense step.

CI runs them once as tests (``--benchmark-disable``); locally, ``pytest tests/test_bench_*.py
--benchmark-autosave`` then ``--benchmark-compare`` checks for regressions (README)."""
import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, _core, reference


@pytest.fixture(scope="module")
def prob():
    rng = np.random.default_rng(0)
    m, n, d = 8192, 256, 32
    X = rng.standard_normal((n, d)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], n)
    return ShiftedReLUNet(m, d, seed=1), X, y


def test_bench_dense_forward(benchmark, prob):
    net, X, y = prob
    f = np.empty(X.shape[0]); H = np.empty_like(X)
    benchmark(_core.dense_forward, X, net.W, net.a, net.b, net.scale, f, H, None)
    np.testing.assert_allclose(f, reference.forward(net.W, net.a, net.b, X), rtol=1e-12, atol=1e-14)


def test_bench_dense_weight_grad(benchmark, prob):
    net, X, y = prob
    coef = y / X.shape[0]
    G = np.empty_like(net.W)
    benchmark(_core.dense_weight_grad, X, net.W, net.a, net.b, coef, G)
    Z = X @ net.W.T
    np.testing.assert_allclose(G, ((Z > net.b) * net.a * coef[:, None]).T @ X, rtol=1e-11, atol=1e-14)


def test_bench_dense_step(benchmark, prob):
    net, X, y = prob
    tr = AdversarialTrainer(net.copy(), PGD(0.05, 3), lr=1.0, engine="dense")
    rec = benchmark(tr.step, X, y)
    assert rec["inner_products"] == 5 * net.m * X.shape[0]
