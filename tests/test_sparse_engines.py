"""Every sparse engine against the dense engine: same weights, losses and fired counts.

Kept engine-agnostic (parametrised over the sparse engines of the registry) so a new engine is
tested by adding it to ``SPARSE``; the certified engine has further tests of its own
(test_certified.py)."""
import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets
from sparseadv.engines import ENGINES

SPARSE = ["tree", "certified"]


def test_registry_holds_every_engine():
    assert sorted(ENGINES) == sorted(["dense"] + SPARSE)


def _run(engine, norm, m, d, iterations, lr, eps=0.05, **opts):
    X, y = datasets.teacher(96, d, seed=3)
    net = ShiftedReLUNet(m, d, seed=11)
    tr = AdversarialTrainer(net, PGD(eps, 3, norm=norm), lr=lr, engine=engine, **opts)
    hist = tr.fit(X, y, iterations, progress=False)
    return net.W, hist


@pytest.mark.parametrize("engine", SPARSE)
@pytest.mark.parametrize("norm", [2, np.inf])
@pytest.mark.parametrize("m,d", [(2048, 3), (1024, 16), (512, 40)])
def test_twenty_iterations_equal_dense(engine, norm, m, d):
    Wd, hd = _run("dense", norm, m, d, 20, "auto")
    Ws, hs = _run(engine, norm, m, d, 20, "auto")
    assert np.abs(Ws - Wd).max() <= 1e-9 * np.abs(Wd).max()
    np.testing.assert_allclose(hs["loss"], hd["loss"], rtol=1e-10)
    for key in ("fired_pairs", "fired_mean", "fired_max"):
        np.testing.assert_array_equal(hs[key], hd[key])
    # the sparse engine did strictly less work than the dense one on these sizes
    assert hs["inner_products"].sum() < hd["inner_products"].sum()


@pytest.mark.parametrize("engine", SPARSE)
def test_rejects_same_bad_input_as_dense(engine):
    X, y = datasets.sphere(20, 4, seed=0)
    for bad, exc in [(X[:, :2], ValueError), (X.astype(complex), TypeError),
                     (np.where(X > 0.5, np.nan, X), ValueError)]:
        for eng in ("dense", engine):
            net = ShiftedReLUNet(64, 4, seed=0)
            W0 = net.W.copy()
            tr = AdversarialTrainer(net, PGD(0.1, 2), lr=0.1, engine=eng)
            with pytest.raises(exc, match="X"):
                tr.step(bad, y)
            assert np.array_equal(net.W, W0)


@pytest.mark.parametrize("volume,exc", [(1e30, TypeError), ("x", TypeError), (0, ValueError),
                                        (10 ** 30, ValueError), (True, TypeError)])
def test_dense_volume_is_checked_at_construction(volume, exc):
    from sparseadv.engines import make_engine
    from sparseadv.errors import InputError, InputTypeError
    net = ShiftedReLUNet(16, 3, seed=0)
    with pytest.raises(InputTypeError if exc is TypeError else InputError, match="volume"):
        make_engine("dense", net, volume=volume)
    make_engine("dense", net, volume=4096)
