"""Tests for sparseadv.datasets: the data contract (unit rows, +-1 labels, dtype/layout),
seeded reproducibility, the margin / min_dist guarantees, digits, and argument validation."""
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from sparseadv import datasets
from sparseadv.errors import InputError, InputTypeError
from sparseadv.datasets import load_digits, make, separated, sphere, teacher

GENERATORS = [sphere, teacher, separated]


def check_contract(X, y, n, d):
    assert X.shape == (n, d) and y.shape == (n,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-12)
    assert set(np.unique(y)) <= {-1.0, 1.0}


@pytest.mark.parametrize("gen", GENERATORS)
@pytest.mark.parametrize("n,d", [(1, 1), (7, 1), (50, 2), (200, 13)])
def test_contract(gen, n, d):
    X, y = gen(n, d, seed=3)
    check_contract(X, y, n, d)


@pytest.mark.parametrize("gen", GENERATORS)
def test_same_seed_same_bits(gen):
    X1, y1 = gen(100, 8, seed=123)
    X2, y2 = gen(100, 8, seed=123)
    assert X1.tobytes() == X2.tobytes() and y1.tobytes() == y2.tobytes()
    # A Generator seeded the same way gives the same bits as the integer seed.
    X3, y3 = gen(100, 8, seed=np.random.default_rng(123))
    assert X1.tobytes() == X3.tobytes() and y1.tobytes() == y3.tobytes()
    X4, _ = gen(100, 8, seed=124)
    assert not np.array_equal(X1, X4)


def test_sphere_labels_balanced_and_points_centred():
    X, y = sphere(20_000, 5, seed=0)
    # Mean of 20k fair coins: sd 0.007; mean of a uniform sphere coordinate: sd 0.0032.
    assert abs(y.mean()) < 0.05
    assert np.all(np.abs(X.mean(axis=0)) < 0.02)


def test_teacher_labels_are_a_function_of_x():
    # Same seed stream: the teacher is drawn before the points, so it does not depend on n.
    X, y = teacher(300, 6, width=4, seed=9)
    X2, y2 = teacher(10, 6, width=4, seed=9)
    rng = np.random.default_rng(9)
    U = rng.standard_normal((4, 6))
    v = np.where(rng.random(4) < 0.5, -1.0, 1.0)
    g = np.maximum(X @ U.T, 0.0) @ v
    np.testing.assert_array_equal(y, np.where(g >= 0, 1.0, -1.0))
    g2 = np.maximum(X2 @ U.T, 0.0) @ v
    np.testing.assert_array_equal(y2, np.where(g2 >= 0, 1.0, -1.0))


@pytest.mark.parametrize("d,margin", [(1, 0.5), (2, 0.0), (3, 0.3), (20, 0.1), (100, 0.2)])
def test_separated_margin(d, margin):
    X, y, u = separated(500, d, margin=margin, seed=1, return_direction=True)
    check_contract(X, y, 500, d)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, atol=1e-12)
    t = X @ u
    assert np.all(np.abs(t) >= margin)
    np.testing.assert_array_equal(y, np.where(t >= 0, 1.0, -1.0))


def test_separated_is_conditioned_uniform():
    # The scalar-rejection sampler must give the law of rejected uniform sphere points:
    # compare |<u, x>| with brute-force rejection via a two-sample KS test.
    from scipy.stats import ks_2samp

    d, margin = 5, 0.3
    X, _, u = separated(4000, d, margin=margin, seed=2, return_direction=True)
    Z = np.random.default_rng(5).standard_normal((40_000, d))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    t_ref = np.abs(Z[:, 0])
    t_ref = t_ref[t_ref >= margin]
    assert ks_2samp(np.abs(X @ u), t_ref).pvalue > 1e-3
    # The component orthogonal to u is isotropic: its mean is ~0.
    P = X - np.outer(X @ u, u)
    assert np.all(np.abs(P.mean(axis=0)) < 0.05)


# Feasible but tight: e.g. 30 points 0.1 apart on the circle use half of its length.
@pytest.mark.parametrize("n,d,min_dist", [(30, 2, 0.1), (100, 3, 0.2), (300, 10, 0.8)])
def test_separated_min_dist(n, d, min_dist):
    X, y, u = separated(n, d, margin=0.05, min_dist=min_dist, seed=4, return_direction=True)
    check_contract(X, y, n, d)
    assert np.all(np.abs(X @ u) >= 0.05)
    # Distances recomputed by a different formula may differ by an ulp or two.
    assert pdist(X).min() >= min_dist * (1 - 1e-12)


def test_separated_min_dist_impossible():
    # At most a handful of points on the circle can be 1.9 apart.
    with pytest.raises(ValueError, match="min_dist"):
        separated(50, 2, margin=0.0, min_dist=1.9, seed=0)
    with pytest.raises(ValueError, match="min_dist"):
        separated(2, 3, min_dist=2.5, seed=0)


def test_separated_unreachable_margin():
    with pytest.raises(ValueError, match="margin"):
        separated(10, 10_000, margin=0.5, seed=0)


def test_make_dispatch():
    for name, fn in [("sphere", sphere), ("teacher", teacher), ("separated", separated)]:
        X1, y1 = make(name, 30, 4, seed=5)
        X2, y2 = fn(30, 4, seed=5)
        assert X1.tobytes() == X2.tobytes() and y1.tobytes() == y2.tobytes()
    X, _ = make("separated", 30, 4, seed=5, margin=0.3)
    assert X.shape == (30, 4)
    with pytest.raises(ValueError, match="sphere.*separated|separated.*sphere"):
        make("spheres", 10, 3)


