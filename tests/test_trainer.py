"""The dense trainer against the independent plain-numpy iteration, and its behaviour."""
import numpy as np
import pytest

from sparseadv import FGSM, PGD, AdversarialTrainer, ShiftedReLUNet, reference
from sparseadv.trainer import RECORD_FIELDS


@pytest.mark.parametrize("norm", [2, np.inf])
def test_ten_dense_iterations_match_reference(small_problem, norm):
    W, a, b, X, y = small_problem
    lr = 0.5
    net = ShiftedReLUNet.from_arrays(W, a, b)
    tr = AdversarialTrainer(net, PGD(0.05, steps=3, norm=norm), lr=lr, engine="dense")
    Wref = W.copy()
    for _ in range(10):
        rec = tr.step(X, y)
        Wref, loss = reference.iteration(Wref, a, b, X, y, 0.05, 3, lr, norm=norm)
        assert rec["loss"] == pytest.approx(loss, rel=1e-12)
    assert np.abs(net.W - Wref).max() <= 1e-9 * np.abs(Wref).max()
    assert not np.array_equal(net.W, W)


def test_record_contents(small_problem):
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    rec = AdversarialTrainer(net, PGD(0.05, 3), lr=0.1).step(X, y)
    assert set(RECORD_FIELDS) <= set(rec)
    m, n = W.shape[0], X.shape[0]
    assert rec["inner_products"] == (3 + 2) * m * n
    fired = (reference.pgd(W, a, b, X, y, 0.05, 3) @ W.T > b).sum(1)
    assert rec["fired_mean"] == pytest.approx(fired.mean())
    assert rec["fired_max"] == fired.max()
    assert rec["fired_pairs"] == fired.sum()
    assert rec["seconds"] >= rec["seconds_attack"] > 0


