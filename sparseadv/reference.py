"""A plain-numpy implementation of one adversarial iteration (docs/design.md §2), written without
any of sparseadv's kernels.

It forms the full (n x m) score matrix at every step, as the obvious numpy code would. Two uses:
the test-suite's independent oracle for every engine, and the "plain numpy" competitor timed
next to the blocked dense engine in the benchmarks. Not meant for large n*m (memory n*m*8 bytes
per temporary).
"""
import numpy as np


def _scores(W, X):
    return X @ W.T


def forward(W, a, b, X):
    return np.maximum(_scores(W, X) - b, 0.0) @ a / np.sqrt(W.shape[0])


def input_gradient(W, a, b, X, y):
    Z = _scores(W, X)
    f = np.maximum(Z - b, 0.0) @ a / np.sqrt(W.shape[0])
    return ((f - y)[:, None] * ((Z > b) * a)) @ W / np.sqrt(W.shape[0])


def weight_gradient(W, a, b, X, y):
    n, m = X.shape[0], W.shape[0]
    Z = _scores(W, X)
    f = np.maximum(Z - b, 0.0) @ a / np.sqrt(m)
    D = (Z > b) * a * ((f - y) / (n * np.sqrt(m)))[:, None]
    return D.T @ X


def pgd(W, a, b, X, y, eps, steps, step_size=None, norm=2):
    alpha = 2.5 * eps / steps if step_size is None else step_size
    delta = np.zeros_like(X)
    for _ in range(steps):
        g = input_gradient(W, a, b, X + delta, y)
        if norm == np.inf:
            delta = np.clip(delta + alpha * np.sign(g), -eps, eps)
        else:
            gn = np.linalg.norm(g, axis=1, keepdims=True)
            delta = delta + np.where(gn > 0, alpha * g / np.where(gn > 0, gn, 1.0), 0.0)
            dn = np.linalg.norm(delta, axis=1, keepdims=True)
            delta = np.where(dn > eps, delta * (eps / np.where(dn > 0, dn, 1.0)), delta)
    return X + delta


def iteration(W, a, b, X, y, eps, steps, lr, step_size=None, norm=2):
    """One iteration; returns (new W, robust loss before the step)."""
    Xt = pgd(W, a, b, X, y, eps, steps, step_size, norm)
    r = forward(W, a, b, Xt) - y
    loss = 0.5 * float(r @ r) / X.shape[0]
    return W - lr * weight_gradient(W, a, b, Xt, y), loss
