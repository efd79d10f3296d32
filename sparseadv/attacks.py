"""Adversarial attacks (the inner maximisation), exactly as docs/design.md §2 defines them.

Per example, K steps from delta = 0 (or a random point of the ball with ``random_start``):

* l2 PGD: g = grad_x loss at x + delta (the squared loss of the paper by default, or the loss
  the model is trained with: ``loss=``, ``sparseadv.losses``); if g != 0, delta += step_size * g / ||g||_2; then delta is
  scaled down onto the l2 ball of radius eps when it is longer; a zero gradient stays put.
* l-inf PGD: delta += step_size * sign(g); delta is clipped to [-eps, eps] per coordinate.
* FGSM: l-inf PGD with one step of size eps.

The default step size is 2.5 * eps / steps. Inputs are points on the sphere, not pixels: no
clipping to [0, 1]. Gradients come from an engine (``sparseadv.engines``), dense by default, so
the same attack code runs on the dense, tree and certified engines.

The loop is public: ``perturb`` is the complete attack (it starts an iteration on the engine),
``run`` the loop alone, for a caller that manages the iteration (the trainer, docs/design.md
§6): it asks the engine for the input gradient at the points after k steps with
``pass_index=k``, and keeps every point inside the ball of ``threat_model``.
"""
import numbers

import numpy as np

from ._validation import check_bool, check_positive_int, check_real, check_seed, check_Xy
from .errors import DivergenceError, InputError
from .engines import make_engine
from .engines.base import ThreatModel, fix_extreme_norms
from .losses import get_loss


def _check_norm(norm):
    if isinstance(norm, str):
        key = norm.lower().lstrip("l")
        if key in ("2",):
            return 2
        if key in ("inf", "infinity"):
            return np.inf
    elif isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        if norm == 2:
            return 2
        if norm == np.inf:
            return np.inf
    raise InputError(f"norm must be 2 or numpy.inf (or 'l2' / 'linf'), got {norm!r}")


def _row_norms(A):
    """(l2 norm of each row of A, ids of the rows that needed scaling or None): numpy's bits
    for rows of ordinary size, a scaled computation where the squares could underflow or
    overflow (``engines.base.fix_extreme_norms``)."""
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(A, axis=1)
    return norms, fix_extreme_norms(A, norms)


