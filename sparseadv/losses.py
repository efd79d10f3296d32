"""Per-example losses ℓ(f, y) of training and of the training attack (docs/design.md §2).

* ``squared``: ℓ = ½ (f − y)², ℓ'(f) = f − y (the paper's loss; any real labels).
* ``logistic``: ℓ = log(1 + exp(−y f)), ℓ'(f) = −y σ(−y f) (labels ±1), computed stably:
  with z = −y f, ℓ = max(z, 0) + log1p(exp(−|z|)) and σ(z) = 1 / (1 + exp(−z)) for z ≥ 0,
  exp(z) / (1 + exp(z)) for z < 0, so no exponential of a positive argument is taken.

The engines compute per-example input directions ∇_x f and outputs f (the engine protocol,
docs/design.md §6); a loss turns them into the attack's input gradient ∇_x ℓ = ℓ'(f) ∇_x f
(``input_gradient``) and the trainer into the weight-gradient coefficients ℓ'(f_i) / |B| · m^{-1/2}.
For the squared loss ``input_gradient`` is the engine's own (H (f − y)), so results are the
bits of the paper's iteration.
"""
import numpy as np

from .errors import InputError, InputTypeError

__all__ = ["Loss", "SquaredLoss", "LogisticLoss", "LOSSES", "get_loss"]


class Loss:
    """A per-example loss: ``values``, ``derivative`` (in f), ``mean`` and the attack's input
    gradient at the points an engine evaluates."""

    name = "base"

    def values(self, f, y):
        raise NotImplementedError

    def derivative(self, f, y):
        raise NotImplementedError

    def mean(self, f, y):
        """(1/n) Σ_i ℓ(f_i, y_i) as a Python float."""
        return float(np.sum(self.values(f, y))) / len(f)

    def check_labels(self, y, name="y"):
        """The labels this loss accepts (all finite reals by default); returns y."""
        return y

    def input_gradient(self, engine, Xt, y, pass_index=None):
        """(∇_x ℓ per row, f) at Xt from ``engine.input_direction`` (∇_x f, f)."""
        H, f = engine.input_direction(Xt, pass_index=pass_index)
        H *= self.derivative(f, y)[:, None]
        return H, f

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


class SquaredLoss(Loss):
    """ℓ = ½ (f − y)² (docs/design.md §2)."""

    name = "squared"

    def values(self, f, y):
        r = f - y
        return 0.5 * r * r

    def derivative(self, f, y):
        return f - y

    def mean(self, f, y):
        # the trainer's original expression: the same bits as before losses existed
        r = f - y
        return 0.5 * float(np.dot(r, r)) / len(f)

    def input_gradient(self, engine, Xt, y, pass_index=None):
        # the engine's own squared-loss gradient (also what engines outside this package,
        # which may lack input_direction, provide)
        return engine.input_gradient(Xt, y, pass_index=pass_index)


def _sigmoid(z):
    """σ(z) without overflow: exp of non-positive arguments only."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class LogisticLoss(Loss):
    """ℓ = log(1 + exp(−y f)) for labels y ∈ {−1, +1}."""

    name = "logistic"

    def values(self, f, y):
        z = -y * f
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))

    def derivative(self, f, y):
        return -y * _sigmoid(-y * f)

    def check_labels(self, y, name="y"):
        y = np.asarray(y)
        bad = ~np.isin(y, (-1.0, 1.0))
        if bad.any():
            raise InputError(f"{name} must hold labels -1 and +1 for the logistic loss, got "
                             f"{y[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}")
        return y


LOSSES = {"squared": SquaredLoss, "logistic": LogisticLoss}


def get_loss(loss):
    """A ``Loss`` from its name (``LOSSES``) or an instance (returned as is)."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise InputTypeError(f"loss must be one of {sorted(LOSSES)} or a Loss, got "
                             f"{type(loss).__name__}")
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    return LOSSES[loss]()
