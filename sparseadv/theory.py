"""Closed-form quantities from the paper, and the fits that compare measurements against them.

The sublinear algorithm rests on one fact: with Gaussian weights ``w_r ~ N(0, I_d)`` and the
shifted-ReLU threshold ``b = sqrt(0.4 ln m)`` (docs/design.md §2), a unit-norm input fires
(``<w_r, x> > b``) only ``m Q(b) <= m^{4/5}`` of the ``m`` neurons in expectation, where ``Q``
is the standard normal upper tail. This module provides

- the threshold and firing statistics (:func:`default_threshold`, :func:`gaussian_tail`,
  :func:`expected_fired`, :func:`fired_bound`, :func:`fired_prob_bound`),
- the cost of the dense baseline iteration that the sparse engines are measured against
  (:func:`dense_flops`, :func:`dense_inner_products`), matching the work counters of
  docs/design.md §4,
- log-log least-squares fits that turn measured counts or times into scaling exponents with
  confidence intervals (:func:`fit_power_law`, :func:`fit_exponents`).

Everything here is pure numpy/scipy; nothing needs the compiled extension.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from .errors import InputError, InputTypeError

__all__ = [
    "default_threshold", "gaussian_tail", "expected_fired", "fired_bound", "fired_prob_bound",
    "dense_flops", "dense_inner_products", "PowerLawFit", "ExponentFits", "fit_power_law",
    "fit_exponents",
]


# --------------------------------------------------------------------------- validation

def _as_int_array(name, value, minimum):
    """Validate integer-valued input (scalar or array) >= minimum; returns (array, is_scalar).

    Integral floats such as ``4096.0`` (e.g. from ``np.logspace``) are accepted; bools are not.
    """
    if isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged lists and the like
        raise InputTypeError(f"{name} must be an integer >= {minimum} or an array of them, "
                             f"got {value!r}") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise InputTypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))
                     or np.any(arr < minimum)):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return arr, arr.ndim == 0


def _float_array(name, value):
    """``value`` as a float64 array; text, objects and ragged lists are a wrong type."""
    if isinstance(value, (str, bytes)):
        raise InputTypeError(f"{name} must be a real number or an array of them, got {value!r}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InputTypeError(f"{name} must be a real number or an array of them, "
                             f"got {value!r}") from None


def _out(arr, scalar):
    return float(arr) if scalar else arr


def _exact_int(name, value, minimum):
    """A Python int (exact, unbounded) for the counting formulas."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- firing

def default_threshold(m):
    """The paper's shift ``b = sqrt(0.4 ln m)``.

    Parameters
    ----------
    m : int or array_like of int
        Width (number of hidden neurons), ``m >= 1``; ``m = 1`` gives ``b = 0``.

    Returns
    -------
    float or ndarray
    """
    arr, scalar = _as_int_array("m", m, 1)
    return _out(np.sqrt(0.4 * np.log(arr.astype(np.float64))), scalar)


def gaussian_tail(t):
    """Standard normal upper tail ``Q(t) = P(N(0, 1) > t)``.

    Computed as ``ndtr(-t)``, which keeps full relative precision for large ``t`` (unlike
    ``1 - ndtr(t)``). Vectorised.

    Parameters
    ----------
    t : float or array_like

    Returns
    -------
    float or ndarray
    """
    arr = _float_array("t", t)
    return _out(special.ndtr(-arr), arr.ndim == 0)


def expected_fired(m, b=None, norm=1.0):
    """Expected number of neurons that fire on one input, at Gaussian initialisation.

    For ``w_r ~ N(0, I_d)`` and an input of l2 norm ``norm``, ``<w_r, x> ~ N(0, norm^2)``,
    so each neuron fires (``<w_r, x> > b``) with probability ``Q(b / norm)`` and the expected
    count is ``m Q(b / norm)``. Vectorised over ``m`` (and ``b``).

    Parameters
    ----------
    m : int or array_like of int
        Width, ``m >= 1``.
    b : float or array_like, optional
        Threshold; defaults to :func:`default_threshold` of ``m``.
    norm : float, default 1.0
        l2 norm of the input (> 0). Adversarial points can leave the sphere, hence the knob.

    Returns
    -------
    float or ndarray
    """
    arr, scalar = _as_int_array("m", m, 1)
    norm_ = _float_array("norm", norm)
    if not np.all(np.isfinite(norm_)) or np.any(norm_ <= 0):
        raise InputError(f"norm must be positive and finite, got {norm!r}")
    if b is None:
        b_ = np.sqrt(0.4 * np.log(arr.astype(np.float64)))
    else:
        b_ = _float_array("b", b)
        if np.any(np.isnan(b_)):
            raise InputError(f"b must be a real number, got {b!r}")
        scalar = scalar and b_.ndim == 0
    out = arr * special.ndtr(-b_ / norm_)
    return _out(out, scalar and norm_.ndim == 0)