class PGD:
    """Projected gradient descent attack on each example's loss (0.5 (f(x) - y)^2 by default).

    Parameters
    ----------
    eps : float >= 0
        Radius of the perturbation ball.
    steps : int >= 1
        Number of gradient steps K.
    step_size : float > 0, optional
        Step length alpha; default 2.5 * eps / steps.
    norm : 2 or numpy.inf
        Geometry of the ball and of the step.
    random_start : bool
        Start from a uniformly random point of the ball instead of the clean point.
    seed : int or numpy.random.Generator, optional
        Randomness of ``random_start``; the same seed gives the same bits.
    loss : "squared", "logistic" or a ``sparseadv.losses.Loss``
        The loss each step ascends, unless ``run``/``perturb`` are given another (the trainer
        passes its own).
    """

    def __init__(self, eps, steps, step_size=None, norm=2, random_start=False, seed=None,
                 loss="squared"):
        self.eps = check_real("eps", eps, low=0.0)
        self.steps = check_positive_int("steps", steps)
        if step_size is None:
            self.step_size = 2.5 * self.eps / self.steps    # Python floats: inf, no error
            name = "eps"
        else:
            self.step_size = check_real("step_size", step_size, low=0.0, low_inclusive=False)
            name = "step_size"
        if not np.isfinite(self.eps + self.step_size):
            raise InputError(f"{name} is too large: eps + step_size must stay finite (a "
                             f"perturbation plus one step), got eps={self.eps:g}, "
                             f"step_size={self.step_size:g}")
        self.norm = _check_norm(norm)
        self.random_start = check_bool("random_start", random_start)
        self.seed = check_seed(seed)
        self._rng = np.random.default_rng(self.seed)
        self.loss = get_loss(loss)

    def __repr__(self):
        norm = "inf" if self.norm == np.inf else "2"
        return (f"{type(self).__name__}(eps={self.eps:g}, steps={self.steps}, "
                f"step_size={self.step_size:g}, norm={norm}, random_start={self.random_start})")

    def _random_state(self):
        """The state of the random start's generator (None without random start), so that a
        caller can undo an attack that did not complete (the trainer's all-or-nothing step)."""
        return self._rng.bit_generator.state if self.random_start else None

    def _set_random_state(self, state):
        if state is not None:
            self._rng.bit_generator.state = state

    def _random_delta(self, n, d):
        if self.norm == np.inf:
            return self._rng.uniform(-self.eps, self.eps, size=(n, d))
        g = self._rng.standard_normal((n, d))
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), np.finfo(float).tiny)
        radius = self.eps * self._rng.random(n) ** (1.0 / d)
        return g * radius[:, None]

    def _project(self, delta):
        if self.norm == np.inf:
            np.clip(delta, -self.eps, self.eps, out=delta)
            return delta
        length, _ = _row_norms(delta)
        over = length > self.eps
        if over.any():
            delta[over] *= (self.eps / length[over])[:, None]
        return delta

    @property
    def threat_model(self):
        """The ThreatModel of this attack (what an engine is told once per iteration)."""
        return ThreatModel(eps=self.eps, norm=self.norm, steps=self.steps,
                           step_size=self.step_size, random_start=self.random_start)

    def perturb(self, net, X, y, engine="dense", loss=None, **engine_options):
        """The adversarial points x_i + delta_i, shape (n, d); X and y are not modified.

        ``engine`` computes the gradients: a name of ``sparseadv.engines.ENGINES`` (built for
        ``net`` with ``engine_options``; None means "dense") or an engine bound to ``net``.
        ``loss`` (default: the attack's) is the loss ascended. Starts an iteration on the
        engine (``begin_iteration``) and runs the attack loop (``run``)."""
        X, y = check_Xy(X, y, net.d)
        loss = self.loss if loss is None else get_loss(loss)
        loss.check_labels(y)
        engine = make_engine("dense" if engine is None else engine, net, **engine_options)
        engine.begin_iteration(X, y, self.threat_model)
        return self.run(X, y, engine, loss)

    def run(self, X, y, engine, loss=None):
        """The attack loop on validated float64 (X, y), for a caller that has started the
        iteration with ``engine.begin_iteration(X, y, self.threat_model)``: K input gradients
        of ``loss`` (default: the attack's) at the points after k steps, k = 0 .. K - 1, each
        from ``engine.input_direction(X + delta_k, pass_index=k)`` scaled by the loss's
        derivative (``engine.input_gradient`` for the squared loss); returns the points after
        K steps, X + delta_K (pass K of the iteration)."""
        loss = self.loss if loss is None else get_loss(loss)
        n, d = X.shape
        delta = self._random_delta(n, d) if self.random_start else np.zeros((n, d))
        for k in range(self.steps):
            G, _f = loss.input_gradient(engine, X + delta, y, pass_index=k)
            if not np.isfinite(G).all():
                raise DivergenceError(
                    f"the input gradient at attack step {k} is not finite: the weights have "
                    "diverged (in training, the learning rate lr is likely too large) or b, "
                    "eps or the data are out of range")
            if self.norm == np.inf:
                delta += self.step_size * np.sign(G)
            else:
                gnorm, extreme = _row_norms(G)
                moving = gnorm > 0
                if extreme is not None:
                    moving[extreme] = False
                    # normalise first there: step_size / gnorm could overflow
                    ext = extreme[gnorm[extreme] > 0]
                    delta[ext] += self.step_size * (G[ext] / gnorm[ext][:, None])
                delta[moving] += (self.step_size / gnorm[moving])[:, None] * G[moving]
            self._project(delta)
        return X + delta


class FGSM(PGD):
    """Fast gradient sign method: l-inf PGD with one step of size eps."""

    def __init__(self, eps, random_start=False, seed=None, loss="squared"):
        super().__init__(eps, steps=1, step_size=None, norm=np.inf,
                         random_start=random_start, seed=seed, loss=loss)
        self.step_size = self.eps

    def __repr__(self):
        return f"FGSM(eps={self.eps:g})"
