"""The certified engine's pass kernel ``_core.nm_pass`` and its float32 screen
(sparseadv/_src/sa_certified.h: the comment above ``sa_pass_args`` is the
contract) against slow, obviously right references:

* "fired" is <w_r, x_i> > b with the score of the canonical float64 dot product (sa_dot), the
  one ``nm_forward`` evaluates for every pair: ``_scores`` below recovers every pair's score
  bit for bit from nm_forward, so states and keep bits are compared exactly, ties included;
* the sums H_i = scale sum a_r w_r, F0_i = scale sum a_r, the counts and f_i = sum scale a_r
  (z - b) over the fired pairs are numpy sums (to round-off), and H is nm_forward's bits;
* tracked passes (deadlines on a clock of the largest steps) are compared after every move with
  a fresh evaluation at the same points, their evaluated counts with the deadlines that were due,
  and every deadline with the margin it certifies (two-sided);
* results do not depend on the thread count nor on the SIMD level (subprocesses).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sparseadv import _core
from sparseadv.errors import InputError, InputTypeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
U = 2.0 ** -24                  # float32 unit round-off
TINY = 2.0 ** -50               # the screen's additive term (sa_simd.h, SA_SCREEN_TINY)


# ----------------------------------------------------------------------------- references

def _nm(M):
    """Neuron-major CSR (cptr, cidx) of a boolean (m, n) pair matrix."""
    cptr = np.concatenate([[0], np.cumsum(M.sum(1))]).astype(np.int64)
    return cptr, np.nonzero(M)[1].astype(np.int32)


def _rows_of(cptr):
    """The neuron of every listed pair."""
    return np.repeat(np.arange(len(cptr) - 1), np.diff(cptr))


def _scores(X, W, cptr, cidx):
    """sa_dot(w_r, x_i) of every listed pair, bit for bit: nm_forward over one pair per point
    (the pair's point copied), a = 1, scale = 1, b = 0, gives f = the score where it is
    positive; the same with -W gives minus the score where it is negative (negating w negates
    every rounded product and sum). The score does not depend on how pairs are grouped."""
    r = _rows_of(cptr)
    nnz = len(cidx)
    Xp = np.ascontiguousarray(X[cidx])
    ones = np.ones(W.shape[0])
    pos, neg = np.empty(nnz), np.empty(nnz)
    with np.errstate(all="ignore"):
        _core.nm_forward(Xp, W, ones, 0.0, 1.0, cptr, np.arange(nnz, dtype=np.int32), pos)
        _core.nm_forward(Xp, -W, ones, 0.0, 1.0, cptr, np.arange(nnz, dtype=np.int32), neg)
    z = np.where(pos > 0, pos, -neg)
    # sanity: the same numbers as numpy's to round-off
    ref = np.einsum("kj,kj->k", W[r], X[cidx])
    mag = np.einsum("kj,kj->k", np.abs(W[r]), np.abs(X[cidx]))
    assert np.all(np.abs(z - ref) <= 1e-13 * mag + 1e-300)
    return z


def _forward(X, W, a, b, scale, cptr, cidx):
    """nm_forward's (f, H, fired, mask)."""
    n, d = X.shape
    f, H = np.empty(n), np.empty((n, d))
    fired, mask = np.empty(n, np.int64), np.empty(len(cidx), np.uint8)
    with np.errstate(all="ignore"):
        _core.nm_forward(X, W, a, b, scale, cptr, cidx, f, H, fired, mask)
    return f, H, fired, mask


def _sums(X, W, a, b, scale, cptr, cidx, z, on):
    """numpy sums over the pairs ``on``: H, F0, counts, f, and per point the magnitudes the
    round-off of H and f is relative to."""
    n, d = X.shape
    r, i = _rows_of(cptr)[on], cidx[on].astype(np.int64)
    c = scale * a[r]
    H = np.zeros((n, d))
    np.add.at(H, i, c[:, None] * W[r])
    F0 = np.bincount(i, c, n)
    cnt = np.bincount(i, minlength=n)
    f = np.bincount(i, c * (z[on] - b), n)
    wn = np.linalg.norm(W[r], axis=1)
    hmag = np.bincount(i, np.abs(c) * wn, n)
    fmag = np.bincount(i, np.abs(c) * (wn * np.linalg.norm(X[i], axis=1) + abs(b)), n)
    return H, F0, cnt, f, hmag, fmag


def _assert_sums(H, F0, cnt, f, ref, rel=1e-12):
    Hr, F0r, cntr, fr, hmag, fmag = ref
    np.testing.assert_array_equal(cnt, cntr)
    assert np.all(np.abs(H - Hr) <= rel * hmag[:, None] + 1e-300)
    assert np.all(np.abs(F0 - F0r) <= rel * np.abs(F0r).max(initial=1.0))
    assert np.all(np.abs(f - fr) <= rel * fmag + 1e-300)


def _screen(W):
    """The screen's factor of every row, c_d (|w|_2 + 2^-50), +inf at or past 2^60 or when
    not finite (sa_screen_row, computed by nm_pass for each row it decides)."""
    with np.errstate(over="ignore", invalid="ignore"):
        big = np.abs(W).max(1) if W.shape[1] else np.zeros(W.shape[0])
        safe = np.where((big > 0) & np.isfinite(big), big, 1.0)
        norm = big * np.linalg.norm(W / safe[:, None], axis=1)
    err = 2.0 * (W.shape[1] + 3) * U * (norm + TINY)
    err[~(norm < 2.0 ** 60)] = np.inf
    return err


def _xmax(X):
    """The screen's bound on the points' norms (max |x_i|_2 + 2^-50; +inf past 2^60)."""
    with np.errstate(all="ignore"):
        top = np.sqrt((X * X).sum(1)).max(initial=0.0)
    return top + TINY if top < 2.0 ** 60 else np.inf


def _clock_up(clock):
    """``clock`` rounded up to float32: a tracked pass evaluates the pairs whose deadline is at
    most this."""
    c = np.float32(clock)
    return np.nextafter(c, np.float32(np.inf)) if float(c) < clock else c


class _Pass:
    """A pair state and its per-point sums, updated by nm_pass."""

    def __init__(self, n, d, nnz, fill=0):
        self.state = np.full(nnz, fill, np.uint8)
        self.H = np.full((n, d), np.nan)
        self.F0 = np.full(n, np.nan)
        self.fired = np.full(n, -5, np.int64)
        self.f = np.full(n, np.nan)
        self.deadline = np.full(nnz, np.nan, np.float32)

    def run(self, X, W, a, b, scale, cptr, cidx, fresh, deadline=False, **kw):
        if deadline:
            kw["deadline"] = self.deadline
        with np.errstate(all="ignore"):
            return _core.nm_pass(X, W, a, b, scale, cptr, cidx, self.state, self.H, self.F0,
                                 self.fired, self.f, fresh, **kw)

    def arrays(self):
        return self.state, self.H, self.F0, self.fired, self.f

    def copy(self):
        other = _Pass.__new__(_Pass)
        other.__dict__ = {k: v.copy() for k, v in self.__dict__.items()}
        return other


def _same(p, q):
    """Bitwise equality of two passes' state and sums (NaN where NaN)."""
    return all(np.array_equal(u, v, equal_nan=u.dtype.kind == "f")
               for u, v in zip(p.arrays(), q.arrays()))


def _problem(m, n, d, kind, seed, density=0.5):
    """Random pairs over l2-like (unit-norm points) or l-inf-like (points in a box) data, with
    neurons without pairs and a point without pairs."""
    rng = np.random.default_rng(seed)
    if kind == "l2":
        X = rng.standard_normal((n, d))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        W = rng.standard_normal((m, d))
    else:
        X = rng.uniform(-1.0, 1.0, (n, d))
        W = rng.standard_normal((m, d)) / np.sqrt(d)
    a = rng.standard_normal(m)
    M = rng.random((m, n)) < density
    M[::7] = False
    M[:, 1] = False
    cptr, cidx = _nm(M)
    return rng, X, W, a, cptr, cidx


# ------------------------------------------------------------------------------ fresh pass

@pytest.mark.parametrize("d", [3, 8, 16, 17, 64, 100])
@pytest.mark.parametrize("kind", ["l2", "linf"])
def test_fresh_pass_against_nm_forward_and_numpy(d, kind):
    """A fresh pass with keep thresholds: bit 0 is nm_forward's mask, bit 1 the exact
    score > keep_thr[r], the counts nm_forward's, H its bits, F0 and f the numpy sums; the
    screen leaves exactly the undecidable pairs to float64; screen or not, run once or
    twice: the same bits. Without keep thresholds bit 1 is left alone."""
    m, n = 300, 90
    rng, X, W, a, cptr, cidx = _problem(m, n, d, kind, seed=10 * d + len(kind))
    nnz, r = len(cidx), _rows_of(cptr)
    b, scale = 0.3, 0.7
    keep = b - 0.5 * rng.random(m)
    keep[::5] = b                                        # keep_thr = b is allowed
    z = _scores(X, W, cptr, cidx)
    fwd_f, fwd_H, fwd_fired, mask = _forward(X, W, a, b, scale, cptr, cidx)
    on = z > b
    np.testing.assert_array_equal(mask, on)             # _scores is nm_forward's definition
    assert 0 < on.sum() < nnz
    ref = _sums(X, W, a, b, scale, cptr, cidx, z, on)
    err = _screen(W)
    e = err[r] * _xmax(X)                               # the screen's band half-width
    runs = {}
    for screen in (True, False):
        for given in (True, False):                     # twice: the same bits
            P = _Pass(n, d, nnz, fill=0xFF)
            ev, ex, flips, kept = P.run(X, W, a, b, scale, cptr, cidx, True, keep_thr=keep,
                                        screen=screen)
            runs[screen, given] = P
            np.testing.assert_array_equal(P.state & 1, on)
            np.testing.assert_array_equal(P.state >> 1, z > keep[r])     # exact, ties too
            assert not (P.state & 1 & ~(P.state >> 1)).any()   # every fired pair kept
            np.testing.assert_array_equal(P.fired, fwd_fired)
            assert np.array_equal(P.H, fwd_H)           # same terms, same order: same bits
            _assert_sums(P.H, P.F0, P.fired, P.f, ref)
            np.testing.assert_allclose(P.f, fwd_f, rtol=1e-12, atol=1e-12)
            assert (ev, flips, kept) == (nnz, 0, int((z > keep[r]).sum()))
            if screen:
                # the screen defers (to float64) every pair its band cannot tell, no other:
                # within e/4 of a threshold surely, beyond 2 e never
                near = lambda h: (np.abs(z - b) <= h * e) | (np.abs(z - keep[r]) <= h * e)
                assert near(0.25).sum() <= ex <= near(2.0).sum()
                assert ex < nnz // 10
            else:
                assert ex == 0
    base = runs[False, True]
    assert all(_same(P, base) for P in runs.values())   # screen or not: bitwise the same
    # without keep thresholds bit 1 is left as it was; the other bits are cleared
    for screen in (True, False):
        P = _Pass(n, d, nnz)
        P.state[:] = rng.integers(0, 256, nnz)
        bit1 = (P.state >> 1) & 1
        ev, ex, flips, kept = P.run(X, W, a, b, scale, cptr, cidx, True, screen=screen)
        np.testing.assert_array_equal(P.state, (bit1 << 1) | on)
        assert (ev, flips, kept) == (nnz, 0, int(bit1.sum()))
        assert np.array_equal(P.H, fwd_H) and np.array_equal(P.f, base.f)


@pytest.mark.parametrize("screen", [True, False])
def test_fresh_pass_over_kept_pairs_only(screen):
    """kept_only: only the pairs with bit 1 are evaluated (the engine's lazy=False passes);
    the others are left as they are and add nothing."""
    m, n, d = 400, 70, 17
    rng, X, W, a, cptr, cidx = _problem(m, n, d, "l2", seed=3)
    nnz, r = len(cidx), _rows_of(cptr)
    b, scale = 0.2, 0.4
    z = _scores(X, W, cptr, cidx)
    kept = rng.random(nnz) < 0.4
    P = _Pass(n, d, nnz)
    P.state[:] = np.where(kept, 2 | rng.integers(0, 2, nnz), rng.integers(0, 2, nnz) << 2)
    before = P.state.copy()
    ev, ex, flips, nk = P.run(X, W, a, b, scale, cptr, cidx, True, kept_only=True,
                              screen=screen)
    assert (ev, flips, nk) == (kept.sum(), 0, kept.sum()) and (ex == 0 or screen)
    np.testing.assert_array_equal(P.state[~kept], before[~kept])
    np.testing.assert_array_equal(P.state[kept], 2 | (z[kept] > b))
    _assert_sums(P.H, P.F0, P.fired, P.f,
                 _sums(X, W, a, b, scale, cptr, cidx, z, kept & (z > b)))
    # with keep thresholds too: bit 1 of the evaluated pairs is recomputed
    keep = np.full(m, b - 0.3)
    Q = _Pass(n, d, nnz)
    Q.state[:] = before
    ev, _, _, nk = Q.run(X, W, a, b, scale, cptr, cidx, True, kept_only=True, keep_thr=keep,
                         screen=screen)
    assert ev == kept.sum() and nk == (kept & (z > keep[r])).sum()
    np.testing.assert_array_equal(Q.state[kept], ((z > keep[r]) << 1 | (z > b))[kept])
    np.testing.assert_array_equal(Q.state[~kept], before[~kept])


# ------------------------------------------------------------------------ ties, near ties

@pytest.mark.parametrize("d", [3, 8, 16, 17, 64, 100])
def test_exact_ties_are_left_to_float64(d):
    """Scores exactly at b or at the keep threshold (small integers: exact dot products): the
    screen must defer them, and they are not fired (> b) nor kept (> keep)."""
    rng = np.random.default_rng(d)
    m, n = 200, 60
    X = rng.integers(-2, 3, (n, d)) / 4.0
    W = rng.integers(-2, 3, (m, d)).astype(float)
    a = rng.choice([-1.0, 1.0], m)
    cptr, cidx = _nm(rng.random((m, n)) < 0.7)
    r = _rows_of(cptr)
    b = 0.5
    keep = np.full(m, 0.25)
    keep[::3] = 0.5
    z = _scores(X, W, cptr, cidx)
    np.testing.assert_array_equal(z, np.einsum("kj,kj->k", W[r], X[cidx]))   # exact
    ties = (z == b) | (z == keep[r])
    assert ties.sum() > 20
    mask = _forward(X, W, a, b, 1.0, cptr, cidx)[3]
    np.testing.assert_array_equal(mask, z > b)
    runs = []
    for screen in (True, False):
        P = _Pass(X.shape[0], d, len(cidx))
        ev, ex, _, _ = P.run(X, W, a, b, 1.0, cptr, cidx, True, keep_thr=keep, screen=screen)
        np.testing.assert_array_equal(P.state & 1, z > b)
        np.testing.assert_array_equal(P.state >> 1, z > keep[r])
        assert ex >= ties.sum() if screen else ex == 0
        runs.append(P)
    assert _same(*runs)


@pytest.mark.parametrize("d", [3, 8, 16, 17, 64, 100])
def test_near_ties_within_round_off(d):
    """Every score within round-off of b (rows and points a 1e-13 perturbation of one pair,
    b its exact score; the screen's band is ~1e-6 wide): the screen decides none of them,
    float64 decides all, exactly; and b one ulp either side of a pair's exact score decides
    that pair."""
    rng = np.random.default_rng(100 + d)
    m, n = 120, 50
    w0, x0 = rng.standard_normal(d), rng.standard_normal(d)
    x0 /= np.linalg.norm(x0)
    w0 *= 0.8 / np.dot(w0, x0)                      # a score away from 0 (relative ties)
    W = w0 + 1e-13 * rng.standard_normal((m, d))
    X = x0 + 1e-13 * rng.standard_normal((n, d))
    W[0], X[0] = w0, x0
    a = rng.standard_normal(m)
    M = rng.random((m, n)) < 0.6
    M[0, 0] = True
    cptr, cidx = _nm(M)
    nnz = len(cidx)
    z = _scores(X, W, cptr, cidx)
    b = z[0]                                        # the exact score of pair (0, 0)
    assert np.all(np.abs(z - b) < 1e-9)          # the screen's band: ~1e-6 here
    on = z > b
    assert 0.2 * nnz < on.sum() < 0.8 * nnz and not on[0]
    keep = np.full(m, np.nextafter(b, -np.inf))     # one ulp below b: keeps pair 0
    runs = []
    for screen in (True, False):
        P = _Pass(n, d, nnz)
        ev, ex, _, kept = P.run(X, W, a, b, 1.0, cptr, cidx, True, keep_thr=keep,
                                screen=screen)
        assert ev == nnz and ex == (nnz if screen else 0)
        np.testing.assert_array_equal(P.state & 1, on)
        np.testing.assert_array_equal(P.state >> 1, z > keep[0])
        assert P.state[0] == 2 and kept == (z > keep[0]).sum()
        runs.append(P)
    assert _same(*runs)
    np.testing.assert_array_equal(runs[0].state & 1, _forward(X, W, a, b, 1.0, cptr, cidx)[3])
    # b one ulp below / at / above the exact scores of a few pairs, one pair per call
    for k in rng.choice(nnz, 8, replace=False):
        for bb, want in ((np.nextafter(z[k], -np.inf), 1), (z[k], 0),
                         (np.nextafter(z[k], np.inf), 0)):
            for screen in (True, False):
                P = _Pass(n, d, nnz)
                P.run(X, W, a, bb, 1.0, cptr, cidx, True, screen=screen)
                assert P.state[k] & 1 == want, (k, bb, screen)
                np.testing.assert_array_equal(P.state & 1, z > bb)


# -------------------------------------------------------------------------- extreme scales

def _extreme_cases(d):
    rng = np.random.default_rng(d + 7)
    m, n = 90, 40
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((m, d))
    cases = {}
    for s in (1e30, 1e-30, 1e150, 1e-150, 1e300, 1e-300):
        cases[f"W*{s:g}"] = (X, W * s, 0.3 * s)
    Xb = X.copy()
    Xb[::3] *= 2.0 ** 61                             # norms >= 2^60: the screen stands down
    cases["X norms >= 2^60"] = (Xb, W, 0.3)
    cases["X norms 2^59"] = (X * 2.0 ** 59, W, 0.3 * 2.0 ** 59)
    cases["X 1e-200"] = (X * 1e-200, W, 0.0)
    Xs = X.copy()
    Xs[2], Xs[4] = 1e-40, 5e-324                     # float32 subnormal / zero
    cases["subnormal X, b = 0"] = (Xs, W * 1e-20, 0.0)
    W0 = W.copy()
    W0[[0, 5, 6]] = 0.0                              # zero rows: score 0 = b
    cases["zero rows, b = 0"] = (X, W0, 0.0)
    Wn = W.copy()
    Wn[3, 0], Wn[4, 1], Wn[6] = np.nan, np.inf, -np.inf
    Wn[7, :] = [np.inf, -np.inf] * (d // 2) + [1.0] * (d % 2)
    cases["NaN/inf in W"] = (X, Wn, 0.3)
    cases["b = inf"] = (X, W, np.inf)
    cases["b = -inf"] = (X, W, -np.inf)
    cases["b = NaN"] = (X, W, np.nan)
    cases["b = 1e300"] = (X, W, 1e300)
    return rng, cases


@pytest.mark.parametrize("d", [3, 8, 17, 64])
def test_extreme_scales_states_are_nm_forward_s(d):
    """Huge or tiny rows, points or b, zero rows, non-finite weights: no crash, and the states
    are nm_forward's (the screen stands down or stays exact), screen or not."""
    rng, cases = _extreme_cases(d)
    for name, (X, W, b) in cases.items():
        m, n = W.shape[0], X.shape[0]
        a = rng.standard_normal(m)
        M = rng.random((m, n)) < 0.6
        cptr, cidx = _nm(M)
        _, H, fired, mask = _forward(X, W, a, b, 1.0, cptr, cidx)
        keep = np.full(m, b - abs(b) * 0.5 if np.isfinite(b) else b)
        runs = []
        for screen in (True, False):
            P = _Pass(n, d, len(cidx))
            ev, ex, _, _ = P.run(X, W, a, b, 1.0, cptr, cidx, True, keep_thr=keep,
                                 screen=screen)
            np.testing.assert_array_equal(P.state & 1, mask, err_msg=name)
            np.testing.assert_array_equal(P.fired, fired, err_msg=name)
            assert np.array_equal(P.H, H, equal_nan=True), name
            assert ev == len(cidx) and 0 <= ex <= ev
            runs.append(P)
        assert np.array_equal(runs[0].state, runs[1].state), name
        assert np.array_equal(runs[0].H, runs[1].H, equal_nan=True), name
        if np.all(np.isfinite(W)) and np.isfinite(b):
            with np.errstate(all="ignore"):
                z = _scores(X, W, cptr, cidx)
            r = _rows_of(cptr)
            np.testing.assert_array_equal(runs[0].state & 1, z > b, err_msg=name)
            np.testing.assert_array_equal(runs[0].state >> 1, z > keep[r], err_msg=name)


@pytest.mark.parametrize("where", ["row", "point"])
def test_screen_never_decides_an_overflowed_float32_score(where):
    """w = (-1e39, 3e38 x 10), x = 1 (or the roles swapped): the float64 score is +2e39 > b,
    the float32 one -inf (the first product overflows, the finite rest cannot undo it)."""
    if where == "row":
        W, X = np.array([[-1e39] + [3e38] * 10]), np.ones((1, 11))
    else:
        W, X = np.array([[-1.0] + [1.0] * 10]), np.array([[1e39] + [3e38] * 10])
    cptr, cidx = np.array([0, 1], np.int64), np.zeros(1, np.int32)
    assert _forward(X, W, np.ones(1), 0.0, 1.0, cptr, cidx)[3][0] == 1
    for screen in (False, True):
        P = _Pass(1, 11, 1)
        P.run(X, W, np.ones(1), 0.0, 1.0, cptr, cidx, True, keep_thr=np.full(1, -1.0),
              screen=screen)
        assert P.state[0] == 3, screen


# ------------------------------------------------------------------------- tracked passes

def _moves(rng, X0, eps, norm, K, frac):
    """K positions within the eps-balls of X0 (random directions, steps up to frac * eps)."""
    delta = np.zeros_like(X0)
    out = []
    for _ in range(K):
        D = rng.standard_normal(X0.shape)
        step = frac * eps * rng.random((X0.shape[0], 1))
        if norm == np.inf:
            delta = np.clip(delta + step * np.sign(D), -eps, eps)
        else:
            delta = delta + step * D / np.linalg.norm(D, axis=1, keepdims=True)
            delta *= np.minimum(1.0, eps / np.linalg.norm(delta, axis=1))[:, None]
        out.append(X0 + delta)
    return out


def _engine_like(X0, W, b, eps, norm):
    """The certified engine's refinement threshold, dual norms, slacks and radius
    (engines/certified.py, _refinement_thresholds; engines/candidates.py)."""
    d = X0.shape[1]
    n2, n1 = np.linalg.norm(W, axis=1), np.abs(W).sum(1)
    dual = n1 if norm == np.inf else n2
    l2rad = eps * (np.sqrt(d) if norm == np.inf else 1.0)
    top = np.linalg.norm(X0, axis=1).max()
    keep = b - eps * dual - 1e-9 * (abs(b) + eps * dual + n2 * (top + l2rad))
    slack = 1e-9 * (abs(b) + (n2 + dual) * (top + l2rad + 1.0))
    radius = eps * (1 + 1e-9) + 1e-12 * (1 + top)
    return keep, dual, slack, radius


def _check_deadlines(dl, evaluated, z, b, r, dual, slack, e, clock, cap, keep_drop=None):
    """Every deadline a pass wrote, two-sided: dl <= clock + (|z - b| - slack) / dual (a
    proof: the score cannot reach b before the point moved that far) and no further below it
    than the screen's error 1.5 e and float32 rounding allow; +inf iff that move reaches
    ``cap`` (or the pair was dropped by the refinement), 0 when there is no margin."""
    gap = np.abs(z - b)[evaluated]
    wd, sl, ee = dual[r][evaluated], slack[r][evaluated], e[evaluated]
    got = dl[evaluated].astype(np.float64)
    hi = (gap - sl) / wd                            # the certified move, float64 decisions
    lo = (gap - sl - 1.5 * ee) / wd                 # screen decisions lose up to 1.5 e
    drop = np.zeros(len(gap), bool) if keep_drop is None else keep_drop[evaluated]
    assert np.all(np.isinf(got[drop]))
    assert np.all(np.isfinite(got[~drop & (hi < cap * (1 - 1e-12))]))
    assert np.all(np.isinf(got[~drop & (lo >= cap * (1 + 1e-12))]))
    fin = np.isfinite(got)
    g, hi, lo = got[fin], hi[fin], lo[fin]
    assert np.all(g <= (clock + np.maximum(hi, 0.0)) * (1 + 1e-15))
    assert np.all((g >= (clock + lo) * (1 - 2.0 ** -21)) | (g == 0.0))
    assert np.all(g[hi <= 0] == 0.0)                # no margin: due at every pass
    assert np.all((g == 0.0) | (g >= clock * (1 - 2.0 ** -21)))


@pytest.mark.parametrize("d", [3, 8, 17, 64])
@pytest.mark.parametrize("norm", [2, np.inf])
def test_tracked_passes_match_fresh_evaluations(d, norm):
    """The engine's sequence: a fresh pass at the clean points (keep thresholds of the ball,
    deadlines, cap = radius), then K moves within the balls, each followed by a tracked pass
    (cap = diameter, clock = sum of the largest steps). After every pass: every pair's bit 0
    is the fired state at the current points, the counts exact, H / F0 / f the fresh sums to
    round-off; the pass evaluated exactly the pairs that were due; the deadlines certify what
    they claim; screen on and off give the same bits; and the passes skip most pairs. The
    same moves with fresh passes over the kept pairs (lazy=False) match too."""
    m, n, K = 500, 80, 7
    eps = 0.1 if norm == 2 else 0.1 / np.sqrt(d)
    rng, X0, W, a, cptr, cidx = _problem(m, n, d, "l2", seed=d + (0 if norm == 2 else 1000),
                                         density=0.6)
    nnz, r = len(cidx), _rows_of(cptr)
    b, scale = 0.3, 1 / np.sqrt(m)
    keep, dual, slack, radius = _engine_like(X0, W, b, eps, norm)
    err = _screen(W)
    common = dict(dual_norm=dual, slack=slack)
    z0 = _scores(X0, W, cptr, cidx)
    kept = z0 > keep[r]
    runs = {}
    for screen in (True, False):
        P = _Pass(n, d, nnz)
        ev, ex, flips, nk = P.run(X0, W, a, b, scale, cptr, cidx, True, deadline=True,
                                  keep_thr=keep, screen=screen, cap=radius, **common)
        assert (ev, flips, nk) == (nnz, 0, kept.sum()) and 0 < nk < nnz
        np.testing.assert_array_equal(P.state, (kept << 1) | (z0 > b))
        e = err[r] * _xmax(X0) if screen else np.zeros(nnz)
        _check_deadlines(P.deadline, np.ones(nnz, bool), z0, b, r, dual, slack, e, 0.0,
                         radius, keep_drop=~kept)
        runs[screen] = P
    assert _same(runs[True], runs[False])
    lazy_false = runs[False].copy()
    prev, clock, moves = X0, 0.0, _moves(rng, X0, eps, norm, K, frac=0.3)
    evs = {True: [], False: []}
    for k, Xt in enumerate(moves):
        step = Xt - prev
        step = np.abs(step).max(1) if norm == np.inf else np.linalg.norm(step, axis=1)
        clock += step.max() * (1 + 1e-12)
        prev = Xt
        z = _scores(Xt, W, cptr, cidx)
        on = z > b
        ref = _sums(Xt, W, a, b, scale, cptr, cidx, z, on)
        f_fwd, H_fwd, fired_fwd, mask = _forward(Xt, W, a, b, scale, cptr, cidx)
        np.testing.assert_array_equal(mask, on)
        assert not (on & ~kept).any()               # the refinement holds in the balls
        for screen, P in runs.items():
            due = P.deadline <= _clock_up(clock)
            st0, dl0 = P.state.copy(), P.deadline.copy()
            ev, ex, flips, _ = P.run(Xt, W, a, b, scale, cptr, cidx, False, deadline=True,
                                     kept_only=True, screen=screen, clock=clock,
                                     cap=2 * radius, **common)
            evs[screen].append(ev)
            assert ev == due.sum() and 0 <= ex <= ev and (ex == 0 or screen)
            assert flips == ((st0 ^ P.state) & 1).sum()
            np.testing.assert_array_equal(P.state & 1, on, err_msg=f"pass {k}")
            np.testing.assert_array_equal(P.state >> 1, kept)
            np.testing.assert_array_equal(P.fired, fired_fwd)
            _assert_sums(P.H, P.F0, P.fired, P.f, ref)
            np.testing.assert_allclose(P.f, f_fwd, rtol=1e-11, atol=1e-12)
            assert np.array_equal(P.deadline[~due], dl0[~due])   # untouched unless due
            e = err[r] * _xmax(Xt) if screen else np.zeros(nnz)
            _check_deadlines(P.deadline, due, z, b, r, dual, slack, e, clock, 2 * radius)
        assert _same(runs[True], runs[False])        # proven decisions: the same flips
        # lazy=False: a fresh pass over the kept pairs, no deadlines
        ev, _, _, nk = lazy_false.run(Xt, W, a, b, scale, cptr, cidx, True, kept_only=True,
                                      screen=False)
        assert ev == nk == kept.sum()
        np.testing.assert_array_equal(lazy_false.state, (kept << 1) | on)
        assert np.array_equal(lazy_false.H, H_fwd)   # the fired pairs in order: same bits
        _assert_sums(lazy_false.H, lazy_false.F0, lazy_false.fired, lazy_false.f, ref)
    for screen in (True, False):
        # the deadlines skip pairs: every tracked pass evaluates fewer than the kept pairs
        assert max(evs[screen]) < kept.sum() and sum(evs[screen]) < K * kept.sum() / 2
        assert sum(evs[screen]) > 0


@pytest.mark.parametrize("screen", [True, False])
def test_tracked_pass_at_the_same_points_and_after_a_long_move(screen):
    """A pass at unchanged points (the clock unchanged) evaluates only the pairs without
    margin and flips none; after a long move the pairs not due still have their states; a
    point whose last fired pair stops firing gets exact zeros."""
    m, n, d, eps = 300, 40, 16, 0.05
    rng, X0, W, a, cptr, cidx = _problem(m, n, d, "l2", seed=5, density=0.7)
    nnz, r = len(cidx), _rows_of(cptr)
    b, scale = 0.3, 0.5
    keep, dual, slack, radius = _engine_like(X0, W, b, eps, 2)
    kw = dict(dual_norm=dual, slack=slack, screen=screen)
    P = _Pass(n, d, nnz)
    P.run(X0, W, a, b, scale, cptr, cidx, True, deadline=True, keep_thr=keep, cap=np.inf,
          **kw)                                     # no cap: every margin is finite
    st, H, dl = P.state.copy(), P.H.copy(), P.deadline.copy()
    assert np.all(np.isfinite(dl[(st & 2) == 2])) and np.all(np.isinf(dl[(st & 2) == 0]))
    ev, ex, flips, _ = P.run(X0, W, a, b, scale, cptr, cidx, False, deadline=True,
                             clock=0.0, cap=2 * radius, **kw)
    assert ev == (dl <= 0).sum() and flips == 0
    assert np.array_equal(P.state, st) and np.array_equal(P.H, H)
    # a move of 3 eps (no cap: the deadlines hold at any distance): the kept pairs whose
    # margin is below 3 eps are due, the others keep their (still right) states
    X1 = X0 + 3 * eps * np.eye(d)[np.arange(n) % d]
    clock = 3 * eps * (1 + 1e-12)
    due = P.deadline <= _clock_up(clock)
    assert due[(st & 2) == 2].mean() > 0.3 and not due[(st & 2) == 0].any()
    ev, _, _, _ = P.run(X1, W, a, b, scale, cptr, cidx, False, deadline=True, clock=clock,
                        cap=np.inf, **kw)
    assert ev == due.sum()
    z1 = _scores(X1, W, cptr, cidx)
    stale = ~due & (st & 2 == 2)
    # pairs not due kept their state: they cannot have flipped within their margins
    np.testing.assert_array_equal((P.state & 1)[stale], (z1 > b)[stale])
    # a point whose fired pairs all stop: exact zeros (no round-off left by the removals)
    fired_pts = np.flatnonzero(P.fired > 0)
    i = fired_pts[0]
    Xfar = X1.copy()
    Xfar[i] = 0.0                                     # score 0 < b for every neuron
    move = float(np.linalg.norm(X1[i]))
    P.run(Xfar, W, a, b, scale, cptr, cidx, False, deadline=True,
          clock=clock + move * (1 + 1e-12), cap=np.inf, **kw)
    assert P.fired[i] == 0 and P.F0[i] == 0.0 and np.all(P.H[i] == 0.0) and P.f[i] == 0.0


@pytest.mark.parametrize("screen", [True, False])
@pytest.mark.parametrize("clock", [0.1, 0.7])       # float32 nearest above / below
def test_tracked_pass_evaluates_exactly_the_pairs_that_are_due(screen, clock):
    """Deadlines set by hand around the clock rounded up to float32: a tracked pass evaluates
    the pairs with deadline <= that (equality included), only those: the others keep their
    state (even a wrong one) and deadline; the due ones get the true state, a new deadline
    and their flips in the counts."""
    m, n, d = 200, 50, 17
    rng, X, W, a, cptr, cidx = _problem(m, n, d, "l2", seed=11, density=0.7)
    nnz = len(cidx)
    b, scale = 0.2, 0.5
    dual, slack = np.linalg.norm(W, axis=1), np.full(m, 1e-9)
    kw = dict(dual_norm=dual, slack=slack, screen=screen, cap=np.inf)
    z = _scores(X, W, cptr, cidx)
    P = _Pass(n, d, nnz)
    P.run(X, W, a, b, scale, cptr, cidx, True, deadline=True, **kw)
    up = _clock_up(clock)
    down = np.nextafter(up, np.float32(0))
    assert float(down) < clock < float(up)
    choices = np.array([0, down, up, np.nextafter(up, np.float32(np.inf)), 2 * up, np.inf],
                       np.float32)
    P.deadline[:] = choices[rng.integers(0, len(choices), nnz)]
    due = P.deadline <= up
    assert 0.4 < due.mean() < 0.6
    wrong = rng.random(nnz) < 0.3                   # stale states, due or not
    P.state[wrong] ^= 1
    st0, dl0, fired0 = P.state.copy(), P.deadline.copy(), P.fired.copy()
    ev, ex, flips, _ = P.run(X, W, a, b, scale, cptr, cidx, False, deadline=True,
                             clock=clock, **kw)
    assert ev == due.sum() and flips == (wrong & due).sum() and (ex == 0 or screen)
    np.testing.assert_array_equal(P.state[~due], st0[~due])
    assert np.array_equal(P.deadline[~due], dl0[~due])
    np.testing.assert_array_equal(P.state[due] & 1, z[due] > b)
    assert np.all((P.deadline[due] >= clock * (1 - 2.0 ** -21))
                  | (P.deadline[due] == 0))
    # the counts follow the flips: +1 for a pair turned on, -1 for one turned off
    change = (P.state & 1).astype(np.int64) - (st0 & 1)
    np.testing.assert_array_equal(P.fired, fired0 + np.bincount(cidx, change, n))


# ------------------------------------------------------------ threads and SIMD levels

_CHILD = textwrap.dedent(r'''
    import hashlib, json, sys
    import numpy as np
    from sparseadv import _core

    def nm(M):
        return (np.concatenate([[0], np.cumsum(M.sum(1))]).astype(np.int64),
                np.nonzero(M)[1].astype(np.int32))

    def digest(*arrays):
        h = hashlib.sha256()
        for v in arrays:
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()[:20]

    out = {"simd": _core.active_kernels_simd()}
    for d, m, n, tie in ((2, 200, 50, False), (3, 400, 70, False), (5, 300, 50, True),
                         (7, 200, 50, True), (8, 300, 60, False),
                         (16, 300, 60, True), (17, 300, 60, False), (64, 2500, 60, False),
                         (100, 1500, 40, True)):
        rng = np.random.default_rng(d)
        X = rng.standard_normal((n, d))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        W = rng.standard_normal((m, d))
        if tie:                                   # many scores within round-off of b
            W = W[:1] + 1e-14 * W
            X = X[:1] + 1e-14 * X
        a = rng.standard_normal(m)
        cptr, cidx = nm(rng.random((m, n)) < 0.6)
        nnz = len(cidx)
        b = float(W[0] @ X[0]) if tie else 0.3
        scale, eps = 0.1, 0.05
        # nm_forward: outputs, and every pair's score (one pair per point, b = 0, a = 1:
        # f = the positive scores; with -W minus the negative ones)
        f, H = np.empty(n), np.empty((n, d))
        cnt, mask = np.empty(n, np.int64), np.empty(nnz, np.uint8)
        _core.nm_forward(X, W, a, b, scale, cptr, cidx, f, H, cnt, mask)
        Xp, one = np.ascontiguousarray(X[cidx]), np.arange(nnz, dtype=np.int32)
        zp, zn = np.empty(nnz), np.empty(nnz)
        _core.nm_forward(Xp, W, np.ones(m), 0.0, 1.0, cptr, one, zp)
        _core.nm_forward(Xp, -W, np.ones(m), 0.0, 1.0, cptr, one, zn)
        out[f"nm_forward d={d}"] = digest(f, H, cnt, mask, zp, zn)
        # nm_weight_grad: with and without the mask
        coef = rng.standard_normal(n)
        rows = np.arange(m, dtype=np.int64)
        G1, G2 = np.empty((m, d)), np.empty((m, d))
        _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G1)
        _core.nm_weight_grad(X, W, a, b, coef, cptr, cidx, rows, G2, mask)
        out[f"nm_weight_grad d={d}"] = digest(G1, G2)
        # nm_pass: fresh with keep bits and deadlines, then tracked passes
        dual = np.linalg.norm(W, axis=1)
        slack = 1e-9 * (abs(b) + 2 * dual * 3)
        keep = b - eps * dual - slack
        for screen in (True, False):
            st, dl = np.zeros(nnz, np.uint8), np.zeros(nnz, np.float32)
            Hs, F0, c2, fs = np.empty((n, d)), np.empty(n), np.empty(n, np.int64), np.empty(n)
            res, counts = [], []
            r = _core.nm_pass(X, W, a, b, scale, cptr, cidx, st, Hs, F0, c2, fs, True,
                              keep_thr=keep, screen=screen, deadline=dl, dual_norm=dual,
                              slack=slack, cap=eps)
            res.append(digest(st, Hs, F0, c2, fs) + repr(r[2:]))
            counts.append(digest(dl) + repr(r))
            clock, Xt = 0.0, X
            for k in range(4):
                D = rng.standard_normal((n, d))
                Xn = X + eps * rng.random((n, 1)) * D / np.linalg.norm(D, axis=1, keepdims=True)
                clock += np.linalg.norm(Xn - Xt, axis=1).max() * (1 + 1e-12)
                Xt = Xn
                r = _core.nm_pass(Xt, W, a, b, scale, cptr, cidx, st, Hs, F0, c2, fs, False,
                                  kept_only=True, screen=screen, deadline=dl, clock=clock,
                                  dual_norm=dual, slack=slack, cap=2 * eps)
                res.append(digest(st, Hs, F0, c2, fs) + repr(r[2:]))
                counts.append(digest(dl) + repr(r))
            out[f"nm_pass d={d} screen={screen}"] = res
            # the evaluated counts and deadlines (the float32 screen's scores may round
            # differently on another SIMD level, never with another thread count)
            out[f"nm_pass deadlines d={d} screen={screen}"] = counts
    print(json.dumps(out))
''')


def _child(**env):
    full = dict(os.environ, PYTHONHASHSEED="0",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=full, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_bits_do_not_depend_on_the_thread_count():
    """Fresh and tracked passes, nm_forward, nm_weight_grad with 1, 2 and 3 threads: the
    same bits, deadlines and counts (each point sums its neurons in increasing order)."""
    outs = [_child(OMP_NUM_THREADS=t) for t in ("1", "2", "3")]
    assert outs[0] == outs[1] == outs[2]


@pytest.fixture(scope="module")
def _simd_outputs():
    """The child's outputs at every SIMD level the CPU has (None where it lacks it)."""
    outs = {}
    for level, name in (("avx2", "avx2+fma"), ("avx512", "avx512")):
        out = _child(SPARSEADV_SIMD=level, OMP_NUM_THREADS="2")
        outs[level] = out if out["simd"] == name else None
    return outs


def _compare_levels(outs, first, second):
    if outs[first] is None or outs[second] is None:
        pytest.skip(f"the CPU lacks {first if outs[first] is None else second}")
    A, B = outs[first], outs[second]
    differ = sorted(k for k in A if k != "simd" and A[k] != B[k])
    assert not differ, f"{first} and {second} differ in: {differ}"


def test_bits_do_not_depend_on_the_simd_level_avx2_avx512(_simd_outputs):
    """nm_pass (states, sums, flips, deadlines and counts), nm_forward (outputs and every
    pair's score) and nm_weight_grad: the same bits with the AVX2 and the AVX-512 kernels
    (sa_simd.h: the same element-wise operations, the same contractions into FMAs, scalar
    tails one multiply-add at a time). The baseline build has no FMA and differs from both in
    the last bits (documented in sa_simd.h), so it is not compared."""
    _compare_levels(_simd_outputs, "avx2", "avx512")


# ------------------------------------------------------------------------ argument checks

def test_nm_pass_refuses_bad_arguments():
    m, n, d = 12, 9, 5
    rng, X, W, a, cptr, cidx = _problem(m, n, d, "l2", seed=1, density=0.7)
    nnz = len(cidx)

    def call(**change):
        args = dict(X=X, W=W, a=a, b=0.1, scale=1.0, cptr=cptr, cidx=cidx,
                    state=np.zeros(nnz, np.uint8), H=np.zeros((n, d)), F0=np.zeros(n),
                    fired=np.zeros(n, np.int64), f_out=np.zeros(n), fresh=True)
        kw = dict(keep_thr=np.zeros(m), screen=True,
                  deadline=np.zeros(nnz, np.float32), clock=0.5, dual_norm=np.ones(m),
                  slack=np.zeros(m), cap=1.0)
        for k, v in change.items():
            (args if k in args else kw)[k] = v
        pos = [args[k] for k in ("X", "W", "a", "b", "scale", "cptr", "cidx", "state", "H",
                                 "F0", "fired", "f_out", "fresh")]
        return _core.nm_pass(*pos, **kw)

    call()
    call(fresh=False)
    bad_shapes = dict(
        W=np.zeros((m, d + 1)), a=np.zeros(m + 1), cptr=np.zeros(m, np.int64),
        state=np.zeros(nnz + 1, np.uint8), H=np.zeros((n + 1, d)), F0=np.zeros(n - 1),
        fired=np.zeros(n + 1, np.int64), f_out=np.zeros(n - 1), keep_thr=np.zeros(m + 1),
        deadline=np.zeros(nnz - 1, np.float32), dual_norm=np.zeros(m + 1),
        slack=np.zeros(m - 1))
    for name, v in bad_shapes.items():
        with pytest.raises(InputError, match=name):
            call(**{name: v})
    with pytest.raises(InputError, match="H"):
        call(H=np.zeros((n, d + 1)))
    with pytest.raises(InputError, match="column"):
        call(X=np.zeros((n, 0)), W=np.zeros((m, 0)), H=np.zeros((n, 0)))
    for k in ("dual_norm", "slack"):
        with pytest.raises(InputError, match="deadline"):
            call(**{k: None})
    for cap in (-1.0, np.nan, -np.inf):
        with pytest.raises(InputError, match="cap"):
            call(cap=cap)
    for clock in (np.nan, np.inf, -np.inf, -1e-300):
        with pytest.raises(InputError, match="clock"):
            call(clock=clock)
    for screen in (1, 0, "yes", 1.0, np.array([True])):
        with pytest.raises(InputTypeError, match="screen"):
            call(screen=screen)
    call(screen=np.True_)
    call(screen=None)
    bad_csr = cidx.copy()
    bad_csr[0] = n
    with pytest.raises(InputError, match="cidx"):
        call(cidx=bad_csr)
    with pytest.raises(InputError, match="cptr"):
        call(cptr=cptr[::-1].copy())
    for name, v in (("state", np.zeros(nnz, np.int8)), ("deadline", np.zeros(nnz)),
                    ("H", np.zeros((n, d), np.float32)),
                    ("X", np.asfortranarray(X)), ("state", None), ("fired", np.zeros(n))):
        with pytest.raises((ValueError, TypeError)):
            call(**{name: v})
    # without a deadline, clock and cap are not read (the engine passes them anyway)
    call(deadline=None, dual_norm=None, slack=None, clock=np.nan, cap=-1.0)
    # the refusals come before any write
    state, H = np.full(nnz, 7, np.uint8), np.full((n, d), 3.0)
    with pytest.raises(InputError):
        call(state=state, H=H, cap=-1.0)
    assert np.all(state == 7) and np.all(H == 3.0)


def test_nm_pass_empty_inputs():
    """No pairs, no neurons, no points: the sums are zeros, f = 0, nothing evaluated."""
    d = 4
    X = np.random.default_rng(0).standard_normal((5, d))
    for m in (0, 3):
        W, a = np.ones((m, d)), np.ones(m)
        cptr, cidx = np.zeros(m + 1, np.int64), np.zeros(0, np.int32)
        P = _Pass(5, d, 0)
        assert P.run(X, W, a, 0.1, 1.0, cptr, cidx, True, deadline=True, dual_norm=np.ones(m),
                     slack=np.zeros(m), cap=1.0, screen=True) == (0, 0, 0, 0)
        assert np.all(P.H == 0) and np.all(P.F0 == 0) and np.all(P.fired == 0)
        assert np.all(P.f == 0)
    P = _Pass(0, d, 0)
    assert P.run(np.zeros((0, d)), np.ones((2, d)), np.ones(2), 0.1, 1.0,
                 np.zeros(3, np.int64), np.zeros(0, np.int32), True) == (0, 0, 0, 0)
