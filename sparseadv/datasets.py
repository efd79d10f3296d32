"""Data sets for the experiments, all satisfying the data contract of docs/design.md §2.

Every generator returns ``X`` as a float64, C-contiguous ``(n, d)`` array whose rows have unit
l2 norm (the network's threshold ``b = sqrt(0.4 ln m)`` is calibrated for unit-norm inputs) and
``y`` as float64 labels in {-1, +1}. Randomness comes from one ``numpy.random.Generator`` built
from ``seed`` (None, an int, or a Generator), so the same integer seed gives the same bits.

- :func:`sphere`: uniform points on S^{d-1}, labels independent coin flips (pure memorisation).
- :func:`teacher`: uniform points labelled by a random two-layer ReLU teacher (learnable).
- :func:`separated`: the margin / well-separated data that the convergence theory assumes.
- :func:`load_digits`: scikit-learn's bundled 8x8 digits as a binary task (optional extra).
- :func:`make`: dispatch by name, for the CLI and the benchmark suite.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validation import check_allocation, check_positive_int, check_real, check_seed
from .errors import InputError, InputTypeError

__all__ = ["Split", "sphere", "teacher", "separated", "load_digits", "make", "DATASETS"]


# --------------------------------------------------------------------------- helpers

def _rng(seed):
    """Turn ``seed`` (None, int or Generator) into a Generator; a Generator is used as is.
    A bool (``default_rng(True)`` would silently mean seed 1) or a negative seed is refused."""
    seed = check_seed(seed)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_size(n, d):
    """Validated n, d, refusing sizes whose (n, d) float64 arrays cannot fit in memory."""
    n = check_positive_int("n", n)
    d = check_positive_int("d", d)
    check_allocation("n, d", 8 * n * d, "the (n, d) data arrays")
    return n, d


def _unit_rows(Z):
    """Scale each row to unit l2 norm; returns a fresh float64 C-contiguous array."""
    Z = np.asarray(Z, dtype=np.float64)
    return np.ascontiguousarray(Z / np.linalg.norm(Z, axis=1, keepdims=True))


def _signs(values):
    """Map reals to {-1.0, +1.0}; exact zeros go to +1 so every label is valid."""
    return np.where(np.asarray(values) >= 0, 1.0, -1.0)


def _uniform_sphere(rng, n, d):
    # Normalised standard Gaussians are uniform on the sphere (rotation invariance).
    # A zero Gaussian row has probability 0 for every d >= 1.
    return _unit_rows(rng.standard_normal((n, d)))


# --------------------------------------------------------------------------- generators

def sphere(n, d, seed=None):
    """Uniform points on the unit sphere with random labels.

    Parameters
    ----------
    n, d : int
        Number of points and dimension (both positive).
    seed : None, int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    X : ndarray of shape (n, d)
        Points uniform on S^{d-1}.
    y : ndarray of shape (n,)
        Labels in {-1, +1}, fair coin flips independent of ``X``.
    """
    n, d = _check_size(n, d)
    rng = _rng(seed)
    X = _uniform_sphere(rng, n, d)
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return X, y


def teacher(n, d, width=16, seed=None):
    """Uniform sphere points labelled by a random two-layer ReLU teacher network.

    The teacher is ``g(x) = sum_k v_k relu(<u_k, x>)`` with ``u_k ~ N(0, I_d)`` and ``v_k``
    uniform in {-1, +1}; the label is ``sign(g(x))`` with ``g(x) = 0`` mapped to +1.
    Unlike :func:`sphere`, the labels are a function of the inputs, so test accuracy means
    something.

    Parameters
    ----------
    n, d : int
        Number of points and dimension (both positive).
    width : int, default 16
        Number of teacher hidden units.
    seed : None, int or numpy.random.Generator
        Source of randomness (one stream for the teacher and the points).

    Returns
    -------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    """
    n, d = _check_size(n, d)
    width = check_positive_int("width", width)
    rng = _rng(seed)
    # Teacher first, then points: the teacher for a seed does not depend on n.
    U = rng.standard_normal((width, d))
    v = np.where(rng.random(width) < 0.5, -1.0, 1.0)
    X = _uniform_sphere(rng, n, d)
    g = np.maximum(X @ U.T, 0.0) @ v
    return X, _signs(g)


def _margin_acceptance(d, margin):
    """P(|<u, x>| >= margin) for x uniform on S^{d-1}: <u, x>^2 ~ Beta(1/2, (d-1)/2)."""
    if d == 1 or margin == 0.0:
        return 1.0
    from scipy.special import betainc
    return float(1.0 - betainc(0.5, 0.5 * (d - 1), margin * margin))


# Upper bound on the scalar draws the margin rejection may spend; beyond this the request is
# hopeless in practice (e.g. margin 0.2 in d = 10_000 has acceptance ~ 1e-89).
_MAX_MARGIN_DRAWS = 10**9


def _margin_points(rng, u, n, d, margin):
    """``n`` points uniform on S^{d-1} conditioned on ``|<u, x>| >= margin``.

    Rejection is done on the scalar ``t = <u, x>`` rather than on whole d-vectors: writing a
    Gaussian as ``z = g u + w`` with ``w`` orthogonal to ``u``, ``t = g / sqrt(g^2 + |w|^2)``
    with ``g ~ N(0, 1)`` and ``|w|^2 ~ chi^2(d - 1)``, and ``w / |w|`` is uniform on the unit
    sphere of ``u``'s complement, independent of ``t``. So the law is exactly that of rejecting
    uniform sphere points, but a rejected draw costs O(1) instead of O(d), and the direction is
    only drawn for accepted points.
    """
    p = _margin_acceptance(d, margin)
    if p <= 0.0 or n / p > _MAX_MARGIN_DRAWS:
        raise InputError(
            f"margin={margin} is too large for d={d}: a uniform point has |<u, x>| >= margin "
            f"with probability {p:.3g}, so placing n={n} points would need about "
            f"{n / p if p > 0 else float('inf'):.3g} draws")
    out = np.empty((n, d))
    filled = 0
    drawn = 0
    while filled < n:
        need = n - filled
        # Oversize the batch by the known acceptance rate so one round almost always suffices.
        batch = int(min(max(1.2 * need / p + 16, 64), 1 << 22))
        drawn += batch
        if drawn > 2 * _MAX_MARGIN_DRAWS:  # only reachable with absurd bad luck
            raise InputError(f"could not place n={n} points with margin={margin} in d={d}")
        g = rng.standard_normal(batch)
        c = rng.chisquare(d - 1, batch) if d > 1 else np.zeros(batch)
        t = g / np.sqrt(g * g + c)
        t = t[np.abs(t) >= margin][:need]
        k = t.size
        if k == 0:
            continue
        if d == 1:
            block = np.sign(t)[:, None] * u[None, :]
        else:
            V = rng.standard_normal((k, d))
            V -= np.outer(V @ u, u)  # project onto u's orthogonal complement
            V /= np.linalg.norm(V, axis=1, keepdims=True)
            block = t[:, None] * u[None, :] + np.sqrt(1.0 - t * t)[:, None] * V
        block = _unit_rows(block)
        # Renormalising may move <u, x> by an ulp; keep the guarantee exact as computed.
        block = block[np.abs(block @ u) >= margin]
        out[filled:filled + block.shape[0]] = block
        filled += block.shape[0]
    return out


def _enforce_min_dist(rng, u, n, d, margin, min_dist):
    """Random sequential addition: keep margin-satisfying candidates whose distance to every
    point kept so far is at least ``min_dist``; bounded number of candidates."""
    from scipy.spatial import cKDTree

    if n >= 2 and min_dist > 2.0:
        raise InputError(f"min_dist={min_dist} exceeds the sphere's diameter 2; "
                         f"cannot place n={n} points")
    kept = np.empty((0, d))
    max_candidates = max(200 * n, 20_000)
    drawn = 0
    while kept.shape[0] < n:
        need = n - kept.shape[0]
        if drawn >= max_candidates:
            raise InputError(
                f"could not place n={n} points with pairwise distance >= min_dist={min_dist} "
                f"(d={d}, margin={margin}): placed {kept.shape[0]} after {drawn} candidates; "
                f"lower min_dist or n")
        batch = int(min(max(2 * need, 64), 1 << 16, max_candidates - drawn))
        drawn += batch
        cand = _margin_points(rng, u, batch, d, margin)
        ok = np.ones(batch, dtype=bool)
        if kept.shape[0]:
            # Reject candidates too close to an already kept point.
            dist, _ = cKDTree(kept).query(cand, k=1, distance_upper_bound=min_dist)
            ok &= dist >= min_dist
        # Conflicts inside the batch: keep the lower index of each close pair (greedy in
        # index order, i.e. sequential addition). The loop is over close pairs, not points.
        pairs = cKDTree(cand).query_pairs(min_dist, output_type="ndarray")
        if pairs.size:
            pairs = pairs[np.argsort(pairs[:, 1], kind="stable")]
            for i, j in pairs:
                if ok[i] and np.linalg.norm(cand[i] - cand[j]) < min_dist:
                    ok[j] = False
        kept = np.concatenate([kept, cand[ok][:need]])
    return np.ascontiguousarray(kept)


def separated(n, d, margin=0.1, min_dist=None, seed=None, return_direction=False):
    """Well-separated, linearly separable data: the regime the convergence theory assumes.

    A unit direction ``u`` is drawn at random; points are uniform on S^{d-1} conditioned on
    ``|<u, x>| >= margin`` (rejection sampling, vectorised), and labelled ``y = sign(<u, x>)``.
    With ``min_dist`` the points are also pairwise at least ``min_dist`` apart in l2 (the
    "delta-separation" assumption of over-parameterisation analyses), enforced by rejection
    with a k-d tree.

    Parameters
    ----------
    n, d : int
        Number of points and dimension (both positive).
    margin : float in [0, 1), default 0.1
        Minimum ``|<u, x>|``.
    min_dist : float > 0 or None, default None
        Minimum pairwise distance ``||x_i - x_j||``; None skips the check.
    seed : None, int or numpy.random.Generator
        Source of randomness.
    return_direction : bool, default False
        Also return ``u`` (lets callers and tests check the margin).

    Returns
    -------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    u : ndarray of shape (d,)
        Only when ``return_direction`` is true.

    Raises
    ------
    InputTypeError (a TypeError), InputError (a ValueError)
        On arguments of the wrong type or value, if ``margin`` is unreachable in dimension ``d`` at a practical
        cost, or if ``n`` points with pairwise distance ``min_dist`` cannot be placed within
        a bounded number of candidates.
    """
    n, d = _check_size(n, d)
    margin = check_real("margin", margin)
    if not 0.0 <= margin < 1.0:
        raise InputError(f"margin must be in [0, 1), got {margin!r}")
    if min_dist is not None:
        min_dist = check_real("min_dist", min_dist)
        if min_dist <= 0.0:
            raise InputError(f"min_dist must be positive or None, got {min_dist!r}")
    rng = _rng(seed)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    if min_dist is None:
        X = _margin_points(rng, u, n, d, margin)
    else:
        X = _enforce_min_dist(rng, u, n, d, margin, min_dist)
    y = _signs(X @ u)
    return (X, y, u) if return_direction else (X, y)


# --------------------------------------------------------------------------- real data

class Split(NamedTuple):
    """A train/test split; X rows have unit l2 norm, y is in {-1, +1}."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_size=0.25, seed=0):
    """scikit-learn's bundled handwritten digits as a binary, unit-norm task.

    1797 images of 8x8 pixels (64 features), shipped inside scikit-learn (no download).
    Labels are +1 for digits 0-4 and -1 for digits 5-9. The split is a seeded shuffle split
    stratified by digit (each digit contributes ``round(test_size * count)`` test images).
    Features are centred by the mean of the **training split only** (so no test information
    leaks into the preprocessing), then each row, train and test, is scaled to unit l2 norm.

    Parameters
    ----------
    test_size : float in (0, 1), default 0.25
        Fraction of each digit class put in the test split.
    seed : None, int or numpy.random.Generator, default 0

    Returns
    -------
    Split
        ``(X_train, y_train, X_test, y_test)``.

    Raises
    ------
    ImportError
        If scikit-learn (the optional ``digits`` extra) is not installed.
    """
    test_size = check_real("test_size", test_size)
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be in (0, 1), got {test_size!r}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'sparseadv[digits]'") from err
    rng = _rng(seed)
    images, digit = _sk_load_digits(return_X_y=True)
    images = np.asarray(images, dtype=np.float64)
    test_idx = []
    for c in np.unique(digit):
        idx = rng.permutation(np.flatnonzero(digit == c))
        k = int(round(test_size * idx.size))
        k = min(max(k, 1), idx.size - 1)  # both sides get every digit
        test_idx.append(idx[:k])
    test_idx = np.concatenate(test_idx)
    train_mask = np.ones(digit.size, dtype=bool)
    train_mask[test_idx] = False
    train_idx = rng.permutation(np.flatnonzero(train_mask))
    test_idx = rng.permutation(test_idx)

    mean = images[train_idx].mean(axis=0)
    labels = np.where(digit <= 4, 1.0, -1.0)
    return Split(
        X_train=_unit_rows(images[train_idx] - mean),
        y_train=np.ascontiguousarray(labels[train_idx]),
        X_test=_unit_rows(images[test_idx] - mean),
        y_test=np.ascontiguousarray(labels[test_idx]),
    )


# --------------------------------------------------------------------------- dispatch

DATASETS = {"sphere": sphere, "teacher": teacher, "separated": separated}


def make(name, n, d, seed=None, **kw):
    """Generate a synthetic data set by name.

    Parameters
    ----------
    name : {"sphere", "teacher", "separated"}
    n, d : int
    seed : None, int or numpy.random.Generator
    **kw
        Extra keyword arguments of the generator (``width``, ``margin``, ``min_dist``).

    Returns
    -------
    X, y : ndarray
    """
    valid = ", ".join(sorted(DATASETS))
    if not isinstance(name, str):
        raise InputTypeError(f"name must be a data set name ({valid}), got {name!r}")
    if name not in DATASETS:
        raise InputError(f"unknown data set name {name!r}; valid names: {valid}")
    fn = DATASETS[name]
    return fn(n, d, seed=seed, **kw)
