"""Measuring robustness (docs/design.md §7): strong evaluation attacks, robust accuracy, the paper's
robust loss L_A and the exact ceiling on robust accuracy of a finite labelled set.

The training attack (``sparseadv.PGD``) ascends the squared loss 0.5 (f - y)^2. That is the
paper's inner maximisation, not an evaluation: for a point with y·f > 1 the ascent only raises
y·f, so it can never flip that point. Here an evaluation *descends the margin* y·f(x~) over the
ball, keeps the best (lowest-margin) point of every trajectory, and runs several trajectories:
from the clean point and from random points of the ball, each with more than one step size.

* :func:`margin_pgd` — per-example worst margin and the point reaching it.
* :func:`evaluate` / :func:`robust_accuracy` — a point counts robust only when no member of an
  ensemble flips it: margin PGD (restarts x step sizes) and the training attack as one member.
* :func:`robust_loss` — L_A(W) = (1/(2n)) sum_i (f(A(x_i)) - y_i)^2 for an attack A.
* :func:`accuracy_ceiling` — the best robust accuracy any classifier can reach on (X, y).
* :func:`robustness_curves` — all of the above over a grid of radii for several networks.

A point is *flipped* when the network's prediction (+1 where f >= 0, else -1, the convention of
every accuracy in sparseadv) differs from y: margin y·f < 0, or y·f = 0 with y = -1.
Gradients come from the network's dense kernel (``_core.dense_forward`` returns
grad_x f = m^{-1/2} sum_r a_r 1[<w_r,x> > b] w_r for all points at once), so the margin gradient
y·grad_x f costs one dense pass per step and there is no Python loop over points or neurons.
"""
import numbers
from dataclasses import dataclass, field

import numpy as np

from ._validation import (check_allocation, check_matrix, check_positive_int, check_real,
                          check_seed, check_Xy)
from .attacks import PGD, _check_norm
from .errors import InputError, InputTypeError
from .losses import get_loss


def _check_net(net):
    from .network import ShiftedReLUNet
    if not isinstance(net, ShiftedReLUNet):
        raise InputTypeError(f"net must be a ShiftedReLUNet, got {type(net).__name__}")
    return net


def _check_labels(y):
    if not np.all((y == 1.0) | (y == -1.0)):
        raise InputError("y must contain only the labels -1 and +1")
    return y


def flipped(margin, y):
    """True where the prediction at a point of margin y·f differs from y (sign(0) = +1)."""
    return (margin < 0) | ((margin == 0) & (y < 0))


def _margin_and_grad(net, Z, y):
    f, H, _ = net._pass(Z, want_h=True)
    H *= y[:, None]
    return y * f, H


def _random_delta(rng, n, d, eps, norm):
    if norm == np.inf:
        return rng.uniform(-eps, eps, size=(n, d))
    g = rng.standard_normal((n, d))
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), np.finfo(float).tiny)
    return g * (eps * rng.random(n) ** (1.0 / d))[:, None]


def _project(delta, eps, norm):
    if norm == np.inf:
        return np.clip(delta, -eps, eps, out=delta)
    length = np.linalg.norm(delta, axis=1)
    over = length > eps
    delta[over] *= (eps / length[over])[:, None]
    return delta


def _step_sizes(eps, steps, step_sizes):
    if step_sizes is None:
        return (2.5 * eps / steps, 0.25 * eps)
    if isinstance(step_sizes, numbers.Real):
        step_sizes = (step_sizes,)
    try:
        out = tuple(check_real("step_sizes", s, low=0.0, low_inclusive=False) for s in step_sizes)
    except TypeError:
        raise InputTypeError(f"step_sizes must be a positive number or a sequence of them, "
                             f"got {step_sizes!r}") from None
    if not out:
        raise InputError("step_sizes must hold at least one step size")
    return out


