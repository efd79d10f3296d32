"""sparseadv.robustness: margin PGD, the ensemble's robust accuracy, L_A and the exact ceiling."""
import itertools

import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets
from sparseadv import robustness as R
from sparseadv.errors import InputError, InputTypeError


def confident_net(seed=0, m=256, d=4, n=64, gain=40.0):
    """A net whose outputs are large (|f| >> 1) and labels y = sign f: every point is correct and
    most have y·f > 1, where ascending the squared loss only raises y·f."""
    base = ShiftedReLUNet(m, d, seed=seed)
    net = ShiftedReLUNet.from_arrays(base.W, gain * base.a, base.b)
    X = datasets.sphere(n, d, seed=seed + 1)[0]
    f = net.forward(X)
    keep = np.abs(f) > 0
    return net, X[keep], np.where(f[keep] >= 0, 1.0, -1.0)


@pytest.fixture(scope="module")
def trained():
    X, y = datasets.separated(48, 6, margin=0.1, seed=3)
    net = ShiftedReLUNet(2048, 6, seed=2)
    AdversarialTrainer(net, PGD(0.1, 3), lr=1.0).fit(X, y, 40, progress=False)
    return net, X, y


def test_margin_attack_flips_what_the_squared_loss_cannot():
    net, X, y = confident_net()
    confident = y * net.forward(X) > 1
    assert confident.sum() >= 10
    ev = R.evaluate(net, X, y, eps=1.0, steps=30, restarts=1, seed=0)
    sq, mg = ev.flipped_by["squared_loss"][confident], ev.flipped_by["margin"][confident]
    assert not sq.any()                 # the training attack can never flip these points
    assert mg.mean() > 0.5              # the margin attack flips most of them
    assert ev.accuracy <= ev.member_accuracy("squared_loss") - 0.3


def _reference_trajectory(net, x, y, eps, alpha, steps):
    """Plain-loop l2 margin descent from the clean point; margins of every iterate."""
    delta, out = np.zeros_like(x), []
    for _ in range(steps + 1):
        z = x + delta
        f = net.forward(z)
        out.append(y * f)
        g = y[:, None] * net.input_gradient(z, f - 1.0)     # (f - (f - 1)) grad f = grad f
        gn = np.linalg.norm(g, axis=1)
        mv = gn > 0
        delta[mv] -= alpha * g[mv] / gn[mv, None]
        ln = np.linalg.norm(delta, axis=1)
        delta[ln > eps] *= (eps / ln[ln > eps])[:, None]
    return np.array(out)


def test_best_iterate_is_kept(trained):
    net, X, y = trained
    eps, alpha, steps = 0.4, 0.35, 8          # a coarse step that overshoots
    res = R.margin_pgd(net, X, y, eps, steps=steps, restarts=0, step_sizes=alpha)
    traj = _reference_trajectory(net, X, y, eps, alpha, steps)
    np.testing.assert_allclose(res.margin, traj.min(axis=0), rtol=1e-12, atol=1e-12)
    assert np.any(res.margin < traj[-1] - 1e-6)            # the last iterate is not the best
    np.testing.assert_allclose(y * net.forward(res.points), res.margin, rtol=1e-12, atol=1e-12)
    assert np.all(np.linalg.norm(res.points - X, axis=1) <= eps * (1 + 1e-12))
    assert res.runs == 1


def test_linf_stays_in_the_cube_and_beats_clean(trained):
    net, X, y = trained
    res = R.margin_pgd(net, X, y, 0.05, norm=np.inf, steps=10, restarts=2, seed=1)
    assert np.abs(res.points - X).max() <= 0.05 * (1 + 1e-12)
    assert np.all(res.margin <= y * net.forward(X))
    assert res.runs == 3 * 2


def test_robust_accuracy_bounds_and_monotone(trained):
    net, X, y = trained
    clean = float(np.mean(np.where(net.forward(X) >= 0, 1, -1) == y))
    accs = [R.robust_accuracy(net, X, y, e, steps=20, seed=0) for e in (0.0, 0.2, 0.4, 0.6, 0.9)]
    assert accs[0] == clean
    assert all(a <= clean for a in accs)
    assert all(a2 <= a1 for a1, a2 in zip(accs, accs[1:]))
    assert accs[-1] < accs[0]
    ceil = [R.accuracy_ceiling(X, y, e) for e in (0.0, 0.2, 0.4, 0.6, 0.9)]
    assert all(a <= c + 1e-12 for a, c in zip(accs, ceil))


