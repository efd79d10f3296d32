"""The network's dense kernels against plain numpy and against finite differences."""
import numpy as np
import pytest

from sparseadv import ShiftedReLUNet, reference
from sparseadv.theory import default_threshold


def test_init_shapes_and_defaults():
    net = ShiftedReLUNet(300, 7, seed=0)
    assert net.W.shape == (300, 7) and net.W.flags.c_contiguous and net.W.dtype == np.float64
    assert set(np.unique(net.a)) <= {-1.0, 1.0}
    assert net.b == pytest.approx(np.sqrt(0.4 * np.log(300)))
    assert net.b == default_threshold(300)


def test_same_seed_same_bits_and_different_seed_differs():
    a, b = ShiftedReLUNet(64, 5, seed=3), ShiftedReLUNet(64, 5, seed=3)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.a, b.a)
    c = ShiftedReLUNet(64, 5, seed=4)
    assert not np.array_equal(a.W, c.W)


def test_from_arrays_copies(small_problem):
    W, a, b, X, y = small_problem
    W0, a0 = W.copy(), a.copy()
    net = ShiftedReLUNet.from_arrays(W, a, b)
    net.W += 1.0
    assert np.array_equal(W, W0) and np.array_equal(a, a0)


@pytest.mark.parametrize("m,n,d", [(1, 1, 1), (7, 3, 2), (512, 64, 8), (3000, 700, 5)])
def test_dense_kernels_match_numpy(m, n, d):
    rng = np.random.default_rng(m + n + d)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    b = 0.3
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    net = ShiftedReLUNet.from_arrays(W, a, b)
    np.testing.assert_allclose(net.forward(X), reference.forward(W, a, b, X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.input_gradient(X, y), reference.input_gradient(W, a, b, X, y),
                               rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(net.weight_gradient(X, y), reference.weight_gradient(W, a, b, X, y),
                               rtol=1e-11, atol=1e-12)
    Z = X @ W.T
    fired = net.fired(X)
    for i in range(n):
        np.testing.assert_array_equal(fired[i], np.flatnonzero(Z[i] > b))
    np.testing.assert_array_equal(net.fired_counts(X), (Z > b).sum(1))
    r = net.forward(X) - y
    assert net.loss(X, y) == pytest.approx(0.5 * np.mean(r ** 2), rel=1e-13)


def _fd_safe(net, X, h):
    """Points whose scores are all further than h*||.|| from the kink, so finite differences
    are valid (the shifted ReLU is not differentiable at b)."""
    Z = X @ net.W.T
    return np.abs(Z - net.b).min(axis=1) > 10 * h * np.linalg.norm(net.W, axis=1).max()


def test_input_gradient_finite_differences(small_problem):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    h = 1e-6
    G = net.input_gradient(X, y)
    ok = _fd_safe(net, X, h)
    assert ok.sum() >= 10
    for i in np.flatnonzero(ok)[:10]:
        for j in range(X.shape[1]):
            e = np.zeros_like(X[i]); e[j] = h
            lp = 0.5 * (net.forward((X[i] + e)[None])[0] - y[i]) ** 2
            lm = 0.5 * (net.forward((X[i] - e)[None])[0] - y[i]) ** 2
            assert (lp - lm) / (2 * h) == pytest.approx(G[i, j], rel=1e-5, abs=1e-8)


def test_weight_gradient_finite_differences(small_problem):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    h = 1e-6
    G = net.weight_gradient(X, y)
    fires = ((X @ W.T) > b).any(axis=0)
    rows = np.flatnonzero(fires)[:6]
    assert len(rows) == 6
    for r in rows:
        for j in range(W.shape[1]):
            Wp, Wm = W.copy(), W.copy()
            Wp[r, j] += h; Wm[r, j] -= h
            lp = ShiftedReLUNet.from_arrays(Wp, a, b).loss(X, y)
            lm = ShiftedReLUNet.from_arrays(Wm, a, b).loss(X, y)
            assert (lp - lm) / (2 * h) == pytest.approx(G[r, j], rel=1e-4, abs=1e-9)
    # neurons that fire on no point have exactly zero gradient
    assert np.all(G[~fires] == 0.0)


def test_exactly_at_threshold_does_not_fire():
    # dyadic values: <w, x> == b exactly
    W = np.array([[0.5, 0.25], [1.0, 0.0]])
    net = ShiftedReLUNet.from_arrays(W, [1.0, 1.0], 0.5)
    X = np.array([[1.0, 0.0]])
    assert net.fired_counts(X).tolist() == [1]          # only row 1 (score 1.0 > 0.5)
    assert net.fired(X)[0].tolist() == [1]
    G = net.input_gradient(X, np.array([0.0]))
    # f = (1/sqrt 2)(1 - 0.5); grad = f * (1/sqrt 2) * w_1 = 0.25 * [1, 0]
    np.testing.assert_allclose(G, [[0.25, 0.0]], rtol=1e-15)


@pytest.mark.parametrize("engine", ["dense", "tree", "certified"])
def test_weight_gradient_exactly_at_threshold(engine):
    """The weight gradient of a pair whose score equals b exactly is 0 (fires on >, not >=),
    in the network and in every engine."""
    from sparseadv import PGD
    from sparseadv.engines import make_engine
    W = np.array([[0.5, 0.25], [1.0, 0.0]])
    net = ShiftedReLUNet.from_arrays(W, [1.0, 1.0], 0.5)
    X, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([3.0, 1.0])
    # row 0 is at the threshold on point 0 (0.5 == b) and fires on no point; row 1 fires on
    # point 0 only: dL/dw_1 = (1/n)(f_0 - y_0)(1/sqrt 2) x_0
    G = net.weight_gradient(X, y)
    f0 = (1.0 - 0.5) / np.sqrt(2)
    np.testing.assert_allclose(G, [[0.0, 0.0], [(f0 - 3.0) / 2 / np.sqrt(2), 0.0]], rtol=1e-15)
    eng = make_engine(engine, net)
    eng.begin_iteration(X, y, PGD(0.0, 1).threat_model)
    coef = (net.forward(X) - y) * (net.scale / 2)
    for pass_index in (None, 0, 1):
        rows, Gr = eng.weight_gradient(X, coef, pass_index=pass_index)
        full = np.zeros_like(W)
        full[rows] = Gr
        np.testing.assert_allclose(full, G, rtol=1e-15)


@pytest.mark.parametrize("engine", ["dense", "tree", "certified"])
def test_weight_gradient_at_other_points_than_the_forward(engine):
    """weight_gradient at points B after forward at points A must not reuse A's fired pairs:
    only a forward of the same pass (same index, same points by the protocol) may be reused."""
    from sparseadv import PGD
    from sparseadv.engines import make_engine
    rng = np.random.default_rng(3)
    net = ShiftedReLUNet(400, 3, b=0.8, seed=4)
    X = rng.standard_normal((30, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], 30)
    attack = PGD(0.2, 2)
    A = attack.perturb(net, X, y)                   # pass 2 points
    B = X + 0.2 * np.roll(A - X, 1, axis=0)         # other points in the balls
    coef = rng.standard_normal(30)
    dense = make_engine("dense", net)
    for Z, pass_index in ((B, None), (X, 0), (B, 1)):
        eng = make_engine(engine, net)
        eng.begin_iteration(X, y, attack.threat_model)
        eng.forward(A, pass_index=2)
        rows, G = eng.weight_gradient(Z, coef, pass_index=pass_index)
        _, Gd = dense.weight_gradient(Z, coef)
        full = np.zeros_like(Gd)
        full[rows] = G
        np.testing.assert_allclose(full, Gd, rtol=1e-12, atol=1e-14)
    # the same pass reuses the forward's pairs and gives the same gradient
    rows, G = eng.weight_gradient(A, coef, pass_index=2)
    full = np.zeros_like(Gd)
    full[rows] = G
    np.testing.assert_allclose(full, dense.weight_gradient(A, coef)[1], rtol=1e-12, atol=1e-14)


def test_huge_network_is_refused_naming_m_d_and_the_bytes():
    from sparseadv.errors import InputError
    with pytest.raises(InputError, match=r"m and d asks for [\d,]+ bytes") as info:
        ShiftedReLUNet(2 ** 31, 2 ** 31)
    assert "36,893,488," in str(info.value)


def test_apply_step_notifies_every_engine_and_assignment_resets_them():
    from sparseadv.engines import make_engine
    net = ShiftedReLUNet(40, 3, seed=0)
    engines = [make_engine(name, net) for name in ("dense", "tree", "certified")]
    log = []
    for eng in engines:
        eng.weights_changed = lambda rows, e=eng: log.append((e.name, "changed", list(rows)))
        eng.weights_reset = lambda e=eng: log.append((e.name, "reset"))
    net.apply_step(np.array([2, 5]), np.ones((2, 3)), 0.1)
    assert log == [(e.name, "changed", [2, 5]) for e in engines]
    log.clear()
    net.W = net.W * 2
    net.b = 0.3
    net.a = -net.a
    assert log == [(e.name, "reset") for e in engines] * 3
    import pickle
    again = pickle.loads(pickle.dumps(net))       # engines are not pickled with the network
    assert np.array_equal(again.W, net.W) and again.b == net.b
    again.apply_step(np.array([0]), np.ones((1, 3)), 1.0)
    assert len(log) == 9