def fired_bound(m):
    """The paper's bound ``m^{4/5}`` on neurons fired per unit-norm input.

    With ``b = sqrt(0.4 ln m)``, ``exp(-b^2 / 2) = exp(-0.2 ln m) = m^{-1/5}``; the Gaussian
    tail satisfies ``Q(b) <= exp(-b^2 / 2)`` for ``b >= 0``, so the expected number fired is
    ``m Q(b) <= m * m^{-1/5} = m^{4/5}``, and a Chernoff bound makes it ``O(m^{4/5})`` with
    high probability.

    Parameters
    ----------
    m : int or array_like of int
        Width, ``m >= 1``.

    Returns
    -------
    float or ndarray
    """
    arr, scalar = _as_int_array("m", m, 1)
    return _out(arr.astype(np.float64) ** 0.8, scalar)


def fired_prob_bound(m):
    """Per-neuron firing probability bound ``exp(-b^2 / 2) = m^{-1/5}``, ``b = sqrt(0.4 ln m)``.

    This is the Chernoff-style tail ``Q(b) <= exp(-b^2 / 2)`` used in the proof.

    Parameters
    ----------
    m : int or array_like of int
        Width, ``m >= 1``.

    Returns
    -------
    float or ndarray
    """
    arr, scalar = _as_int_array("m", m, 1)
    return _out(arr.astype(np.float64) ** -0.2, scalar)


# --------------------------------------------------------------------------- dense cost

def dense_flops(m, n, d, steps):
    """Floating-point operations of one dense adversarial training iteration.

    Each of the ``steps`` attack steps is a forward pass (``W x``: ``2mnd``) and an input
    gradient (``W^T (...)``: ``2mnd``); the weight step is a forward pass at the perturbed
    points (``2mnd``) and the weight gradient (``2mnd``). Total ``4 m n d (steps + 1)``, e.g.
    ``16 m n d`` for 3 attack steps. Lower-order terms (activations, the norm in the step) are
    left out.

    Parameters
    ----------
    m, n, d : int
        Width, number of points, dimension (>= 1).
    steps : int
        Attack steps, ``>= 0`` (0 is plain training).

    Returns
    -------
    int
        Exact (Python int, no overflow).
    """
    m = _exact_int("m", m, 1)
    n = _exact_int("n", n, 1)
    d = _exact_int("d", d, 1)
    steps = _exact_int("steps", steps, 0)
    return 4 * m * n * d * (steps + 1)


def dense_inner_products(m, n, steps):
    """Inner products ``<w_r, x>`` the dense engine evaluates in one iteration.

    ``steps`` attack passes over all ``m n`` pairs, one forward pass at the perturbed points
    for the loss/residuals, and one recomputation inside the blocked weight-gradient pass
    (which re-derives the firing pattern block by block instead of storing an ``m x n``
    mask): ``m n (steps + 2)``. This is the number the sparse engines' inner-product counters
    (docs/design.md §4) are compared against.

    Parameters
    ----------
    m, n : int
        Width and number of points (>= 1).
    steps : int
        Attack steps, ``>= 0``.

    Returns
    -------
    int
    """
    m = _exact_int("m", m, 1)
    n = _exact_int("n", n, 1)
    steps = _exact_int("steps", steps, 0)
    return m * n * (steps + 2)


# --------------------------------------------------------------------------- fits

class PowerLawFit(NamedTuple):
    """Result of a log-log fit ``log y = exponent log x + intercept``.

    ``stderr``, ``ci_low``, ``ci_high`` (95% t-interval of the exponent) are nan when there
    are no residual degrees of freedom. ``n`` is the number of points used.
    """

    exponent: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int

    def predict(self, x):
        """Fitted ``exp(intercept) x^exponent``."""
        return np.exp(self.intercept) * np.asarray(x, dtype=np.float64) ** self.exponent


def _positive_1d(name, values):
    arr = _float_array(name, values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"{name} must contain only positive finite values")
    return arr


def _t_interval(estimate, stderr, dof):
    if dof <= 0 or not np.isfinite(stderr):
        return np.nan, np.nan
    half = stats.t.ppf(0.975, dof) * stderr
    return estimate - half, estimate + half


def fit_power_law(x, y):
    """Least-squares fit of ``log y = alpha log x + c``.

    Parameters
    ----------
    x, y : array_like of positive floats, same length >= 2
        ``x`` must take at least two distinct values.

    Returns
    -------
    PowerLawFit
        Exponent ``alpha``, intercept ``c``, the exponent's standard error and 95%
        t-interval (``n - 2`` degrees of freedom; nan when ``n = 2``).
    """
    x = _positive_1d("x", x)
    y = _positive_1d("y", y)
    if x.size != y.size:
        raise InputError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise InputError(f"x must have at least 2 points, got {x.size}")
    lx, ly = np.log(x), np.log(y)
    mx = lx.mean()
    sxx = np.sum((lx - mx) ** 2)
    if sxx == 0.0:
        raise InputError("x must contain at least two distinct values")
    alpha = float(np.sum((lx - mx) * (ly - ly.mean())) / sxx)
    c = float(ly.mean() - alpha * mx)
    n = int(x.size)
    dof = n - 2
    if dof > 0:
        rss = float(np.sum((ly - (alpha * lx + c)) ** 2))
        stderr = float(np.sqrt(rss / dof / sxx))
    else:
        stderr = np.nan
    lo, hi = _t_interval(alpha, stderr, dof)
    return PowerLawFit(alpha, c, stderr, float(lo), float(hi), n)


