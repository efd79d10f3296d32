"""An independent check of sparseadv's attacks: the network in PyTorch (``to_torch``) attacked by
the Adversarial Robustness Toolbox's PGD on the two-logit model [-f, f].

Skipped only when torch (or ART) is not importable; CI installs the ``torch`` extra."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
art_evasion = pytest.importorskip("art.attacks.evasion")
art_classification = pytest.importorskip("art.estimators.classification")

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets  # noqa: E402
from sparseadv import robustness as R  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    X, y = datasets.separated(60, 5, margin=0.1, seed=11)
    net = ShiftedReLUNet(1024, 5, seed=10)
    AdversarialTrainer(net, PGD(0.1, 3), lr=1.0).fit(X, y, 40, progress=False)
    return net, X, y


def test_forward_agrees(problem):
    net, X, y = problem
    mod = net.to_torch()
    with torch.no_grad():
        f = mod(torch.from_numpy(X)).numpy()
        two = net.to_torch(logits=True)(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(f, net.forward(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(two, np.stack([-f, f], axis=1))
    assert mod.W.dtype == torch.float64
    f32 = net.to_torch(dtype=torch.float32)(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(f32, net.forward(X), atol=1e-4)


def _project_l2(Xa, X, eps):
    delta = Xa - X
    ln = np.linalg.norm(delta, axis=1)
    over = ln > eps
    delta[over] *= (eps / ln[over])[:, None]
    return X + delta


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3, 0.45])
def test_art_pgd_finds_nothing_our_ensemble_calls_robust(problem, eps):
    net, X, y = problem
    clf = art_classification.PyTorchClassifier(
        model=net.to_torch(logits=True), loss=torch.nn.CrossEntropyLoss(),
        input_shape=(X.shape[1],), nb_classes=2, device_type="cpu")
    attack = art_evasion.ProjectedGradientDescent(
        clf, norm=2, eps=eps, eps_step=eps / 4, max_iter=40, num_random_init=3,
        batch_size=len(y), verbose=False)
    labels = (y > 0).astype(np.int64)
    np.random.seed(0)           # ART draws its random starts from the global generators
    torch.manual_seed(0)
    Xa = _project_l2(np.asarray(attack.generate(X.astype(np.float32), y=labels), np.float64), X,
                     eps)
    art_flipped = R.flipped(y * net.forward(Xa), y)
    ours = R.evaluate(net, X, y, eps, seed=0)
    assert not np.any(art_flipped & ours.robust), "ART flipped points our ensemble calls robust"
    assert art_flipped.mean() <= 1.0 - ours.accuracy


def test_the_cross_check_problem_has_headroom(problem):
    net, X, y = problem
    # the radii above span robust accuracy from most points to none, so the check has teeth
    accs = [R.robust_accuracy(net, X, y, e, steps=20, restarts=1, seed=0)
            for e in (0.1, 0.2, 0.3, 0.45)]
    assert accs[0] > 0.5 and 0.0 < accs[2] < accs[1] < accs[0] and accs[-1] < 0.1


def test_to_torch_rejects_bad_input(problem):
    net = problem[0]
    with pytest.raises(ValueError):
        net.to_torch(dtype=torch.int64)
    from sparseadv._torch import to_torch
    with pytest.raises(TypeError):
        to_torch("not a net")
