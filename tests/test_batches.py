"""Mini-batch training: the batch order, every engine against a plain-numpy iteration on the
same batches (both losses, both norms, batch sizes 1, middle and with a last partial batch),
the full-batch path kept bit for bit, the certified engine's work per iteration, bad input."""
import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet
from sparseadv.engines.base import Batch
from sparseadv.errors import InputError
from sparseadv.losses import get_loss
from sparseadv.trainer import RECORD_FIELDS

from conftest import unit_rows

# certified: verify checks every pass against brute force; the default budgets re-anchor
# neurons during these runs, budget=0.3 keeps most anchored lists (built for all n points)
# over many batches
ENGINES = [("dense", {}), ("tree", {}), ("certified", {"verify": True}),
           ("certified", {"verify": True, "budget": 0.3}),
           ("certified", {"verify": True, "lazy": False, "refine": False})]


def _problem(n=24, d=6, m=256, seed=5):
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n, d)
    y = np.where(X[:, 0] + 0.3 * X[:, 1] >= 0, 1.0, -1.0)
    net = ShiftedReLUNet(m, d, b=0.6, seed=seed + 1)
    return net, X, y


def _ref_iteration(W, a, b, X, y, eps, steps, lr, norm, loss):
    """One iteration in plain numpy (docs/design.md §2 with a per-example loss)."""
    scale = 1 / np.sqrt(W.shape[0])
    alpha = 2.5 * eps / steps

    def outputs(P):
        Z = P @ W.T
        return Z, np.maximum(Z - b, 0) @ a * scale

    delta = np.zeros_like(X)
    for _ in range(steps):
        Z, f = outputs(X + delta)
        g = (loss.derivative(f, y)[:, None] * ((Z > b) * a)) @ W * scale
        if norm == np.inf:
            delta = np.clip(delta + alpha * np.sign(g), -eps, eps)
        else:
            gn = np.linalg.norm(g, axis=1, keepdims=True)
            delta = delta + np.where(gn > 0, alpha * g / np.where(gn > 0, gn, 1), 0)
            dn = np.linalg.norm(delta, axis=1, keepdims=True)
            delta = np.where(dn > eps, delta * (eps / np.where(dn > 0, dn, 1)), delta)
    Xt = X + delta
    Z, f = outputs(Xt)
    coef = loss.derivative(f, y) * scale / X.shape[0]
    G = ((Z > b) * a * coef[:, None]).T @ Xt
    return W - lr * G, loss.mean(f, y)


