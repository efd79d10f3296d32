import numpy as np
import pytest


def unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture
def small_problem():
    """A small deterministic problem: (W, a, b, X, y) with m=512, n=64, d=8."""
    rng = np.random.default_rng(1234)
    m, n, d = 512, 64, 8
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    b = float(np.sqrt(0.4 * np.log(m)))
    X = unit_rows(rng, n, d)
    y = np.sign(X[:, 0] + 1e-12)
    return W, a, b, X, y
