"""scikit-learn estimators (optional extra ``sklearn``): adversarially trained wide two-layer
shifted-ReLU networks behind ``fit`` / ``predict`` / ``score``.

* ``SparseAdversarialClassifier``: binary; any two class labels (``classes_[0]`` -> -1,
  ``classes_[1]`` -> +1, and back); ``decision_function`` = f(x), ``predict``, ``score``
  (accuracy) and, for the logistic loss, ``predict_proba`` = [1 - σ(f), σ(f)]. More classes:
  wrap it in ``sklearn.multiclass.OneVsRestClassifier``.
* ``SparseAdversarialRegressor``: the squared loss on standardised targets (the mean and
  standard deviation of y are learnt at ``fit`` and undone by ``predict``); ``score`` = R².

Inputs are scaled to unit l2 norm inside, in ``fit`` and in every prediction (a zero row stays
zero): the network, its default threshold b = sqrt(0.4 ln m) and the attack radius ``eps`` are
defined for points on the unit sphere (docs/design.md §2), so the radius means the same on any
data, and rejecting other data would make the estimators unusable in ordinary pipelines. The
consequence: a prediction depends on each row's direction only (x and 2x get the same), so put
a ``StandardScaler`` (which centres the data) before the estimator when the origin of the
features carries no meaning.

Training is ``sparseadv.AdversarialTrainer`` with the attack ``PGD(eps, steps, norm)`` (its
steps ascend the estimator's loss); ``random_state`` seeds the network, the attack and the
batch order. ``iterations`` and ``epochs`` are exclusive; neither: 50 iterations.
"""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from .attacks import PGD
from .network import ShiftedReLUNet
from .trainer import AdversarialTrainer

try:                                    # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:                     # pragma: no cover - older scikit-learn
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["SparseAdversarialClassifier", "SparseAdversarialRegressor"]

DEFAULT_ITERATIONS = 50


def _unit_rows(X):
    """X with every non-zero row scaled to unit l2 norm (a new array)."""
    norms = np.linalg.norm(X, axis=1)
    norms[norms == 0] = 1.0
    return X / norms[:, None]


class _SparseAdversarialBase(BaseEstimator):
    def __init__(self, m=1024, eps=0.05, norm=2, steps=3, loss="squared", lr="auto",
                 batch_size=None, iterations=None, epochs=None, engine="dense",
                 random_state=None):
        self.m = m
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.loss = loss
        self.lr = lr
        self.batch_size = batch_size
        self.iterations = iterations
        self.epochs = epochs
        self.engine = engine
        self.random_state = random_state

    def _train(self, X, y):
        """Train a network on validated X (rows scaled here) and targets y; sets the fitted
        attributes."""
        X = _unit_rows(X)
        seeds = check_random_state(self.random_state).randint(0, 2 ** 31 - 1, size=3)
        net = ShiftedReLUNet(self.m, X.shape[1], seed=int(seeds[0]))
        attack = PGD(self.eps, self.steps, norm=self.norm, seed=int(seeds[1]))
        trainer = AdversarialTrainer(net, attack, lr=self.lr, engine=self.engine,
                                     loss=self.loss, batch_size=self.batch_size,
                                     seed=int(seeds[2]))
        iterations = self.iterations
        if iterations is None and self.epochs is None:
            iterations = DEFAULT_ITERATIONS
        self.history_ = trainer.fit(X, y, iterations=iterations, epochs=self.epochs,
                                    progress=False)
        self.net_ = net
        self.lr_ = trainer.lr_
        self.n_iter_ = len(self.history_["loss"])
        return self

    def _output(self, X):
        check_is_fitted(self, "net_")
        X = _validate_data(self, X, reset=False)
        return self.net_.forward(_unit_rows(X))


class SparseAdversarialClassifier(ClassifierMixin, _SparseAdversarialBase):
    """Binary classifier: an adversarially trained ``ShiftedReLUNet`` (module docstring).

    Parameters
    ----------
    m : int, width (neurons). eps, norm, steps : the training attack, ``PGD(eps, steps,
    norm=norm)`` on unit-norm rows. loss : "squared" (the paper's) or "logistic".
    lr : float or "auto". batch_size : None (full batch) or int. iterations, epochs : how long
    to train (at most one; default 50 iterations). engine : "dense", "tree" or "certified".
    random_state : None, int or RandomState.

    Attributes
    ----------
    classes_ : the two labels; net_ : the trained network; history_ : the trainer's records;
    lr_ : the learning rate used; n_iter_ : iterations run; n_features_in_.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _more_tags(self):               # scikit-learn < 1.6
        return {"binary_only": True}

    def fit(self, X, y):
        X, y = _validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            # scikit-learn's wording (its checks look for it), then what to do
            raise ValueError(
                f"Only binary classification is supported. The type of the target is "
                f"{type_of_target(y, input_name='y')}: y must hold exactly 2 classes for "
                f"SparseAdversarialClassifier, got {len(self.classes_)} class(es); for more "
                f"classes use sklearn.multiclass.OneVsRestClassifier")
        return self._train(X, np.where(y == self.classes_[1], 1.0, -1.0))

    def decision_function(self, X):
        """f(x) at the unit-norm rows of X: > 0 predicts ``classes_[1]``."""
        return self._output(X)

    def predict(self, X):
        f = self.decision_function(X)
        return self.classes_[(f > 0).astype(np.intp)]

    def _logistic(self):
        return self.loss == "logistic"

    @available_if(_logistic)
    def predict_proba(self, X):
        """[P(classes_[0]), P(classes_[1])] = [σ(−f), σ(f)] (logistic loss only)."""
        f = self.decision_function(X)
        p = np.exp(-np.logaddexp(0.0, -f))          # σ(f) without overflow
        return np.column_stack([1.0 - p, p])


class SparseAdversarialRegressor(RegressorMixin, _SparseAdversarialBase):
    """Regressor: an adversarially trained ``ShiftedReLUNet`` on standardised targets (module
    docstring); the squared loss only. Parameters and attributes as for
    ``SparseAdversarialClassifier`` (no ``classes_``; ``y_mean_`` and ``y_scale_`` instead).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # predictions depend on each row's direction only (unit-norm rows): scikit-learn's
        # generic regression check data (a linear target) is not fit to R² > 0.5
        tags.regressor_tags.poor_score = True
        return tags

    def _more_tags(self):               # scikit-learn < 1.6
        return {"poor_score": True}

    def fit(self, X, y):
        X, y = _validate_data(self, X, y, y_numeric=True)
        if self.loss != "squared":
            raise ValueError(f"loss must be 'squared' for SparseAdversarialRegressor, got "
                             f"{self.loss!r}")
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_ = float(y.mean())
        scale = float(y.std())
        self.y_scale_ = scale if scale > 0 else 1.0
        return self._train(X, (y - self.y_mean_) / self.y_scale_)

    def predict(self, X):
        f = self._output(X)
        return f * self.y_scale_ + self.y_mean_
