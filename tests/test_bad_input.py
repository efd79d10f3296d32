"""Every public entry point rejects bad input with a message naming the argument, and leaves
the caller's arrays and the model unchanged."""
import numpy as np
import pytest

from sparseadv import FGSM, PGD, AdversarialTrainer, ShiftedReLUNet


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    net = ShiftedReLUNet(64, 4, seed=0)
    X = rng.standard_normal((10, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], 10)
    return net, X, y


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(m=0, d=3), ValueError, "m"),
    (dict(m=-5, d=3), ValueError, "m"),
    (dict(m=4, d=0), ValueError, "d"),
    (dict(m=4.0, d=3), TypeError, "m"),
    (dict(m=True, d=3), TypeError, "m"),
    (dict(m=4, d=3, b=np.nan), ValueError, "b"),
    (dict(m=4, d=3, b="x"), TypeError, "b"),
    (dict(m=4, d=3, seed=-1), ValueError, "seed"),
    (dict(m=4, d=3, seed=1.5), TypeError, "seed"),
])
def test_network_constructor(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ShiftedReLUNet(**kwargs)


@pytest.mark.parametrize("W,a,b,exc,word", [
    (np.ones((3, 2)), np.ones(2), 0.1, ValueError, "a"),
    (np.ones(3), np.ones(3), 0.1, ValueError, "W"),
    (np.ones((0, 2)), np.ones(0), 0.1, ValueError, "W"),
    (np.ones((3, 2), dtype=complex), np.ones(3), 0.1, TypeError, "W"),
    (np.ones((3, 2), dtype=int), np.ones(3), 0.1, TypeError, "W"),
    (np.full((3, 2), np.inf), np.ones(3), 0.1, ValueError, "W"),
    (np.ones((3, 2)), np.array([1, np.nan, 1]), 0.1, ValueError, "a"),
    (np.ones((3, 2)), np.ones(3), np.inf, ValueError, "b"),
    ([["a", "b"]], np.ones(1), 0.1, TypeError, "W"),
])
def test_from_arrays(W, a, b, exc, word):
    with pytest.raises(exc, match=word):
        ShiftedReLUNet.from_arrays(W, a, b)


def _bad_X(X):
    bad = X.copy(); bad[1, 2] = np.nan
    inf = X.copy(); inf[0, 0] = -np.inf
    return [
        (X[:, :3], ValueError, "X"),              # wrong d
        (X[0], ValueError, "X"),                  # 1-D
        (X[:0], ValueError, "X"),                 # empty
        (bad, ValueError, "X"),
        (inf, ValueError, "X"),
        (X.astype(complex), TypeError, "X"),
        (X.astype(int), TypeError, "X"),
        (X.astype(bool), TypeError, "X"),
        (X.astype(object), TypeError, "X"),
    ]


def test_network_methods_reject_bad_X(setup):
    net, X, y = setup
    W0 = net.W.copy()
    for bad, exc, word in _bad_X(X):
        before = bad.copy() if bad.dtype != object else None
        for call in (lambda: net.forward(bad), lambda: net.loss(bad, y[:len(bad)] if bad.ndim == 2 else y),
                     lambda: net.input_gradient(bad, y), lambda: net.weight_gradient(bad, y),
                     lambda: net.fired(bad)):
            with pytest.raises(exc, match=word):
                call()
        if before is not None:
            np.testing.assert_array_equal(bad, before)
    assert np.array_equal(net.W, W0)


@pytest.mark.parametrize("ybad,exc", [
    (np.ones(9), ValueError), (np.ones((10, 1)), ValueError), (np.ones(10, dtype=complex), TypeError),
    (np.array([np.nan] * 10), ValueError), (np.array(["a"] * 10), TypeError),
])
def test_bad_labels(setup, ybad, exc):
    net, X, y = setup
    with pytest.raises(exc, match="y"):
        net.loss(X, ybad)
    tr = AdversarialTrainer(net, PGD(0.1, 2), lr=0.1)
    W0 = net.W.copy()
    with pytest.raises(exc, match="y"):
        tr.step(X, ybad)
    with pytest.raises(exc, match="y"):
        tr.fit(X, ybad, 2, progress=False)
    assert np.array_equal(net.W, W0)


def test_integer_labels_accepted(setup):
    net, X, y = setup
    assert net.loss(X, y.astype(int)) == net.loss(X, y)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(eps=-0.1, steps=3), ValueError, "eps"),
    (dict(eps=np.nan, steps=3), ValueError, "eps"),
    (dict(eps=0.1, steps=0), ValueError, "steps"),
    (dict(eps=0.1, steps=2.5), TypeError, "steps"),
    (dict(eps=0.1, steps=3, norm=1), ValueError, "norm"),
    (dict(eps=0.1, steps=3, norm="l3"), ValueError, "norm"),
    (dict(eps=0.1, steps=3, step_size=0.0), ValueError, "step_size"),
    (dict(eps=0.1, steps=3, step_size=-1.0), ValueError, "step_size"),
    (dict(eps=0.1, steps=3, random_start="yes"), TypeError, "random_start"),
])
def test_attack_parameters(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        PGD(**kwargs)


def test_fgsm_parameters():
    with pytest.raises(ValueError, match="eps"):
        FGSM(-1.0)


def test_attack_rejects_bad_data(setup):
    net, X, y = setup
    for bad, exc, word in _bad_X(X):
        with pytest.raises(exc, match=word):
            PGD(0.1, 2).perturb(net, bad, y)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(lr=0.0), ValueError, "lr"), (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr="fast"), ValueError, "lr"), (dict(lr=np.inf), ValueError, "lr"),
    (dict(lr=0.1, engine="sparse"), ValueError, "engine"),
    (dict(lr=0.1, engine=3), ValueError, "engine"),
])
def test_trainer_parameters(setup, kwargs, exc, word):
    net, X, y = setup
    with pytest.raises(exc, match=word):
        AdversarialTrainer(net, PGD(0.1, 2), **kwargs)


