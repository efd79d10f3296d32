"""The scikit-learn estimators: scikit-learn's own estimator checks, multi-class through
OneVsRestClassifier and a grid search on digits, label mapping, probabilities, bad input."""
import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from sparseadv.sklearn import SparseAdversarialClassifier, SparseAdversarialRegressor  # noqa

# lr="auto" is n / (64 lambda_max) (sparseadv.stepsize): small steps, so a few dozen iterations
SMALL = dict(m=64, iterations=40, random_state=0)


@parametrize_with_checks([SparseAdversarialClassifier(**SMALL),
                          SparseAdversarialClassifier(loss="logistic", batch_size=4, m=64,
                                                      iterations=200, random_state=0),
                          SparseAdversarialRegressor(**SMALL)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def test_one_vs_rest_on_digits(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = order[:1000], order[1000:]
    # an explicit rate: ten eigensolves of a 1000 x 1000 Gram matrix (lr="auto") would
    # dominate the test's time
    clf = OneVsRestClassifier(SparseAdversarialClassifier(m=256, eps=0.02, iterations=20,
                                                          lr=3.0, random_state=0))
    clf.fit(X[train], y[train])
    assert clf.score(X[test], y[test]) > 0.8
    assert set(clf.predict(X[test][:50])) <= set(range(10))


def test_grid_search_over_eps_and_m(digits):
    X, y = digits
    keep = np.isin(y, (3, 8))
    grid = GridSearchCV(SparseAdversarialClassifier(iterations=8, random_state=0),
                        {"eps": [0.01, 0.05], "m": [64, 128]}, cv=2)
    grid.fit(X[keep][:200], y[keep][:200])
    assert set(grid.best_params_) == {"eps", "m"}
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_score_ > 0.75


def test_labels_are_mapped_and_back(digits):
    X, y = digits
    keep = np.isin(y, (0, 1))
    labels = np.where(y[keep] == 0, "zero", "one")
    clf = SparseAdversarialClassifier(m=128, iterations=80, loss="logistic",
                                      random_state=1).fit(X[keep], labels)
    assert list(clf.classes_) == ["one", "zero"]
    pred = clf.predict(X[keep])
    assert set(pred) <= {"one", "zero"} and np.mean(pred == labels) > 0.9
    proba = clf.predict_proba(X[keep])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.array_equal(clf.classes_[proba.argmax(1)], pred)
    f = clf.decision_function(X[keep])
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-f)), rtol=1e-12)
    # the paper's squared loss gives no probabilities
    assert not hasattr(SparseAdversarialClassifier().fit(X[keep][:50], labels[:50]),
                       "predict_proba")


def test_rows_are_scaled_inside(digits):
    X, y = digits
    keep = np.isin(y, (0, 1))
    clf = SparseAdversarialClassifier(**SMALL).fit(X[keep], y[keep])
    np.testing.assert_allclose(clf.decision_function(3 * X[keep]),
                               clf.decision_function(X[keep]), rtol=1e-12)
    same = SparseAdversarialClassifier(**SMALL).fit(X[keep] / 4, y[keep])  # exact
    np.testing.assert_array_equal(same.net_.W, clf.net_.W)


def test_bad_input(digits):
    X, y = digits
    with pytest.raises(ValueError, match="binary.*exactly 2 classes.*OneVsRestClassifier"):
        SparseAdversarialClassifier(**SMALL).fit(X[:100], y[:100])
    binary = np.isin(y, (0, 1))
    Xb, yb = X[binary][:40], y[binary][:40]
    for kwargs, match in ((dict(batch_size=0), "batch_size"), (dict(batch_size=41),
                          "batch_size"), (dict(loss="hinge"), "loss"),
                          (dict(iterations=3, epochs=2), "iterations")):
        with pytest.raises(ValueError, match=match):
            SparseAdversarialClassifier(m=64, random_state=0, **kwargs).fit(Xb, yb)
    with pytest.raises(ValueError, match="loss must be 'squared'"):
        SparseAdversarialRegressor(loss="logistic", **SMALL).fit(Xb, yb.astype(float))


def test_regressor_fits_a_direction_function():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = 3 + 2 * X[:, 0]
    reg = SparseAdversarialRegressor(m=512, eps=0.01, iterations=400, random_state=0)
    assert reg.fit(X, y).score(X, y) > 0.8
    epochs = SparseAdversarialRegressor(m=64, batch_size=50, epochs=2, random_state=0).fit(X, y)
    assert epochs.n_iter_ == 8 and list(epochs.history_["batch_size"]) == [50] * 8
