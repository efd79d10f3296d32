"""PGD / FGSM against the contract of docs/design.md §2 and against the plain-numpy reference."""
import numpy as np
import pytest

from sparseadv import FGSM, PGD, ShiftedReLUNet, reference


@pytest.mark.parametrize("norm", [2, np.inf])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_ball(small_problem, norm, random_start):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    eps = 0.1
    Xt = PGD(eps, steps=5, step_size=0.07, norm=norm, random_start=random_start, seed=0).perturb(net, X, y)
    delta = Xt - X
    if norm == 2:
        assert np.linalg.norm(delta, axis=1).max() <= eps * (1 + 1e-12)
    else:
        assert np.abs(delta).max() <= eps * (1 + 1e-12)  # (X + delta) - X rounds
    assert np.any(delta != 0)


@pytest.mark.parametrize("norm", [2, np.inf])
def test_first_step_does_not_decrease_loss(norm):
    rng = np.random.default_rng(5)
    net = ShiftedReLUNet(2048, 6, seed=2)
    X = rng.standard_normal((200, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], 200)
    eps = 1e-4  # small enough that no firing pattern changes on most points: first order holds
    Xt = PGD(eps, steps=1, norm=norm).perturb(net, X, y)
    per_example = lambda Z: 0.5 * (net.forward(Z) - y) ** 2
    assert np.all(per_example(Xt) >= per_example(X) - 1e-15)
    assert np.mean(per_example(Xt) > per_example(X)) > 0.5


@pytest.mark.parametrize("norm", [2, np.inf])
def test_pgd_matches_plain_numpy(small_problem, norm):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    Xt = PGD(0.2, steps=4, norm=norm).perturb(net, X, y)
    np.testing.assert_allclose(Xt, reference.pgd(W, a, b, X, y, 0.2, 4, norm=norm), rtol=0, atol=1e-12)


def test_default_step_size():
    assert PGD(0.3, steps=3).step_size == pytest.approx(0.25)
    assert FGSM(0.3).step_size == 0.3


def test_fgsm_equals_one_step_linf_pgd(small_problem):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    x1 = FGSM(0.05).perturb(net, X, y)
    x2 = PGD(0.05, steps=1, step_size=0.05, norm=np.inf).perturb(net, X, y)
    assert np.array_equal(x1, x2)
    # and FGSM is X + eps * sign(grad)
    g = net.input_gradient(X, y)
    assert np.array_equal(x1, X + 0.05 * np.sign(g))


def test_zero_gradient_stays_put():
    net = ShiftedReLUNet.from_arrays(np.array([[1.0, 0.0]]), [1.0], 10.0)  # never fires
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([1.0, -1.0])
    for norm in (2, np.inf):
        assert np.array_equal(PGD(0.1, 3, norm=norm).perturb(net, X, y), X)


def test_random_start_seeded(small_problem):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    x1 = PGD(0.1, 2, random_start=True, seed=7).perturb(net, X, y)
    x2 = PGD(0.1, 2, random_start=True, seed=7).perturb(net, X, y)
    x3 = PGD(0.1, 2, random_start=True, seed=8).perturb(net, X, y)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)


def test_inputs_not_modified(small_problem):
    W, a, b, X, y = small_problem
    X0, y0 = X.copy(), y.copy()
    PGD(0.1, 3).perturb(ShiftedReLUNet.from_arrays(W, a, b), X, y)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
