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


def test_perturb_takes_an_engine_name_or_an_engine_of_the_same_network(small_problem):
    from sparseadv.engines import make_engine
    from sparseadv.errors import InputError
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    expect = PGD(0.1, 3).perturb(net, X, y)
    for engine in ("dense", "tree", "certified", make_engine("certified", net)):
        np.testing.assert_allclose(PGD(0.1, 3).perturb(net, X, y, engine=engine), expect,
                                   rtol=0, atol=1e-12)
    other = make_engine("dense", net.copy())
    with pytest.raises(InputError, match="different network"):
        PGD(0.1, 3).perturb(net, X, y, engine=other)
    for bad in ("sparse", 3, None):
        with pytest.raises(InputError, match="engine"):
            PGD(0.1, 3).perturb(net, X, y, engine=bad)


def test_run_asks_for_each_pass_by_index(small_problem):
    """The public loop: pass k at the points after k steps, inside the ball."""
    from sparseadv.engines import make_engine
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    eng = make_engine("dense", net)
    seen = []
    real = eng.input_gradient

    def spy(Xt, yy, pass_index=None):
        seen.append((pass_index, float(np.linalg.norm(Xt - X, axis=1).max())))
        return real(Xt, yy, pass_index)
    eng.input_gradient = spy
    attack = PGD(0.1, 4)
    eng.begin_iteration(X, y, attack.threat_model)
    Xt = attack.run(X, y, eng)
    assert [k for k, _ in seen] == [0, 1, 2, 3]
    assert seen[0][1] == 0.0 and all(dist <= 0.1 * (1 + 1e-12) for _, dist in seen)
    np.testing.assert_array_equal(Xt, PGD(0.1, 4).perturb(net, X, y))


@pytest.mark.parametrize("eps", [1e300, 1e200])
def test_l2_pgd_at_extreme_radii_keeps_the_perturbation(eps):
    """Row norms of huge perturbations must not overflow to inf: the projection would scale
    the perturbation to 0."""
    net = ShiftedReLUNet(64, 3, b=0.0, seed=1)
    X = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    y = np.array([5.0, -5.0])
    Xt = PGD(eps, 1, norm=2).perturb(net, X, y)
    dist = np.array([np.linalg.norm((Xt[i] - X[i]) / eps) for i in range(2)])
    np.testing.assert_allclose(dist, 1.0, rtol=1e-9)        # 2.5 eps step, projected to eps


def test_row_norms_of_tiny_and_huge_rows():
    from sparseadv.attacks import _row_norms
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 5))
    A[:2] *= 1e-170
    A[2:4] *= 1e170
    A[4] = 0.0
    norms, extreme = _row_norms(A)
    assert list(extreme) == [0, 1, 2, 3, 4]
    expect = [np.linalg.norm(A[i] / np.abs(A[i]).max()) * np.abs(A[i]).max() for i in range(4)]
    np.testing.assert_allclose(norms[:4], expect, rtol=1e-14)
    assert norms[4] == 0 and norms[5] == np.linalg.norm(A[5])
    # the gradient direction survives a tiny gradient: the step has length step_size
    net = ShiftedReLUNet(64, 3, b=0.0, seed=1)
    X = np.array([[1.0, 0.0, 0.0]]) * 1e-160
    y = np.array([1e-180])
    G = net.input_gradient(X, y)
    assert 0 < np.abs(G).max() < 1e-150          # squares underflow: a scaled norm is needed
    Xt = PGD(1e-160, 1, step_size=1e-161).perturb(net, X, y)
    assert np.linalg.norm((Xt - X) / 1e-161) == pytest.approx(1.0, rel=1e-9)


def test_eps_whose_step_overflows_is_refused():
    from sparseadv.errors import InputError
    for eps in (7.2e307, 1e308):
        with pytest.raises(InputError, match="eps"):
            PGD(eps, 1)
        with pytest.raises(InputError, match="eps"):
            FGSM(eps)
    with pytest.raises(InputError, match="step_size"):
        PGD(1e308, 3, step_size=1e308)
    PGD(5e307, 3)                      # 2.5 eps / 3 + eps is still finite
