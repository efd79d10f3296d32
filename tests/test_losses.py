"""The per-example losses: values and derivatives against plain formulas and finite
differences, stability far from 0, the attack's input gradient, label checks."""
import warnings

import numpy as np
import pytest

from sparseadv import PGD, ShiftedReLUNet
from sparseadv.engines import make_engine
from sparseadv.errors import InputError, InputTypeError
from sparseadv.losses import LogisticLoss, SquaredLoss, get_loss

from conftest import unit_rows


def test_values_and_derivatives_match_plain_formulas():
    rng = np.random.default_rng(0)
    f = rng.standard_normal(50) * 3
    y = rng.choice([-1.0, 1.0], 50)
    sq, lg = SquaredLoss(), LogisticLoss()
    np.testing.assert_allclose(sq.values(f, y), 0.5 * (f - y) ** 2)
    np.testing.assert_allclose(lg.values(f, y), np.log(1 + np.exp(-y * f)), rtol=1e-13)
    np.testing.assert_allclose(lg.derivative(f, y), -y / (1 + np.exp(y * f)), rtol=1e-13)
    h = 1e-6
    for loss in (sq, lg):
        numeric = (loss.values(f + h, y) - loss.values(f - h, y)) / (2 * h)
        np.testing.assert_allclose(loss.derivative(f, y), numeric, rtol=1e-6, atol=1e-9)
        assert loss.mean(f, y) == pytest.approx(loss.values(f, y).mean(), rel=1e-14)


def test_logistic_is_stable_far_from_zero():
    f = np.array([-800.0, -40.0, 40.0, 800.0])
    y = np.ones(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = LogisticLoss().values(f, y)
        deriv = LogisticLoss().derivative(f, y)
    assert values[0] == 800.0 and values[1] == pytest.approx(40.0, rel=1e-15)
    assert values[2] == pytest.approx(np.exp(-40.0), rel=1e-12) and 0 <= values[3] < 1e-300
    assert deriv[0] == -1.0 and deriv[2] == pytest.approx(-np.exp(-40.0), rel=1e-12)
    assert np.all(np.isfinite(deriv))


def test_get_loss():
    assert isinstance(get_loss("logistic"), LogisticLoss)
    loss = SquaredLoss()
    assert get_loss(loss) is loss
    with pytest.raises(InputError, match="loss must be one of"):
        get_loss("hinge")
    with pytest.raises(InputTypeError, match="loss"):
        get_loss(3)


@pytest.mark.parametrize("engine", ["dense", "tree", "certified"])
def test_logistic_input_gradient_is_the_numeric_gradient(engine):
    rng = np.random.default_rng(1)
    n, d = 6, 5
    X = unit_rows(rng, n, d)
    y = rng.choice([-1.0, 1.0], n)
    net = ShiftedReLUNet(400, d, b=0.3, seed=2)
    eng = make_engine(engine, net)
    eng.begin_iteration(X, y, PGD(0.05, 1).threat_model)
    G, f = LogisticLoss().input_gradient(eng, X.copy(), y, pass_index=0)
    h = 1e-6
    for i in range(n):
        for j in range(d):
            E = np.zeros_like(X)
            E[i, j] = h
            up = LogisticLoss().values(net.forward(X + E), y)[i]
            down = LogisticLoss().values(net.forward(X - E), y)[i]
            assert G[i, j] == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-8)
    np.testing.assert_allclose(f, net.forward(X), rtol=1e-12)


def test_attack_ascends_its_loss():
    rng = np.random.default_rng(3)
    X = unit_rows(rng, 40, 6)
    y = rng.choice([-1.0, 1.0], 40)
    net = ShiftedReLUNet(1024, 6, seed=4)
    lg = LogisticLoss()
    clean = lg.values(net.forward(X), y)
    Xt = PGD(0.1, 5, loss="logistic").perturb(net, X, y)
    assert np.all(lg.values(net.forward(Xt), y) >= clean - 1e-12)
    assert np.mean(lg.values(net.forward(Xt), y)) > np.mean(clean)
    other = PGD(0.1, 5).perturb(net, X, y, loss="logistic")
    assert np.array_equal(Xt, other)
    with pytest.raises(InputError, match="y must hold labels"):
        PGD(0.1, 5, loss="logistic").perturb(net, X, y * 2)


def test_robustness_uses_the_training_loss():
    from sparseadv import robustness
    rng = np.random.default_rng(5)
    X = unit_rows(rng, 30, 4)
    y = np.where(X[:, 0] >= 0, 1.0, -1.0)
    net = ShiftedReLUNet(512, 4, seed=6)
    attack = PGD(0.1, 4)
    # the squared loss: the paper's L_A, the same bits as before losses existed
    assert robustness.robust_loss(net, X, y, attack) == net.loss(attack.perturb(net, X, y), y)
    lg = LogisticLoss()
    Xl = PGD(0.1, 4, loss="logistic").perturb(net, X, y)
    assert robustness.robust_loss(net, X, y, attack, loss="logistic") == \
        lg.mean(net.forward(Xl), y)
    ev = robustness.evaluate(net, X, y, 0.1, steps=5, restarts=1, loss="logistic", seed=0)
    assert set(ev.flipped_by) == {"margin", "logistic_loss"}
    Xm = PGD(0.1, 10, loss="logistic").perturb(net, X, y)
    np.testing.assert_array_equal(ev.flipped_by["logistic_loss"],
                                  robustness.flipped(y * net.forward(Xm), y))
    assert ev.accuracy <= ev.member_accuracy("logistic_loss")
    rows = robustness.robustness_curves({"net": net}, X, y, [0.1], loss="logistic", steps=5,
                                        restarts=1, seed=0)
    assert "robust_acc_logistic_loss" in rows[0] and rows[0]["robust_acc"] == ev.accuracy
