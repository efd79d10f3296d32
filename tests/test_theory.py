"""Tests for sparseadv.theory: threshold and firing statistics (against Monte Carlo), the dense
cost formulas, the power-law fits, and argument validation."""
import math

import numpy as np
import pytest

from sparseadv.errors import InputError, InputTypeError
from sparseadv.theory import (
    ExponentFits, PowerLawFit, default_threshold, dense_flops, dense_inner_products,
    expected_fired, fired_bound, fired_prob_bound, fit_exponents, fit_power_law, gaussian_tail,
)


def test_default_threshold_values():
    assert default_threshold(1) == 0.0
    assert default_threshold(4096) == pytest.approx(math.sqrt(0.4 * math.log(4096)), rel=1e-15)
    assert default_threshold(4096) == pytest.approx(1.824036, abs=1e-6)
    # Integral floats (e.g. from np.logspace) are accepted.
    assert default_threshold(22026.0) == default_threshold(22026)
    np.testing.assert_allclose(default_threshold(np.array([1, 100, 10**6])),
                               np.sqrt(0.4 * np.log([1, 100, 10**6])), rtol=1e-15)
    assert isinstance(default_threshold(10), float)


def test_gaussian_tail():
    assert gaussian_tail(0.0) == 0.5
    assert gaussian_tail(1.959963984540054) == pytest.approx(0.025, rel=1e-12)
    # Far tail keeps relative precision (1 - ndtr(t) would be 0 here); Q(30) ~ 4.906e-198.
    assert gaussian_tail(30.0) == pytest.approx(4.906713927148187e-198, rel=1e-10)
    np.testing.assert_allclose(gaussian_tail(np.array([-1.0, 1.0])).sum(), 1.0, rtol=1e-15)