def _exc(bad, real=False):
    """The convention: a wrong type is an InputTypeError, a wrong value an InputError (a float
    is a wrong type for a count, a value for a real argument)."""
    wrong_type = (bool, str, type(None)) if real else (bool, str, type(None), float)
    return InputTypeError if isinstance(bad, wrong_type) else InputError


@pytest.mark.parametrize("gen", GENERATORS)
@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "5", None, 2 ** 63])
def test_bad_n_d(gen, bad):
    exc = InputError if bad == 2 ** 63 else _exc(bad)
    with pytest.raises(exc, match=r"\bn must be a positive integer"):
        gen(bad, 3)
    with pytest.raises(exc, match=r"\bd must be a positive integer"):
        gen(3, bad)


@pytest.mark.parametrize("gen", GENERATORS)
def test_sizes_that_cannot_fit_are_refused_before_allocating(gen):
    # 2**31 x 2**31 float64 is 32 EiB: a MemoryError (or an OOM kill) without the check.
    with pytest.raises(InputError, match=r"n, d asks for 36,893,488,147,419,103,232 bytes"):
        gen(2 ** 31, 2 ** 31, seed=0)


@pytest.mark.parametrize("seed,exc", [(-1, InputError), (True, InputTypeError),
                                      (1.5, InputTypeError), ("0", InputTypeError)])
@pytest.mark.parametrize("gen", GENERATORS)
def test_bad_seed_names_seed(gen, seed, exc):
    with pytest.raises(exc, match=r"^seed must be None, a non-negative integer"):
        gen(5, 3, seed=seed)


def test_bad_n_message():
    with pytest.raises(ValueError, match=r"n must be a positive integer, got 0"):
        sphere(0, 3)


@pytest.mark.parametrize("margin", [-0.1, 1.0, 1.5, float("nan"), "0.1", True])
def test_bad_margin(margin):
    with pytest.raises(_exc(margin, real=True), match="margin"):
        separated(10, 3, margin=margin)


@pytest.mark.parametrize("min_dist", [0.0, -1.0, float("inf"), "x"])
def test_bad_min_dist(min_dist):
    with pytest.raises(_exc(min_dist, real=True), match="min_dist"):
        separated(10, 3, min_dist=min_dist)


def test_bad_width_and_seed():
    with pytest.raises(ValueError, match="width"):
        teacher(10, 3, width=0)
    with pytest.raises(InputTypeError, match="seed"):
        sphere(10, 3, seed=True)
    with pytest.raises(InputTypeError, match="name must be a data set name"):
        make(3, 10, 3)


# --------------------------------------------------------------------------- digits

def test_digits():
    pytest.importorskip("sklearn")
    s = load_digits(seed=0)
    assert s.X_train.shape[1] == s.X_test.shape[1] == 64
    assert s.X_train.shape[0] + s.X_test.shape[0] == 1797
    assert abs(s.X_test.shape[0] - 0.25 * 1797) <= 10  # per-digit rounding
    for X, y in [(s.X_train, s.y_train), (s.X_test, s.y_test)]:
        check_contract(X, y, X.shape[0], 64)
        assert len(np.unique(y)) == 2
    # Disjoint: no test row appears in the train split (the rows are distinct images, and the
    # same centring is applied to both, so equal rows would mean a shared image).
    train_rows = {r.tobytes() for r in s.X_train}
    assert not any(r.tobytes() in train_rows for r in s.X_test)
    from sklearn.datasets import load_digits as sk_load

    _, digit = sk_load(return_X_y=True)
    # Label balance per split mirrors the whole data set (stratified).
    frac_all = np.mean(digit <= 4)
    assert abs(np.mean(s.y_train == 1) - frac_all) < 0.01
    assert abs(np.mean(s.y_test == 1) - frac_all) < 0.01


def test_digits_centring_uses_train_only():
    sk = pytest.importorskip("sklearn.datasets")
    s = load_digits(test_size=0.3, seed=7)
    images, digit = sk.load_digits(return_X_y=True)
    # Rebuild the split independently (same documented recipe: per-digit permutation, first
    # round(test_size * count) to test, then shuffle both sides) and compare rows exactly.
    rng = np.random.default_rng(7)
    test_idx = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digit == c))
        test_idx.append(idx[: int(round(0.3 * idx.size))])
    test_idx = np.concatenate(test_idx)
    train_mask = np.ones(digit.size, bool)
    train_mask[test_idx] = False
    train_idx = rng.permutation(np.flatnonzero(train_mask))
    test_idx = rng.permutation(test_idx)
    assert not set(train_idx) & set(test_idx)
    mu = images[train_idx].mean(axis=0)
    expect = images[test_idx] - mu
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(s.X_test, expect, atol=1e-12)
    expect_train = images[train_idx] - mu
    expect_train /= np.linalg.norm(expect_train, axis=1, keepdims=True)
    np.testing.assert_allclose(s.X_train, expect_train, atol=1e-12)
    np.testing.assert_array_equal(s.y_test, np.where(digit[test_idx] <= 4, 1.0, -1.0))
    np.testing.assert_array_equal(s.y_train, np.where(digit[train_idx] <= 4, 1.0, -1.0))
    # Centring with the full-data mean would give different test rows.
    full = images[test_idx] - images.mean(axis=0)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    assert not np.allclose(s.X_test, full, atol=1e-6)


def test_digits_seeded():
    pytest.importorskip("sklearn")
    a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert a.X_train.tobytes() != c.X_train.tobytes()


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.2, 1.5, "0.25"])
def test_digits_bad_test_size(test_size):
    with pytest.raises(_exc(test_size, real=True), match="test_size"):
        load_digits(test_size=test_size)


def test_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'sparseadv\[digits\]'"):
        datasets.load_digits()