class ExponentFits(Mapping):
    """Result of :func:`fit_exponents`: a read-only mapping ``name -> PowerLawFit``.

    Only variables that vary in the data are keys; each record carries the shared intercept.

    Attributes
    ----------
    intercept : float
        Fitted ``c`` in ``log v = sum_k alpha_k log s_k + c``.
    dropped : tuple of str
        Variables that were constant in the data (absent from the mapping).
    n : int
        Number of observations.
    dof : int
        Residual degrees of freedom (``n`` minus fitted coefficients).
    residual_std : float
        Standard deviation of the log-residuals (nan when ``dof = 0``).
    """

    def __init__(self, fits, intercept, dropped, n, dof, residual_std):
        self._fits = dict(fits)
        self.intercept = intercept
        self.dropped = tuple(dropped)
        self.n = n
        self.dof = dof
        self.residual_std = residual_std

    def __getitem__(self, key):
        return self._fits[key]

    def __iter__(self):
        return iter(self._fits)

    def __len__(self):
        return len(self._fits)

    def exponents(self):
        """``{name: exponent}`` for the fitted variables."""
        return {k: f.exponent for k, f in self._fits.items()}

    def __repr__(self):
        parts = ", ".join(f"{k}={f.exponent:.4g}±{f.stderr:.2g}" for k, f in self._fits.items())
        return (f"ExponentFits({parts}; intercept={self.intercept:.4g}, "
                f"dropped={self.dropped}, n={self.n})")


def fit_exponents(sizes, values):
    """Multivariate power-law fit ``log v = sum_k alpha_k log size_k + c``.

    Used to read scaling exponents in ``m``, ``n`` and ``d`` off a benchmark grid at once.

    Parameters
    ----------
    sizes : dict of str -> array_like of positive numbers
        Usually any subset of ``{"m": ..., "n": ..., "d": ...}``; each array has the length
        of ``values``. Variables constant over the data carry no information about their
        exponent and are dropped (reported in ``dropped``).
    values : array_like of positive floats
        Measurements (times, counts), one per observation.

    Returns
    -------
    ExponentFits
        Mapping ``name -> PowerLawFit`` (exponent, shared intercept, standard error, 95%
        t-interval with ``n - p - 1`` degrees of freedom, ``n``), plus ``intercept``,
        ``dropped``, ``n``, ``dof`` and ``residual_std``.

    Raises
    ------
    InputError (a ValueError)
        On non-positive values, mismatched lengths, too few observations, or when the
        varying variables are collinear in log space (their exponents are not identifiable).
    """
    if not isinstance(sizes, Mapping):
        raise InputTypeError(f"sizes must be a dict of name -> array, got {type(sizes).__name__}")
    if len(sizes) == 0:
        raise InputError("sizes must be a non-empty dict of name -> array")
    v = _positive_1d("values", values)
    names, cols, dropped = [], [], []
    for name, arr in sizes.items():
        s = _positive_1d(f"sizes[{name!r}]", arr)
        if s.size != v.size:
            raise InputError(f"sizes[{name!r}] has length {s.size}, values has {v.size}")
        ls = np.log(s)
        if np.all(ls == ls[0]):
            dropped.append(name)
        else:
            names.append(name)
            cols.append(ls)
    n = int(v.size)
    p = len(names) + 1
    if n < p:
        raise InputError(f"values has {n} observations, fewer than the {p} coefficients")
    A = np.column_stack(cols + [np.ones(n)])
    lv = np.log(v)
    coef, _, rank, _ = np.linalg.lstsq(A, lv, rcond=None)
    if rank < p:
        raise InputError(f"the varying sizes {names} are collinear in log space; "
                         f"their exponents cannot be separated")
    dof = n - p
    if dof > 0:
        resid = lv - A @ coef
        s2 = float(resid @ resid) / dof
        # Covariance of the coefficients: s^2 (A^T A)^{-1}, via pinv for numerical safety.
        cov = s2 * np.linalg.pinv(A.T @ A)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        residual_std = float(np.sqrt(s2))
    else:
        se = np.full(p, np.nan)
        residual_std = np.nan
    intercept = float(coef[-1])
    fits = {}
    for k, name in enumerate(names):
        lo, hi = _t_interval(float(coef[k]), float(se[k]), dof)
        fits[name] = PowerLawFit(float(coef[k]), intercept, float(se[k]), float(lo), float(hi), n)
    return ExponentFits(fits, intercept, dropped, n, dof, residual_std)