@dataclass
class MarginAttackResult:
    """What :func:`margin_pgd` found for each example.

    margin : (n,) lowest y·f(x~) over every iterate of every trajectory (the clean point too).
    points : (n, d) the point x~ reaching that margin, inside the ball around x.
    runs : number of trajectories per example (starts x step sizes).
    """
    margin: np.ndarray
    points: np.ndarray
    runs: int


def margin_pgd(net, X, y, eps, norm=2, steps=50, restarts=1, step_sizes=None, seed=None):
    """Margin PGD: minimise y·f(x~) over the ball of radius ``eps`` around each row of X.

    Trajectories: one from the clean point and ``restarts`` from uniform random points of the
    ball, each run once with every step size (default ``(2.5 eps / steps, eps / 4)``: a fine
    and a coarse one). l2: delta -= alpha g/||g||_2; l-inf: delta -= alpha sign(g), with
    g = y·grad_x f, then projection onto the ball. The best point of each trajectory is kept
    (not the last iterate), and the best over trajectories is returned.

    Returns a :class:`MarginAttackResult`. X, y are not modified; the same seed gives the same
    bits.
    """
    net = _check_net(net)
    X, y = check_Xy(X, y, net.d)
    y = _check_labels(y)
    eps = check_real("eps", eps, low=0.0)
    norm = _check_norm(norm)
    steps = check_positive_int("steps", steps)
    if isinstance(restarts, bool) or not isinstance(restarts, numbers.Integral) or restarts < 0:
        raise InputError(f"restarts must be a non-negative integer, got {restarts!r}")
    alphas = _step_sizes(eps, steps, step_sizes)
    rng = np.random.default_rng(check_seed(seed))
    n, d = X.shape
    check_allocation("X", 4 * X.nbytes)
    best_m, _ = _margin_and_grad(net, X, y)
    best_x = X.copy()
    runs = 0
    if eps == 0.0:
        return MarginAttackResult(best_m, best_x, 1)
    starts = [np.zeros((n, d))] + [_random_delta(rng, n, d, eps, norm) for _ in range(restarts)]
    for delta0 in starts:
        for alpha in alphas:
            runs += 1
            delta = delta0.copy()
            for k in range(steps + 1):
                Z = X + delta
                marg, G = _margin_and_grad(net, Z, y)
                better = marg < best_m
                best_m[better] = marg[better]
                best_x[better] = Z[better]
                if k == steps:
                    break
                if norm == np.inf:
                    delta -= alpha * np.sign(G)
                else:
                    gn = np.linalg.norm(G, axis=1)
                    moving = gn > 0
                    delta[moving] -= (alpha / gn[moving])[:, None] * G[moving]
                _project(delta, eps, norm)
    return MarginAttackResult(best_m, best_x, runs)


def _training_attack(eps, norm, train_attack, loss=None):
    """The training-attack member: ``train_attack``, or ``PGD(eps, 10, norm)`` ascending
    ``loss`` (default squared)."""
    if train_attack is None:
        return PGD(eps, steps=10, norm=norm, loss="squared" if loss is None else loss)
    if not isinstance(train_attack, PGD):
        raise InputTypeError(f"train_attack must be a sparseadv PGD or FGSM attack, "
                             f"got {type(train_attack).__name__}")
    if train_attack.eps != eps or train_attack.norm != norm:
        raise InputError(f"train_attack must attack the same ball (eps {eps:g}, norm {norm}), "
                         f"got {train_attack!r}")
    return train_attack


@dataclass
class RobustEvaluation:
    """The ensemble's verdict per example (:func:`evaluate`).

    robust : (n,) bool, no member flipped the point (clean misclassified points are not robust).
    margin : (n,) the lowest margin y·f any member reached; points : (n, d) where.
    flipped_by : member name -> (n,) bool, the points that member flipped on its own.
    """
    eps: float
    norm: float
    robust: np.ndarray
    margin: np.ndarray
    points: np.ndarray
    flipped_by: dict = field(default_factory=dict)

    @property
    def accuracy(self):
        return float(np.mean(self.robust))

    def member_accuracy(self, name):
        """Robust accuracy were ``name`` the only attack (an upper bound of the ensemble's)."""
        return float(np.mean(~self.flipped_by[name]))