def test_expected_fired_monte_carlo():
    # m = 4096 neurons, w_r ~ N(0, I_d), 200 random unit inputs: count the fired pairs.
    m, d, n_inputs = 4096, 32, 200
    rng = np.random.default_rng(2024)
    W = rng.standard_normal((m, d))
    X = rng.standard_normal((n_inputs, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    b = default_threshold(m)
    fired = (X @ W.T > b).sum(axis=1)
    expect = expected_fired(m)
    p = expect / m
    # The counts share W, so they are not independent across inputs. Given X, the mean count
    # is sum_r f_r with f_r = fraction of inputs neuron r fires on; the f_r are i.i.d. over r,
    # lie in [0, 1] and have mean p = Q(b) (every input has unit norm), so Var(f_r) <= p(1-p)
    # and the mean count has sd <= sqrt(m p (1 - p)) ~ 11.6 around m p ~ 140. With a fixed
    # seed, 4 sd is a safe bound, yet the tail bound m^{4/5} ~ 776 is far outside it.
    sd = math.sqrt(m * p * (1 - p))
    assert abs(fired.mean() - expect) < 4 * sd
    assert expect < fired_bound(m)


def test_expected_fired_norm_and_b():
    m = np.array([16, 1024, 2**20])
    np.testing.assert_allclose(expected_fired(m), m * gaussian_tail(default_threshold(m)))
    assert expected_fired(100, b=0.0) == 50.0
    # Scaling the input by s is the same as dividing the threshold by s.
    assert expected_fired(1000, b=1.5, norm=2.0) == pytest.approx(expected_fired(1000, b=0.75))
    assert isinstance(expected_fired(100), float)


def test_fired_bounds():
    m = np.array([1, 10, 1000, 10**6, 10**9], dtype=float)
    b = default_threshold(m)
    np.testing.assert_allclose(fired_prob_bound(m), np.exp(-b**2 / 2), rtol=1e-12)
    np.testing.assert_allclose(fired_bound(m), m * np.exp(-b**2 / 2), rtol=1e-12)
    np.testing.assert_allclose(fired_bound(m), m ** 0.8, rtol=1e-15)
    assert np.all(expected_fired(m.astype(int)) <= fired_bound(m))


def test_dense_counts():
    assert dense_flops(10, 20, 30, 3) == 16 * 10 * 20 * 30
    assert dense_flops(10, 20, 30, 0) == 4 * 10 * 20 * 30
    assert dense_inner_products(10, 20, 3) == 10 * 20 * 5
    # Exact Python ints, no int64 overflow.
    assert dense_flops(2**40, 2**20, 2**10, 1) == 2**73


def test_fit_power_law_exact():
    x = np.array([1.0, 2, 4, 8, 16, 32])
    y = 3.0 * x ** 1.7
    fit = fit_power_law(x, y)
    assert isinstance(fit, PowerLawFit)
    assert fit.exponent == pytest.approx(1.7, rel=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0), rel=1e-12)
    assert fit.n == 6 and fit.stderr < 1e-12
    assert fit.ci_low <= fit.exponent <= fit.ci_high
    np.testing.assert_allclose(fit.predict(x), y, rtol=1e-12)


def test_fit_power_law_two_points():
    fit = fit_power_law([1, 10], [2, 20])
    assert fit.exponent == pytest.approx(1.0) and fit.n == 2
    assert math.isnan(fit.stderr) and math.isnan(fit.ci_low) and math.isnan(fit.ci_high)


def test_fit_power_law_noisy_interval_covers():
    rng = np.random.default_rng(0)
    x = np.logspace(1, 4, 12)
    covered = 0
    for _ in range(200):
        y = 0.5 * x ** 0.8 * np.exp(0.1 * rng.standard_normal(x.size))
        fit = fit_power_law(x, y)
        covered += fit.ci_low <= 0.8 <= fit.ci_high
    # Nominal 95%: 200 trials give 190 +- 3; 180 is > 3 sd below.
    assert covered >= 180
    fit = fit_power_law(x, 0.5 * x ** 0.8 * np.exp(0.1 * rng.standard_normal(x.size)))
    assert fit.ci_low <= 0.8 <= fit.ci_high


def test_fit_exponents_product_grid():
    ms, ns, ds = [256, 512, 1024, 2048], [100, 200, 400], [8, 16, 32]
    M, N, D = (a.ravel() for a in np.meshgrid(ms, ns, ds, indexing="ij"))
    v = 4.0 * M * N * D
    fits = fit_exponents({"m": M, "n": N, "d": D}, v)
    assert isinstance(fits, ExponentFits)
    assert set(fits) == {"m", "n", "d"} and fits.dropped == ()
    for k in "mnd":
        assert fits[k].exponent == pytest.approx(1.0, abs=1e-10)
        assert fits[k].n == M.size
    assert fits.intercept == pytest.approx(math.log(4.0), abs=1e-9)
    assert fits.exponents() == pytest.approx({"m": 1.0, "n": 1.0, "d": 1.0})


def test_fit_exponents_noisy_and_dropped():
    rng = np.random.default_rng(1)
    M, N = (a.ravel() for a in np.meshgrid([1e3, 2e3, 4e3, 8e3], [50, 100, 200, 400]))
    v = M ** 0.8 * N * np.exp(0.05 * rng.standard_normal(M.size))
    fits = fit_exponents({"m": M, "n": N, "d": np.full(M.size, 16)}, v)
    assert "d" not in fits and fits.dropped == ("d",)
    assert fits["m"].ci_low <= 0.8 <= fits["m"].ci_high
    assert fits["n"].ci_low <= 1.0 <= fits["n"].ci_high
    # Agrees with the one-variable fit when only one variable varies.
    x = np.array([1.0, 3, 9, 27])
    one = fit_exponents({"m": x, "n": np.ones(4)}, 2 * x ** 1.5)
    ref = fit_power_law(x, 2 * x ** 1.5)
    assert one["m"].exponent == pytest.approx(ref.exponent)
    assert one["m"].intercept == pytest.approx(ref.intercept)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("fn", [default_threshold, fired_bound, fired_prob_bound,
                                expected_fired])
@pytest.mark.parametrize("bad", [0, -5, 2.5, True, np.array([4, 0]), float("nan"), "8"])
def test_bad_m(fn, bad):
    exc = InputTypeError if isinstance(bad, (bool, str)) else InputError
    with pytest.raises(exc, match=r"\bm must be"):
        fn(bad)


@pytest.mark.parametrize("norm", [0.0, -1.0, float("inf")])
def test_bad_norm(norm):
    with pytest.raises(ValueError, match="norm"):
        expected_fired(100, norm=norm)


def test_bad_b():
    with pytest.raises(InputError, match=r"\bb must"):
        expected_fired(100, b=float("nan"))
    with pytest.raises(InputTypeError, match=r"\bb must"):
        expected_fired(100, b="x")
    with pytest.raises(InputTypeError, match=r"\bt must"):
        gaussian_tail([1, [2, 3]])
    with pytest.raises(InputTypeError, match=r"\bnorm must"):
        expected_fired(100, norm="big")


@pytest.mark.parametrize("kwargs,name,exc", [
    (dict(m=0, n=1, d=1, steps=1), "m", InputError),
    (dict(m=1, n=-1, d=1, steps=1), "n", InputError),
    (dict(m=1, n=1, d=True, steps=1), "d", InputTypeError),
    (dict(m=1, n=1, d=1, steps=-1), "steps", InputError),
    (dict(m=1, n=1, d=1, steps=1.5), "steps", InputTypeError),
])
def test_bad_dense_flops(kwargs, name, exc):
    with pytest.raises(exc, match=rf"\b{name} must"):
        dense_flops(**kwargs)


def test_bad_dense_inner_products():
    with pytest.raises(ValueError, match=r"\bm must"):
        dense_inner_products(0, 1, 1)
    with pytest.raises(InputTypeError, match=r"\bn must"):
        dense_inner_products(1, 2.0, 1)
    with pytest.raises(ValueError, match=r"\bsteps must"):
        dense_inner_products(1, 1, -2)


def test_bad_fit_power_law():
    with pytest.raises(ValueError, match=r"\bx must"):
        fit_power_law([1, 0, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"\by must"):
        fit_power_law([1, 2, 3], [1, -2, 3])
    with pytest.raises(ValueError, match=r"\by must"):
        fit_power_law([1, 2, 3], [1, np.nan, 3])
    with pytest.raises(ValueError, match=r"\bx must have at least 2"):
        fit_power_law([1.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([2, 2, 2], [1, 2, 3])


def test_bad_fit_exponents():
    with pytest.raises(InputError, match="sizes"):
        fit_exponents({}, [1, 2])
    with pytest.raises(InputTypeError, match="sizes must be a dict"):
        fit_exponents([[1, 2]], [1, 2])
    with pytest.raises(InputTypeError, match=r"\bvalues must"):
        fit_exponents({"m": [1, 2]}, ["a", "b"])
    with pytest.raises(ValueError, match=r"sizes\['m'\]"):
        fit_exponents({"m": [1, 0, 3]}, [1, 2, 3])
    with pytest.raises(ValueError, match=r"sizes\['n'\]"):
        fit_exponents({"n": [1, 2]}, [1, 2, 3])
    with pytest.raises(ValueError, match="values"):
        fit_exponents({"m": [1, 2, 3]}, [1, 0, 3])
    with pytest.raises(ValueError, match="collinear"):
        fit_exponents({"m": [1, 2, 4, 8], "n": [2, 4, 8, 16]}, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="values"):
        fit_exponents({"m": [1, 2], "n": [3, 5]}, [1, 2])