def _batches(n, batch_size, seed, count, shuffle=True):
    """The batches the trainer's order gives, drawn the documented way."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        perm = rng.permutation(n) if shuffle else np.arange(n)
        out += [np.sort(perm[i:i + batch_size]) for i in range(0, n, batch_size)]
    return out[:count]


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("norm", [2, np.inf])
@pytest.mark.parametrize("batch_size", [1, 8, 10])
def test_every_engine_matches_numpy_on_the_same_batches(loss, norm, batch_size):
    net0, X, y = _problem()
    iterations = 7 if batch_size > 1 else 5
    eps, steps, lr = 0.08, 3, 2.0
    batches = _batches(len(X), batch_size, 11, iterations)
    Wref, losses = net0.W.copy(), []
    lossf = get_loss(loss)
    for idx in batches:
        Wref, value = _ref_iteration(Wref, net0.a, net0.b, X[idx], y[idx], eps, steps, lr,
                                     norm, lossf)
        losses.append(value)
    assert batch_size == 1 or any(len(i) < batch_size for i in batches) == (batch_size == 10)
    for engine, options in ENGINES:
        net = net0.copy()
        tr = AdversarialTrainer(net, PGD(eps, steps, norm=norm), lr=lr, engine=engine,
                                loss=loss, batch_size=batch_size, seed=11, **options)
        hist = tr.fit(X, y, iterations=iterations, progress=False)
        np.testing.assert_allclose(net.W, Wref, rtol=0, atol=1e-10, err_msg=engine)
        np.testing.assert_allclose(hist["loss"], losses, rtol=1e-10, err_msg=engine)
        assert list(hist["batch_size"]) == [len(i) for i in batches]
        assert not np.array_equal(net.W, net0.W)


@pytest.mark.parametrize("engine,options", ENGINES)
@pytest.mark.parametrize("norm", [2, np.inf])
def test_full_batch_is_the_explicit_squared_loss_iteration_bit_for_bit(engine, options, norm):
    from sparseadv.engines import make_engine
    net0, X, y = _problem(n=32, m=384)
    lr = 1.5
    net = net0.copy()
    AdversarialTrainer(net, PGD(0.05, 3, norm=norm), lr=lr, engine=engine,
                       **options).fit(X, y, 5, progress=False)
    ref = net0.copy()
    attack = PGD(0.05, 3, norm=norm)
    eng = make_engine(engine, ref, **options)
    n = len(X)
    for _ in range(5):                          # the protocol of docs/design.md §6, by hand
        eng.begin_iteration(X, y, attack.threat_model)
        delta = np.zeros_like(X)
        for k in range(3):
            G, _ = eng.input_gradient(X + delta, y, pass_index=k)     # H (f - y)
            if norm == np.inf:
                delta += attack.step_size * np.sign(G)
            else:
                gn = np.linalg.norm(G, axis=1)
                mv = gn > 0
                delta[mv] += (attack.step_size / gn[mv])[:, None] * G[mv]
            attack._project(delta)
        Xt = X + delta
        f, _ = eng.forward(Xt, pass_index=3)
        rows, G = eng.weight_gradient(Xt, (f - y) * (ref.scale / n), pass_index=3)
        ref.apply_step(rows, G, lr)
    assert np.array_equal(net.W, ref.W)


def test_batch_order():
    net, X, y = _problem(n=23)
    tr = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, batch_size=5, seed=3)
    seen = [tr.order.next(23) for _ in range(10)]
    assert [len(s) for s in seen] == [5, 5, 5, 5, 3] * 2
    for epoch in (seen[:5], seen[5:]):
        assert np.array_equal(np.sort(np.concatenate(epoch)), np.arange(23))
        assert all(np.all(np.diff(s) > 0) for s in epoch)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[:5], seen[5:]))
    assert all(np.array_equal(a, b) for a, b in zip(seen, _batches(23, 5, 3, 10)))
    ordered = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, batch_size=5, shuffle=False)
    assert np.array_equal(ordered.order.next(23), np.arange(5))


def test_epochs_and_records():
    net, X, y = _problem(n=20)
    tr = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, batch_size=6, seed=0)
    hist = tr.fit(X, y, epochs=2, progress=False)
    assert set(hist) == set(RECORD_FIELDS)
    assert list(hist["epoch"]) == [0] * 4 + [1] * 4
    assert list(hist["batch_size"]) == [6, 6, 6, 2] * 2
    full = AdversarialTrainer(net.copy(), PGD(0.05, 2), lr=0.5)
    hist = full.fit(X, y, epochs=3, progress=False)
    assert list(hist["epoch"]) == [0, 1, 2] and list(hist["batch_size"]) == [20] * 3


def test_one_batch_of_everything_in_order_equals_full_batch():
    net0, X, y = _problem()
    a, b = net0.copy(), net0.copy()
    AdversarialTrainer(a, PGD(0.05, 3), lr=1.0).fit(X, y, 3, progress=False)
    AdversarialTrainer(b, PGD(0.05, 3), lr=1.0, batch_size=len(X),
                       shuffle=False).fit(X, y, 3, progress=False)
    assert np.array_equal(a.W, b.W)


def test_failed_step_restores_the_batch_order():
    net0, X, y = _problem()
    ok = net0.copy()
    AdversarialTrainer(ok, PGD(0.05, 2), lr=1.0, batch_size=7, seed=2).fit(
        X, y, 6, progress=False)
    net = net0.copy()
    tr = AdversarialTrainer(net, PGD(0.05, 2), lr=1.0, batch_size=7, seed=2)
    tr.fit(X, y, 3, progress=False)
    original = tr.engine.weight_gradient

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    tr.engine.weight_gradient = boom
    with pytest.raises(KeyboardInterrupt):
        tr.step(X, y)
    tr.engine.weight_gradient = original
    tr.fit(X, y, 3, progress=False)
    assert np.array_equal(net.W, ok.W)


def test_certified_work_grows_with_the_batch_not_with_n():
    """Deterministic counters at n = 4096: after the build and once the drift budgets have
    adapted (the first updates re-anchor the neurons whose initial budget was too small), an
    iteration on a batch of 64 evaluates far fewer inner products than a full-batch one (about
    n / |B| fewer: the passes scan the batch's candidates only)."""
    rng = np.random.default_rng(0)
    n, d, m = 4096, 16, 2048
    X = unit_rows(rng, n, d)
    y = np.where(X[:, 0] >= 0, 1.0, -1.0)
    net0 = ShiftedReLUNet(m, d, seed=1)

    def per_iteration(batch_size, iterations, warmup):
        tr = AdversarialTrainer(net0.copy(), PGD(0.05, 3), lr=0.2, engine="certified",
                                batch_size=batch_size, seed=0)
        hist = tr.fit(X, y, iterations, progress=False)
        assert hist["reanchored"][0] == m       # the build: all m neurons against all n
        return hist["inner_products"][warmup:], hist["reanchored"][warmup:]

    full, _ = per_iteration(None, 3, 1)
    batch, reanchored = per_iteration(64, 30, 10)
    assert np.mean(batch) < np.mean(full) / 20, (np.mean(batch), np.mean(full))
    # what remains proportional to n: n products per re-anchored neuron
    assert np.all(batch >= reanchored * n)


def test_certified_batch_index_is_checked():
    net, X, y = _problem()
    from sparseadv.engines import make_engine
    eng = make_engine("certified", net)
    attack = PGD(0.05, 2)
    with pytest.raises(InputError, match="batch.index"):
        eng.begin_iteration(X[[3, 1]], y[[3, 1]], attack.threat_model,
                            batch=Batch(X, np.array([3, 1])))
    eng.begin_iteration(X[[1, 3]], y[[1, 3]], attack.threat_model,
                        batch=Batch(X, np.array([1, 3])))
    with pytest.raises(InputError, match="pass_index"):
        eng.input_direction(X, pass_index=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=-3), "batch_size"),
    (dict(batch_size=25), "batch_size"), (dict(loss="hinge"), "loss"),
    (dict(shuffle=1), "shuffle"), (dict(seed=-1), "seed")])
def test_bad_arguments_name_themselves(kwargs, match):
    net, X, y = _problem()
    W = net.W.copy()
    with pytest.raises((InputError, TypeError), match=match):
        tr = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, **kwargs)
        tr.fit(X, y, 1, progress=False)
    assert np.array_equal(net.W, W)


def test_fit_needs_exactly_one_of_iterations_and_epochs():
    net, X, y = _problem()
    tr = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, batch_size=4)
    for kwargs in ({}, dict(iterations=2, epochs=1)):
        with pytest.raises(InputError, match="iterations"):
            tr.fit(X, y, progress=False, **kwargs)
    with pytest.raises(InputError, match="epochs"):
        tr.fit(X, y, epochs=0, progress=False)


def test_logistic_labels_must_be_pm1():
    net, X, y = _problem()
    tr = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, loss="logistic")
    with pytest.raises(InputError, match="y must hold labels -1 and \\+1"):
        tr.step(X, np.where(y > 0, 1.0, 0.0))
    with pytest.raises(InputError, match="batch order was drawn"):
        bt = AdversarialTrainer(net, PGD(0.05, 2), lr=0.5, batch_size=4)
        bt.step(X, y)
        bt.step(X[:20], y[:20])