def evaluate(net, X, y, eps, norm=2, steps=50, restarts=4, step_sizes=None, train_attack=None,
             seed=None, loss=None):
    """Run the ensemble on (X, y) at radius ``eps``; returns a :class:`RobustEvaluation`.

    Members: ``"margin"`` (:func:`margin_pgd` with ``steps``, ``restarts``, ``step_sizes`` and
    ``seed``) and the training attack, named after the loss it ascends (``"squared_loss"`` or
    ``"logistic_loss"``): ``train_attack``, default ``PGD(eps, 10, norm=norm)``, ascending
    ``loss`` (the loss the model was trained with; default: the attack's own, squared unless
    built otherwise); its last point is checked. A point is robust only when it is
    classified correctly and neither member flips it. The default of 4 restarts (10 trajectories
    per point) is where, on the cross-check problem of ``tests/test_torch_crosscheck.py``, more
    restarts or steps stopped finding new flips; ART's PGD found one flip that 2 restarts missed.
    """
    net = _check_net(net)
    X, y = check_Xy(X, y, net.d)
    y = _check_labels(y)
    eps = check_real("eps", eps, low=0.0)
    norm = _check_norm(norm)
    res = margin_pgd(net, X, y, eps, norm=norm, steps=steps, restarts=restarts,
                     step_sizes=step_sizes, seed=seed)
    flips = {"margin": flipped(res.margin, y)}
    margin, points = res.margin.copy(), res.points.copy()
    attack = _training_attack(eps, norm, train_attack, loss)
    loss = attack.loss if loss is None else get_loss(loss)
    Xa = attack.perturb(net, X, y, loss=loss)
    ma = y * net.forward(Xa)
    member = f"{loss.name}_loss"
    flips[member] = flipped(ma, y)
    lower = ma < margin
    margin[lower], points[lower] = ma[lower], Xa[lower]
    robust = ~(flips["margin"] | flips[member])
    return RobustEvaluation(eps, norm, robust, margin, points, flips)


def robust_accuracy(net, X, y, eps, norm=2, **options):
    """Fraction of points that no attack of the ensemble flips (see :func:`evaluate`)."""
    return evaluate(net, X, y, eps, norm=norm, **options).accuracy


def robust_loss(net, X, y, attack, loss=None):
    """The robust loss L_A(W) = (1/n) sum_i loss(f(W, A(x_i)), y_i) for the attack A (a
    ``sparseadv.PGD``; ``PGD(0, 1)`` gives the clean loss) ascending ``loss`` (default: the
    attack's own). For the squared loss, the paper's (1/(2n)) sum_i (f(W, A(x_i)) - y_i)^2."""
    net = _check_net(net)
    X, y = check_Xy(X, y, net.d)
    if not isinstance(attack, PGD):
        raise InputTypeError(f"attack must be a sparseadv PGD or FGSM attack, "
                             f"got {type(attack).__name__}")
    loss = attack.loss if loss is None else get_loss(loss)
    return loss.mean(net.forward(attack.perturb(net, X, y, loss=loss)), y)


def conflict_graph(X, y, eps, norm=2):
    """Biadjacency (positives x negatives, CSR) of opposite-label pairs whose closed balls of
    radius eps intersect: distance <= 2 eps in the attack's norm. Also returns the indices of
    the positive and negative rows."""
    import scipy.sparse as sp
    from scipy.spatial.distance import cdist
    pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y < 0)
    check_allocation("X", 8 * pos.size * max(neg.size, 1), "the pairwise distance matrix")
    metric = "chebyshev" if norm == np.inf else "euclidean"
    D = cdist(X[pos], X[neg], metric=metric) if pos.size and neg.size else \
        np.zeros((pos.size, neg.size))
    # a small relative slack so that a pair at exactly 2 eps is not lost to round-off
    return sp.csr_matrix(D <= 2.0 * eps * (1 + 1e-12)), pos, neg


