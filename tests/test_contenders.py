"""The references engines are measured against: the oracle (handed the exact fired pairs of
every pass) and the PyTorch peer reach the dense engine's weights from the same start."""
import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer
from sparseadv.analysis.grid import problem
from sparseadv.analysis.oracle import OracleIteration
from sparseadv.analysis.torch_peer import TorchIteration
from sparseadv.stepsize import auto_lr


def start(norm=2, m=2048, n=48, d=5):
    net, X, y = problem(m, n, d, seed=4)
    return net, X, y, PGD(0.08, 3, norm=norm), auto_lr(net, X)


@pytest.mark.parametrize("norm", [2, np.inf])
def test_oracle_iterations_equal_the_dense_engine(norm):
    net, X, y, attack, lr = start(norm)
    ref = AdversarialTrainer(net.copy(), attack, lr=lr, engine="dense")
    oracle = OracleIteration(net, X, y, attack, lr)
    for _ in range(3):
        want = ref.step(X, y)
        oracle.prepare()
        got = oracle.step()
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
        assert got["fired_pairs"] == want["fired_pairs"]
        np.testing.assert_allclose(net.W, ref.net.W, rtol=0, atol=1e-12)
    # work: only fired pairs are evaluated (plus none else): far below dense's (K + 2) m n
    assert got["inner_products"] < 0.5 * want["inner_products"]
    with pytest.raises(RuntimeError, match="prepare"):
        oracle.step()


def test_oracle_evaluates_the_union_once_and_then_only_the_flips():
    # the floor's work: pass 0 every pair of the union U of the iteration's fired pairs, a
    # later pass exactly the pairs whose fired state changes, plus one <H_i, x_i> per point
    # and pass; U holds every fired pair the dense engine finds at each pass
    net, X, y, attack, lr = start(m=1024, n=40, d=4)
    ref = AdversarialTrainer(net.copy(), attack, lr=lr, engine="dense")
    oracle = OracleIteration(net, X, y, attack, lr)
    for _ in range(2):
        want = ref.step(X, y)
        oracle.prepare()
        (ptr, idx), due, rows = oracle._plan
        flips = sum(int(np.count_nonzero(dl == 0)) for dl in due[1:])
        assert all(np.all((dl == 0) | np.isinf(dl)) for dl in due[1:])
        assert 0 < flips < len(idx)
        got = oracle.step()
        assert got["inner_products"] == len(idx) + flips + (attack.steps + 1) * len(X)
        assert got["fired_pairs"] == want["fired_pairs"] <= len(idx)
        assert np.all(np.diff(ptr)[rows] > 0)
        np.testing.assert_allclose(net.W, ref.net.W, rtol=0, atol=1e-12)


def test_oracle_leaves_the_weights_alone_while_preparing():
    net, X, y, attack, lr = start()
    W0 = net.W.copy()
    OracleIteration(net, X, y, attack, lr).prepare()
    assert np.array_equal(net.W, W0)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-11), ("float32", 1e-4)])
@pytest.mark.parametrize("norm", [2, np.inf])
def test_torch_peer_equals_the_dense_engine(dtype, tol, norm):
    pytest.importorskip("torch")
    net, X, y, attack, lr = start(norm)
    ref = AdversarialTrainer(net.copy(), attack, lr=lr, engine="dense")
    peer = TorchIteration(net, X, y, attack, lr, dtype)
    for _ in range(2):
        want, got = ref.step(X, y), peer.step()
        assert got["loss"] == pytest.approx(want["loss"], rel=tol)
    np.testing.assert_allclose(peer.weights(), ref.net.W, rtol=0, atol=tol * 10)