def test_training_lowers_robust_loss_on_separable_data():
    rng = np.random.default_rng(0)
    n, d = 128, 6
    u = rng.standard_normal(d); u /= np.linalg.norm(u)
    X = rng.standard_normal((n * 4, d)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    X = X[np.abs(X @ u) > 0.2][:n]
    y = np.sign(X @ u)
    net = ShiftedReLUNet(2048, d, seed=1)
    tr = AdversarialTrainer(net, PGD(0.05, 3), lr="auto")
    hist = tr.fit(X, y, 60, progress=False)      # lr auto is SAFETY = 1/64 of n / lambda_max
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert tr.lr_ > 0 and np.all(hist["lr"] == tr.lr_)
    # robust accuracy at the trained weights improves over chance
    Xt = PGD(0.05, 3).perturb(net, X, y)
    assert np.mean(np.sign(net.forward(Xt)) == y) > 0.8


def test_same_seed_same_bits():
    def run():
        rng = np.random.default_rng(3)
        X = rng.standard_normal((50, 4)); X /= np.linalg.norm(X, axis=1, keepdims=True)
        y = rng.choice([-1.0, 1.0], 50)
        net = ShiftedReLUNet(300, 4, seed=9)
        hist = AdversarialTrainer(net, PGD(0.1, 2, random_start=True, seed=4), lr="auto").fit(
            X, y, 5, progress=False)
        return net.W, hist["loss"]
    (W1, l1), (W2, l2) = run(), run()
    assert np.array_equal(W1, W2) and np.array_equal(l1, l2)


def test_fgsm_training_and_history_shape(small_problem):
    W, a, b, X, y = small_problem
    tr = AdversarialTrainer(ShiftedReLUNet.from_arrays(W, a, b), FGSM(0.03), lr=0.2)
    hist = tr.fit(X, y, 4, progress=True)
    assert all(len(v) == 4 for v in hist.values())
    assert tr.iterations_ == 4


def test_callback_stops(small_problem):
    W, a, b, X, y = small_problem
    tr = AdversarialTrainer(ShiftedReLUNet.from_arrays(W, a, b), PGD(0.03, 1), lr=0.2)
    hist = tr.fit(X, y, 10, progress=False, callback=lambda rec: True)
    assert len(hist["loss"]) == 1


def test_auto_lr_against_explicit_gram(small_problem):
    from sparseadv import stepsize
    from sparseadv.stepsize import auto_lr, ntk_max_eigenvalue
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    M = (X @ W.T > b).astype(float)
    H = (M @ M.T) * (X @ X.T) / W.shape[0]
    lam = np.linalg.eigvalsh(H)[-1]
    assert ntk_max_eigenvalue(net, X) == pytest.approx(lam, rel=1e-8)
    assert auto_lr(net, X) == pytest.approx(stepsize.SAFETY * X.shape[0] / lam, rel=1e-8)


def test_auto_lr_lanczos_path_agrees(small_problem, monkeypatch):
    """Large n uses matrix-free Lanczos instead of the explicit Gram matrix: same value."""
    from sparseadv import stepsize
    W, a, b, X, y = small_problem
    net = ShiftedReLUNet.from_arrays(W, a, b)
    explicit = stepsize.ntk_max_eigenvalue(net, X)
    monkeypatch.setattr(stepsize, "GRAM_MAX_N", 0)
    assert stepsize.ntk_max_eigenvalue(net, X) == pytest.approx(explicit, rel=1e-8)


def test_weight_step_kernel_matches_numpy():
    """The in-place weight step against numpy's fancy-indexed update, bit for bit."""
    from sparseadv import _core
    rng = np.random.default_rng(2)
    W = rng.standard_normal((50, 7))
    rows = np.array([0, 3, 4, 17, 49], dtype=np.int64)
    G = rng.standard_normal((5, 7))
    expect = W.copy()
    expect[rows] -= 0.37 * G
    _core.sub_scaled_rows(W, rows, G, 0.37)
    assert np.array_equal(W, expect)
    W0 = W.copy()
    with pytest.raises(ValueError, match="out of range"):
        _core.sub_scaled_rows(W, np.array([1, 50], dtype=np.int64), G[:2], 1.0)
    with pytest.raises(ValueError, match="G must have shape"):
        _core.sub_scaled_rows(W, rows, G[:3], 1.0)
    assert np.array_equal(W, W0)


def test_one_step_follows_the_engine_protocol(small_problem):
    """The call order of docs/design.md §6, with the pass index of every call."""
    from sparseadv.engines import DenseEngine, ThreatModel
    W, a, b, X, y = small_problem
    calls = []

    class Recording(DenseEngine):
        def begin_iteration(self, X, y, threat):
            calls.append(("begin_iteration", threat))
            super().begin_iteration(X, y, threat)

        def input_gradient(self, Xt, y, pass_index=None):
            calls.append(("input_gradient", pass_index))
            return super().input_gradient(Xt, y, pass_index)

        def forward(self, Xt, pass_index=None):
            calls.append(("forward", pass_index))
            return super().forward(Xt, pass_index)

        def weight_gradient(self, Xt, coef, pass_index=None):
            calls.append(("weight_gradient", pass_index))
            return super().weight_gradient(Xt, coef, pass_index)

        def weights_changed(self, rows):
            calls.append(("weights_changed", len(rows)))

    net = ShiftedReLUNet.from_arrays(W, a, b)
    attack = PGD(0.05, 3, norm=np.inf)
    AdversarialTrainer(net, attack, lr=0.1, engine=Recording(net)).step(X, y)
    threat = ThreatModel(eps=0.05, norm=np.inf, steps=3, step_size=attack.step_size,
                         random_start=False)
    assert calls == [("begin_iteration", threat), ("input_gradient", 0), ("input_gradient", 1),
                     ("input_gradient", 2), ("forward", 3), ("weight_gradient", 3),
                     ("weights_changed", W.shape[0])]
    with pytest.raises(Exception):
        threat.eps = 1.0                            # immutable
    for bad in (dict(norm=1), dict(steps=0), dict(eps=-1.0), dict(eps=np.inf)):
        with pytest.raises(ValueError):
            ThreatModel(**{**threat.__dict__, **bad})