def test_seeds_reproduce_bits(trained):
    net, X, y = trained
    a = R.evaluate(net, X, y, 0.3, restarts=2, seed=7)
    b = R.evaluate(net, X, y, 0.3, restarts=2, seed=7)
    assert np.array_equal(a.margin, b.margin) and np.array_equal(a.points, b.points)
    assert np.array_equal(a.robust, b.robust)


def _brute_ceiling(X, y, eps, norm):
    n = len(y)
    ordn = 2 if norm == 2 else np.inf
    conflict = np.array([[y[i] != y[j] and np.linalg.norm(X[i] - X[j], ordn) <= 2 * eps
                          for j in range(n)] for i in range(n)])
    for k in range(n, -1, -1):
        for S in itertools.combinations(range(n), k):
            if not conflict[np.ix_(S, S)].any():
                return k / n
    return 0.0


@pytest.mark.parametrize("norm", [2, np.inf])
def test_ceiling_against_brute_force(norm):
    rng = np.random.default_rng(5)
    for trial in range(12):
        n = int(rng.integers(2, 10))
        X = rng.standard_normal((n, 2))
        y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        for eps in (0.1, 0.4, 0.8, 2.0):
            assert R.accuracy_ceiling(X, y, eps, norm) == pytest.approx(
                _brute_ceiling(X, y, eps, norm), abs=1e-15), (trial, eps)


def test_ceiling_is_one_below_half_the_separation():
    X, y = datasets.separated(80, 5, margin=0.1, seed=4)
    sep = R.min_opposite_distance(X, y)
    assert R.accuracy_ceiling(X, y, 0.499 * sep) == 1.0
    assert R.accuracy_ceiling(X, y, 0.5 * sep) < 1.0
    assert R.accuracy_ceiling(X, np.ones(80), 10.0) == 1.0   # one class: nothing conflicts


def test_robust_loss_is_the_papers_L_A(trained):
    net, X, y = trained
    atk = PGD(0.2, 5)
    assert R.robust_loss(net, X, y, atk) == pytest.approx(net.loss(atk.perturb(net, X, y), y))
    assert R.robust_loss(net, X, y, PGD(0.0, 1)) == pytest.approx(net.loss(X, y))
    assert R.robust_loss(net, X, y, atk) >= net.loss(X, y)


def test_curves(trained):
    net, X, y = trained
    rows = R.robustness_curves({"a": net, "b": ShiftedReLUNet(64, 6, seed=0)}, X, y,
                               [0.0, 0.5], steps=5, restarts=0)
    assert len(rows) == 4 and {r["model"] for r in rows} == {"a", "b"}
    for r in rows:
        assert r["robust_acc"] <= min(r["robust_acc_margin"], r["robust_acc_squared_loss"])
        assert 0.0 <= r["ceiling"] <= 1.0
    assert rows[0]["robust_acc"] == rows[0]["clean_acc"]


def test_bad_input(trained):
    net, X, y = trained
    with pytest.raises(InputTypeError):
        R.margin_pgd("net", X, y, 0.1)
    with pytest.raises(InputError):
        R.margin_pgd(net, X, y, -0.1)
    with pytest.raises(InputError):
        R.margin_pgd(net, X, 2 * y, 0.1)
    with pytest.raises(InputError):
        R.margin_pgd(net, X, y, 0.1, restarts=-1)
    with pytest.raises(InputError):
        R.margin_pgd(net, X, y, 0.1, step_sizes=())
    with pytest.raises(InputError):
        R.evaluate(net, X, y, 0.1, train_attack=PGD(0.2, 3))
    with pytest.raises(InputTypeError):
        R.robust_loss(net, X, y, "pgd")
    with pytest.raises(ValueError):
        R.accuracy_ceiling(X, y, 0.1, norm=1)
    X0 = X.copy()
    R.evaluate(net, X, y, 0.2, steps=3)
    assert np.array_equal(X, X0)