def accuracy_ceiling(X, y, eps, norm=2):
    """The exact best robust accuracy any classifier can reach on the labelled set (X, y).

    Two points of opposite labels whose balls intersect (distance <= 2 eps; for l-inf the cubes
    intersect iff the l-inf distance is <= 2 eps) cannot both be robust; a set of points with no
    such pair can (label +1 the union of its positive balls). The largest such set is a maximum
    independent set of the bipartite conflict graph, of size n - nu with nu a maximum matching
    (König), so the ceiling is (n - nu) / n. nu from
    ``scipy.sparse.csgraph.maximum_bipartite_matching``. Inputs are unconstrained (no clipping
    to a domain), as in every sparseadv attack.
    """
    from scipy.sparse.csgraph import maximum_bipartite_matching
    X = check_matrix("X", X)
    X, y = check_Xy(X, y, X.shape[1])
    y = _check_labels(y)
    eps = check_real("eps", eps, low=0.0)
    norm = _check_norm(norm)
    A, pos, neg = conflict_graph(X, y, eps, norm)
    if A.nnz == 0:
        return 1.0
    match = maximum_bipartite_matching(A, perm_type="column")
    nu = int(np.count_nonzero(match >= 0))
    return (X.shape[0] - nu) / X.shape[0]


def min_opposite_distance(X, y, norm=2):
    """The smallest distance between two points of opposite labels (the data's separation);
    robust accuracy 1 is reachable exactly for eps below half of it."""
    from scipy.spatial.distance import cdist
    X = check_matrix("X", X)
    X, y = check_Xy(X, y, X.shape[1])
    norm = _check_norm(norm)
    pos, neg = y > 0, y < 0
    if not pos.any() or not neg.any():
        return float("inf")
    check_allocation("X", 8 * int(pos.sum()) * int(neg.sum()), "the pairwise distance matrix")
    return float(cdist(X[pos], X[neg], "chebyshev" if norm == np.inf else "euclidean").min())


def robustness_curves(nets, X, y, eps_grid, norm=2, loss_steps=10, loss="squared",
                      **options):
    """Robust accuracy and robust loss against eps for several networks.

    ``nets``: a dict name -> ShiftedReLUNet. Returns a list of rows (dicts) with ``eps``,
    ``model``, ``clean_acc``, ``robust_acc`` (the ensemble), ``robust_acc_margin`` and
    ``robust_acc_<loss>_loss`` (each member alone; ``loss`` is the one the models were trained
    with), ``robust_loss`` (L_A for ``PGD(eps, loss_steps)`` ascending ``loss``) and
    ``ceiling``; ``options`` go to :func:`evaluate`.
    """
    loss = get_loss(loss)
    member = f"{loss.name}_loss"
    if not isinstance(nets, dict) or not nets:
        raise InputTypeError("nets must be a non-empty dict name -> ShiftedReLUNet")
    norm = _check_norm(norm)
    grid = [check_real("eps_grid", e, low=0.0) for e in np.atleast_1d(eps_grid)]
    rows = []
    for eps in grid:
        ceiling = accuracy_ceiling(X, y, eps, norm)
        for name, net in nets.items():
            ev = evaluate(net, X, y, eps, norm=norm, loss=loss, **options)
            rows.append({"eps": eps, "model": name,
                         "clean_acc": float(np.mean(~flipped(y * net.forward(X), y))),
                         "robust_acc": ev.accuracy,
                         "robust_acc_margin": ev.member_accuracy("margin"),
                         f"robust_acc_{member}": ev.member_accuracy(member),
                         "robust_loss": robust_loss(net, X, y, PGD(eps, loss_steps, norm=norm),
                                                    loss),
                         "ceiling": ceiling})
    return rows


__all__ = ["margin_pgd", "MarginAttackResult", "evaluate", "RobustEvaluation",
           "robust_accuracy", "robust_loss", "accuracy_ceiling", "conflict_graph",
           "min_opposite_distance", "robustness_curves", "flipped"]