def test_trainer_type_checks(setup):
    net, X, y = setup
    with pytest.raises(TypeError, match="net"):
        AdversarialTrainer("net", PGD(0.1, 2), lr=0.1)
    with pytest.raises(TypeError, match="attack"):
        AdversarialTrainer(net, "pgd", lr=0.1)
    tr = AdversarialTrainer(net, PGD(0.1, 2), lr=0.1)
    for it in (0, -1):
        with pytest.raises(ValueError, match="iterations"):
            tr.fit(X, y, it, progress=False)
    with pytest.raises(TypeError, match="iterations"):
        tr.fit(X, y, 2.0, progress=False)


def test_trainer_rejects_bad_X_and_leaves_model(setup):
    net, X, y = setup
    tr = AdversarialTrainer(net, PGD(0.1, 2), lr=0.1)
    W0 = net.W.copy()
    for bad, exc, word in _bad_X(X):
        with pytest.raises(exc, match=word):
            tr.step(bad, y)
    assert np.array_equal(net.W, W0) and tr.iterations_ == 0


def test_auto_lr_without_fired_neurons_is_clear(setup):
    net, X, y = setup
    net2 = ShiftedReLUNet.from_arrays(net.W, net.a, 100.0)
    with pytest.raises(ValueError, match="lr='auto'"):
        AdversarialTrainer(net2, PGD(0.1, 2), lr="auto").step(X, y)


@pytest.mark.parametrize("make,word", [
    (lambda: ShiftedReLUNet(4, 3, b=10 ** 400), "b"),
    (lambda: PGD(10 ** 400, 3), "eps"),
    (lambda: PGD(0.1, 3, step_size=-(10 ** 400)), "step_size"),
    (lambda: FGSM(10 ** 400), "eps"),
    (lambda: AdversarialTrainer(ShiftedReLUNet(4, 3, seed=0), PGD(0.1, 2), lr=10 ** 400), "lr"),
])
def test_ints_too_big_for_a_float_are_value_errors_naming_the_argument(make, word):
    """Issue 15 item 7: 10**400 used to escape as an OverflowError from float()."""
    from sparseadv.errors import InputError
    with pytest.raises(InputError, match=rf"^{word} must be a finite real number"):
        make()
