# sparseadv.hsr: half-space reporting (HSR) structures over the weight rows.
#
# The tree engine needs, for every (perturbed) point x, the neurons that fire,
# {r : <w_r, x> > b}, while the weights keep changing a few rows at a time. This module is
# the Python face of that: validation, the rebuild and fallback policies, stats, pickling.
# The hot code (build, single and batched queries without the GIL, updates, the blocked
# brute-force kernel) lives in sparseadv/_tree.pxi, compiled into sparseadv._core.
#
#   PartitionTree   the paper's partition tree: a ball tree in flat arrays, exact answers.
#   BruteForceHSR   the same interface by blocked dgemm over all rows: baseline and oracle.
#
# Input conversion: W, X, x and update values may be any real floating dtype and any memory
# layout; they are converted to C-contiguous float64 (a copy when needed; the structure
# always keeps its own copy of W). The caller's arrays are never modified.
"""Half-space reporting structures: :class:`PartitionTree` and :class:`BruteForceHSR`.

Both answer ``query(x, b)`` = sorted ``{r : <w_r, x> > b}`` (strict) exactly, and
``query_batch(X, b)`` = the same for every row of X as CSR ``(indptr, indices)``.

Which arithmetic defines "fired". ``<w_r, x>`` is the sequential dot product: one rounded
multiply and one rounded add per coordinate, summed over k = 0..d-1 in order starting from
0.0 (``sa_dot_seq`` in ``sparseadv/_src/sa_simd.h``; no fused multiply-add on x86-64). The
partition tree's leaf scan computes exactly that, and its whole-node decisions are proved
against it (see the slack below); the blocked GEMM (``BruteForceHSR``, the tree's fallback)
computes the scores in another order, so every pair whose GEMM score lies within the rounding
band 2 (d + 4) eps ||w_r|| ||x|| + (4d + 8) 2^-1074 of b is re-evaluated with the sequential
dot product. Both structures therefore report the same set, ties (b equal to a computed
score) included: such a pair is not reported (strict >). The engines' own kernels
(``dense_forward``, ``dense_fired_pairs``, the active-set kernels) decide firing with their
own arithmetic (GEMM, 4-wide vector sums); they agree with this definition to round-off.
"""
import math

import numpy as np

from . import _core
from ._validation import (check_bool, check_matrix, check_positive_int, check_real,
                          check_vector)
from .errors import InputError, InputTypeError

__all__ = ["PartitionTree", "BruteForceHSR"]

_STAT_KEYS = ("queries", "nodes_visited", "inner_products", "reported_without_eval",
              "brute_force_queries", "rebuilds")

# Range of the inputs: the tree's bounds are proofs while no inner product, centre or bound
# term can overflow. Rows and queries are refused (InputError) when
# d * max|w| * max|x| > _PRODUCT_MAX (an inner product could overflow) or
# m * d * max|w| > _PRODUCT_MAX (a node centre, a mean of rows, could); tiny norms need no
# limit (the bounds use norms that do not underflow and an absolute underflow slack).
_PRODUCT_MAX = 1e300


# ----------------------------------------------------------------------------- validation
# Arrays and scalars are checked by the package-wide validators (same messages everywhere);
# these adapters only name the tree's d in the messages.
def _as_matrix(A, name, d=None):
    """A non-empty 2-D finite real floating array as C-contiguous float64 (copied if needed)."""
    return check_matrix(name, A, ncols=d, ncols_name="the tree's d")


def _max_abs(A):
    return float(np.abs(A).max()) if A.size else 0.0


def _check_row_range(name, amax, m, d):
    """Refuse rows so large that a node centre (a mean of up to m rows) could overflow."""
    if m * d * amax > _PRODUCT_MAX:
        raise InputError(f"{name} has entries up to {amax:.3g}: with m = {m} rows of d = {d} "
                         f"the partition tree's sums could overflow (need m * d * max|{name}| "
                         f"<= {_PRODUCT_MAX:g})")


def _check_query_range(name, x, wmax, d):
    """Refuse queries whose inner products with the rows could overflow."""
    xmax = _max_abs(x)
    if d * wmax * xmax > _PRODUCT_MAX:
        raise InputError(f"{name} has entries up to {xmax:.3g} and the rows up to {wmax:.3g}: "
                         f"inner products could overflow (need d * max|w| * max|{name}| <= "
                         f"{_PRODUCT_MAX:g})")


def _as_vector(x, name, d):
    return check_vector(name, x, length=d, length_name="the tree's d")


def _check_update(rows, values, m, d):
    """Validate (rows, values) for an update; return (int64 rows, float64 values) copies."""
    r = np.asarray(rows)
    if r.dtype.kind not in "iu" or r.dtype == np.bool_:
        if r.size == 0 and r.dtype.kind == "f":
            r = r.astype(np.int64)
        else:
            raise InputTypeError(f"rows must be an array of integers, got dtype {r.dtype}")
    if r.ndim != 1:
        raise InputError(f"rows must be 1-D, got {r.ndim}-D with shape {r.shape}")
    if r.size and (r.min() < 0 or r.max() >= m):
        bad = r[(r < 0) | (r >= m)][0]
        raise InputError(f"rows must be in [0, {m}), got {bad}")
    r = np.array(r, dtype=np.int64, copy=True)
    if np.unique(r).size != r.size:
        raise InputError("rows must not contain duplicates")
    v = np.asarray(values)
    if v.dtype.kind != "f":
        raise InputTypeError(f"values must be a real floating-point array, got dtype {v.dtype}")
    if v.shape != (r.size, d):
        raise InputError(f"values must have shape ({r.size}, {d}) (len(rows), the tree's d), "
                         f"got {v.shape}")
    v = np.array(v, dtype=np.float64, order="C", copy=True)
    if not np.isfinite(v).all():
        raise InputError("values must be finite (contains NaN or infinity)")
    _check_row_range("values", _max_abs(v), m, d)
    return r, v


def _rows(A, lo, hi):
    return None if A is None else A[lo:hi]


def _into(out, indptr, ind):
    """(indptr, ind) with ind copied into the head of ``out`` when it has room."""
    if out is not None and ind is not None and len(out) >= len(ind):
        out[:len(ind)] = ind
        return indptr, out[:len(ind)]
    return indptr, ind


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


class _HSRBase:
    """Shared bookkeeping: stats, len, the brute-force (blocked GEMM) batch path."""

    def _zero_stats(self):
        self._stats = dict.fromkeys(_STAT_KEYS, 0)

    def _brute_batch(self, W, X, b):
        """Every row of X against every row of W by blocked GEMM, counted as such."""
        indptr, ind = _core.hsr_brute_csr(W, X, b)
        n = X.shape[0]
        self._stats["queries"] += n
        self._stats["brute_force_queries"] += n
        self._stats["inner_products"] += self._m * n
        return indptr, ind

    @property
    def stats(self):
        """Work counters since the last :meth:`reset_stats` (a copy): ``queries``,
        ``nodes_visited``, ``inner_products`` (dot products with rows), ``reported_without_eval``
        (rows reported because a whole node lay inside the half-space), ``brute_force_queries``
        (queries answered by the blocked GEMM path) and ``rebuilds``. Deterministic."""
        return dict(self._stats)

    def reset_stats(self):
        """Set every counter in :attr:`stats` to zero."""
        self._zero_stats()

    def __len__(self):
        return self._m

    @property
    def d(self):
        """Dimension of the rows."""
        return self._d

    @property
    def shape(self):
        return (self._m, self._d)


# ---------------------------------------------------------------------------- brute force
class BruteForceHSR(_HSRBase):
    """Half-space reporting by blocked brute force: every row against every query.

    Queries go through tiles of (queries x rows) in dgemm (``gemm_rm``, no GIL), each tile
    thresholded at once. It is the baseline the tree is measured against and an oracle for
    the tests; ``inner_products`` counts m per query.

    Parameters
    ----------
    W : (m, d) real floating array, finite, m >= 1, d >= 1. Copied as C-contiguous float64.
    """

    def __init__(self, W):
        W = _as_matrix(W, "W")
        self._W = np.array(W, dtype=np.float64, order="C", copy=True)
        self._m, self._d = self._W.shape
        self._wmax = _max_abs(self._W)
        _check_row_range("W", self._wmax, self._m, self._d)
        self._zero_stats()

    @property
    def W(self):
        """The rows, in original order, as a read-only view."""
        return _readonly(self._W)

    @property
    def nbytes(self):
        """Memory held by the structure's arrays, in bytes."""
        return int(self._W.nbytes)

    def query(self, x, b):
        """Sorted int64 indices r with <w_r, x> > b."""
        x = _as_vector(x, "x", self._d)
        b = check_real("b", b)
        _check_query_range("x", x, self._wmax, self._d)
        _, ind = _core.hsr_brute_csr(self._W, x.reshape(1, -1), b)
        self._stats["queries"] += 1
        self._stats["brute_force_queries"] += 1
        self._stats["inner_products"] += self._m
        return ind

    def query_batch(self, X, b):
        """CSR ``(indptr, indices)`` (int64) of :meth:`query` for every row of X."""
        X = _as_matrix(X, "X", d=self._d)
        b = check_real("b", b)
        _check_query_range("X", X, self._wmax, self._d)
        return self._brute_batch(self._W, X, b)

    def update(self, rows, values):
        """Replace rows ``rows`` of W by ``values`` (shape (len(rows), d))."""
        r, v = _check_update(rows, values, self._m, self._d)
        self._W[r] = v
        self._wmax = max(self._wmax, _max_abs(v))     # an upper bound (never shrinks)

    def rebuild(self):
        """No-op (nothing to rebuild)."""

    def __getstate__(self):
        return {"W": self._W.copy(), "stats": dict(self._stats)}

    def __setstate__(self, state):
        self._W = np.array(state["W"], dtype=np.float64, order="C", copy=True)
        self._m, self._d = self._W.shape
        self._wmax = _max_abs(self._W)
        self._zero_stats()
        self._stats.update(state.get("stats", {}))

    def __repr__(self):
        return f"BruteForceHSR(m={self._m}, d={self._d})"


# ------------------------------------------------------------------------- partition tree
class PartitionTree(_HSRBase):
    """Exact half-space reporting with a ball tree over the rows of W (the paper's partition
    tree), stored in flat arrays (see the header of ``sparseadv/_tree.pxi``).

    Parameters
    ----------
    W : (m, d) real floating array, finite, m >= 1, d >= 1. Copied as C-contiguous float64.
    leaf_size : int >= 1, default 32. Leaves hold leaf_size to 2 * leaf_size rows (one leaf
        holding all m rows when m < 2 * leaf_size).
    rebuild_factor : float > 1, default 2.0. Rebuild policy (checked after every ``update``):
        updates only widen radii, and the tree rebuilds itself when the size-weighted radius
        sum, sum_nodes |node| * R_node, exceeds ``rebuild_factor`` times its build-time value,
    rebuild_fraction : float > 0, default 1.0. ... or when the number of row updates since the
        last build exceeds ``rebuild_fraction * m`` (the centres then describe an old W).
    fallback : {"auto", "tree", "brute"}, default "auto". High-d policy of ``query_batch``:
        "auto" runs the first min(``pilot_queries``, max(1, n // 32)) queries of a batch of n
        through the tree (so the pilot costs at most ~3% of the batch) and, from their exact
        work counts, estimates the tree's cost per query as
        ``inner_products * (d + 2) + nodes_visited * (d + 8) + reported_without_eval`` against
        brute force's ``m * (d * brute_flop_weight + 3)`` (units: a leaf-scan flop; the
        constants were fitted on timings of both paths at d = 2 and d = 16); when the tree is
        estimated dearer, the remaining queries go through the blocked GEMM path (exact as
        well). "tree" and "brute" force one path. ``query`` (one point) always uses the tree.
        Where the policy switches is measured in docs/benchmarks.md.
    pilot_queries : int >= 1, default 8.
    brute_flop_weight : float > 0, default 0.25: a GEMM flop relative to a leaf-scan flop.

    Notes
    -----
    Exactness: the node bounds <c,x> -/+ R||x|| are applied with a relative slack of 1e-10
    plus an absolute (2d + 8) 2^-1074 for gradual underflow (prune only when upper <=
    b - slack, report a whole node only when lower > b + slack), far above the rounding error
    of any of the dot products involved, so a row is reported wholesale only if its computed
    <w,x> exceeds b; every undecided row is evaluated. ||x||, ||c|| and R are computed with
    scaling, so the bounds hold for queries and rows of any norm from ~1e-300 to the range
    limit: rows and queries whose inner products or node centres could overflow
    (d max|w| max|x| or m d max|w| above 1e300) are refused with an InputError. The single
    query, the tree path of ``query_batch`` and the GEMM fallback all decide "fired" with the
    sequential dot product (see the module docstring), so they agree on ties.

    Not safe for concurrent use from several Python threads when one of them updates.
    """

    def __init__(self, W, leaf_size=32, rebuild_factor=2.0, rebuild_fraction=1.0,
                 fallback="auto", pilot_queries=8, brute_flop_weight=0.25):
        W = _as_matrix(W, "W")
        leaf_size = check_positive_int("leaf_size", leaf_size)
        if leaf_size > 2 ** 62:
            raise InputError(f"leaf_size must be at most 2**62, got {leaf_size}")
        self.rebuild_factor = check_real("rebuild_factor", rebuild_factor, low=1.0,
                                         low_inclusive=False)
        self.rebuild_fraction = check_real("rebuild_fraction", rebuild_fraction, low=0.0,
                                           low_inclusive=False)
        if fallback not in ("auto", "tree", "brute"):
            raise InputError(f"fallback must be 'auto', 'tree' or 'brute', got {fallback!r}")
        self.fallback = fallback
        self.pilot_queries = check_positive_int("pilot_queries", pilot_queries)
        self.brute_flop_weight = check_real("brute_flop_weight", brute_flop_weight, low=0.0,
                                            low_inclusive=False)
        self._m, self._d = W.shape
        self._wmax = _max_abs(W)
        _check_row_range("W", self._wmax, self._m, self._d)
        self.leaf_size = leaf_size
        self._tree = _core._BallTree(W, leaf_size)
        self.n_rebuilds = 0
        self._updates_since_build = 0
        self._zero_stats()

    # -- properties
    @property
    def W(self):
        """The rows in ORIGINAL order, as a read-only view (reflects later updates)."""
        return _readonly(self._tree.W_arr)

    @property
    def nbytes(self):
        """Memory held by the tree's arrays (both row copies and all node arrays), in bytes."""
        return int(self._tree.nbytes)

    @property
    def n_nodes(self):
        return int(self._tree.n_nodes)

    @property
    def n_levels(self):
        return int(self._tree.n_levels)

    @property
    def looseness(self):
        """sum |node| * R_node / sum |node| * R0_node (1.0 right after a build)."""
        t = self._tree
        if t.base_sum > 0:
            return (t.base_sum + t.loose_sum) / t.base_sum
        return 1.0 if t.loose_sum == 0 else math.inf

    # -- queries
    def _add(self, n, counts):
        nv, ip, rep = counts
        self._stats["queries"] += n
        self._stats["nodes_visited"] += nv
        self._stats["inner_products"] += ip
        self._stats["reported_without_eval"] += rep

    def query(self, x, b):
        """Sorted int64 indices r with <w_r, x> > b (strict), exact."""
        x = _as_vector(x, "x", self._d)
        b = check_real("b", b)
        _check_query_range("x", x, self._wmax, self._d)
        ind, counts = self._tree.query(x, b)
        self._add(1, counts)
        return ind

    def query_batch(self, X, b, sort=True, out=None):
        """:meth:`query` for every row of X as CSR ``(indptr, indices)``, int64, indptr of
        length n + 1, indices sorted within each row (with ``sort=False``: in the tree's
        deterministic traversal order, which saves the per-query sort when the caller does
        not need it; the brute-force fallback returns sorted rows either way). Computed
        without the GIL, in parallel over points; see ``fallback`` for the high-d policy.

        ``out``: optional 1-D int64 array; when it has room for the answer, ``indices`` is
        a view of its head (no new allocation on the tree path: callers that query every
        iteration keep one buffer; the GEMM path copies its answer in), otherwise a new
        array."""
        X = _as_matrix(X, "X", d=self._d)
        b = check_real("b", b)
        sort = check_bool("sort", sort)
        if out is not None and not (isinstance(out, np.ndarray) and out.dtype == np.int64
                                    and out.ndim == 1 and out.flags.c_contiguous
                                    and out.flags.writeable):
            raise InputTypeError("out must be None or a writeable contiguous 1-d int64 array")
        _check_query_range("X", X, self._wmax, self._d)

        def tree_part(lo, hi, buf):
            return self._tree.query_batch(X[lo:hi], b, sort, buf)
        return self._policy(X.shape[0], out, tree_part, lambda lo, hi: self._brute(X[lo:hi], b))

    def forward_batch(self, X, b, a, scale, f_out, H_out=None, fired_out=None, pairs=False,
                      out=None, anchor=None, keep=False):
        """The tree engine's pass: the query of every row x_i of X fused with the forward
        pass over its answer (``_BallTree.forward_batch``; each fired pair's score computed
        once): overwrites f_out[i] = sum_r scale a_r (<w_r, x_i> - b), H_out[i] (optional)
        = sum_r scale a_r w_r and fired_out[i] (optional) = the count, over the rows r that
        fire on x_i (summed in 8 lanes by tree position, each lane in the tree's
        deterministic traversal order, the lanes combined in a fixed order: the same bits on
        every SIMD level and thread count). With ``pairs``, returns the fired rows as CSR
        ``(indptr, indices)`` in traversal order (``out`` as in
        :meth:`query_batch`), else ``(None, None)``. Points the fallback policy sends to the
        GEMM path go through ``_core.pm_forward`` over its answer (counted in ``stats``).

        ``anchor``: from :meth:`anchor` for the clean points of these rows (row i of X is
        point i of the anchor): a row within the anchor's radius of its clean point skips the
        traversal and scans the nodes of its anchored walk (done once per point, at the first
        pass that needs it); the answers are the same. An anchor of an older tree (before a
        rebuild, or with other rows) is ignored.

        ``keep`` (with ``pairs``): the fired pairs stay in the tree's buffers instead of being
        copied into a CSR, for ``_core._pm_weight_grad_kept(tree._tree, ...)`` (the tree
        engine's gradient); the result is then ``(indptr, None)``. Any other query or update
        of the tree ends their validity. Where the pairs cannot be kept (the GEMM path, a
        concurrent query) they are returned as usual."""
        X = _as_matrix(X, "X", d=self._d)
        b = check_real("b", b)
        scale = check_real("scale", scale)
        a = np.ascontiguousarray(a, dtype=np.float64)
        pairs = check_bool("pairs", pairs)
        _check_query_range("X", X, self._wmax, self._d)
        n = X.shape[0]
        if fired_out is None:
            fired_out = np.empty(n, dtype=np.int64)
        for name, A, shape in (("f_out", f_out, (n,)), ("H_out", H_out, (n, self._d)),
                               ("fired_out", fired_out, (n,))):
            if A is not None and getattr(A, "shape", None) != shape:
                raise InputError(f"{name} must have shape {shape}")

        if anchor is not None and (getattr(anchor, "tree", None) is not self._tree
                                   or anchor.n != n):
            anchor = None

        # with an anchor, its first pass's path decision holds for its later passes (the
        # points move within the anchor's balls); pairs are kept only where the whole batch
        # surely goes through the tree
        decided = getattr(anchor, "path", None) if anchor is not None else None
        keep = bool(keep) and pairs and (self.fallback == "tree" or decided == "tree"
                                         or n <= self._pilot_size(n))

        def tree_part(lo, hi, buf):
            return self._tree.forward_batch(X[lo:hi], b, a, scale, f_out[lo:hi],
                                            _rows(H_out, lo, hi), fired_out[lo:hi], pairs, buf,
                                            anchor, lo, keep)

        def brute_part(lo, hi):
            ip, ind = self._brute(X[lo:hi], b)
            ev, _ = _core.pm_forward(X[lo:hi], self._tree.W_arr, a, b, scale, ip, ind,
                                     f_out[lo:hi], _rows(H_out, lo, hi), fired_out[lo:hi],
                                     False)
            self._stats["inner_products"] += ev
            return (ip, ind) if pairs else (None, None)
        res = self._policy(n, out if pairs else None, tree_part, brute_part, decided)
        if anchor is not None and decided is None:
            anchor.path = self._last_path
        return res

    def anchor(self, X0, rho, reuse=None):
        """An anchor for the passes of one attack around the clean points X0 (n x d, the
        batch's rows), every attacked point within l2 distance ``rho`` of its clean point:
        pass it to :meth:`forward_batch`. Per point, one anchored walk (the nodes that may
        hold a row firing on any point of that ball: the node bounds widened by rho (||c|| +
        R), a proof like the plain ones) replaces the walk of every pass; the blocks of 8 rows
        in those nodes are still tested at each pass's point, so the answers are exact and
        the same. Valid until the tree changes (``update``, ``rebuild``): later passes then
        walk again. ``reuse``: an earlier anchor of this tree whose buffers are reused."""
        X0 = _as_matrix(X0, "X0", d=self._d)
        rho = check_real("rho", rho, low=0.0)
        _check_query_range("X0", X0, self._wmax, self._d)
        if reuse is not None and getattr(reuse, "tree", None) is not self._tree:
            reuse = None
        return self._tree.anchor(X0, rho, reuse)

    def _policy(self, n, out, tree_part, brute_part, decided=None):
        """The fallback policy over rows [0, n): ``tree_part(lo, hi, buf)`` -> (indptr,
        indices, counters), ``brute_part(lo, hi)`` -> (indptr, indices) (both None: nothing
        to join); returns the joined CSR, in ``out`` when it has room. ``decided``: "tree"
        or "brute", a path decided before (no pilot). The path taken for the rows after the
        pilot is left in ``_last_path``."""
        if self.fallback == "brute" or (decided == "brute" and self.fallback == "auto"):
            self._last_path = "brute"
            return _into(out, *brute_part(0, n))
        k = self._pilot_size(n)
        self._last_path = "tree"
        if self.fallback == "tree" or n <= k or decided == "tree":
            indptr, ind, counts = tree_part(0, n, out)
            self._add(n, counts)
            return indptr, ind
        ip1, ind1, counts = tree_part(0, k, None)
        self._add(k, counts)
        nv, ipr, rep = counts
        d, m = self._d, self._m
        tree_cost = (ipr * (d + 2) + nv * (d + 8) + rep) / k
        brute_cost = m * (d * self.brute_flop_weight + 3.0)
        if tree_cost > brute_cost:
            self._last_path = "brute"
            ip2, ind2 = brute_part(k, n)
        else:
            tail = (out[len(ind1):] if out is not None and ind1 is not None
                    and len(out) >= len(ind1) else None)
            ip2, ind2, counts = tree_part(k, n, tail)
            self._add(n - k, counts)
        if ip1 is None:
            return None, None
        indptr = np.concatenate([ip1, ip2[1:] + ip1[-1]])
        total = len(ind1) + len(ind2)
        if out is not None and len(out) >= total:
            out[:len(ind1)] = ind1                    # the pilot's answer is a fresh array
            if not np.may_share_memory(ind2, out):    # else the tree wrote it into out
                out[len(ind1):total] = ind2
            return indptr, out[:total]
        return indptr, np.concatenate([ind1, ind2])

    def _pilot_size(self, n):
        """Queries of a batch of n that go through the tree before the fallback decision."""
        return min(self.pilot_queries, max(1, n // 32))

    def _brute(self, X, b):
        return self._brute_batch(self._tree.W_arr, X, b)

    # -- updates
    def update(self, rows, values):
        """Replace rows ``rows`` (original indices: 1-D integers in [0, m), no duplicates) of W
        by ``values`` (shape (len(rows), d), finite). The rows move in place and the radii on
        their root paths widen (O(depth * d) per row); the tree rebuilds itself afterwards
        when the rebuild policy says so (see the class docstring). Answers stay exact."""
        r, v = _check_update(rows, values, self._m, self._d)
        self._apply_update(r, v, False, "values")

    def update_from(self, rows, W):
        """Set rows ``rows`` to ``W[rows]`` where W is a full (m, d) float64 C-contiguous
        matrix, without gathering a copy: the tree engine's per-step update. ``rows`` must be
        strictly increasing int64 in [0, m) (checked in O(len(rows)))."""
        r = np.ascontiguousarray(rows, dtype=np.int64)
        if r.ndim != 1 or (r.size and (r[0] < 0 or r[-1] >= self._m
                                        or np.any(r[1:] <= r[:-1]))):
            raise InputError(f"rows must be strictly increasing integers in [0, {self._m})")
        if not (isinstance(W, np.ndarray) and W.dtype == np.float64 and W.flags.c_contiguous
                and W.shape == (self._m, self._d)):
            raise InputError(f"W must be a C-contiguous float64 array of shape "
                             f"({self._m}, {self._d})")
        self._apply_update(r, W, True, "W[rows]")

    def _apply_update(self, r, v, full, name):
        if r.size == 0:
            return
        # the new rows are checked (finite, in range) before anything is written
        try:
            vmax = self._tree.update(r, v, full, _PRODUCT_MAX / (self._m * self._d))
        except InputError as e:
            raise InputError(f"{name}: {e} (need m * d * max|{name}| <= {_PRODUCT_MAX:g})"
                             if "limit" in str(e) else f"{name}: {e}") from None
        self._wmax = max(self._wmax, vmax)            # an upper bound (never shrinks)
        self._updates_since_build += r.size
        if (self.looseness > self.rebuild_factor
                or self._updates_since_build > self.rebuild_fraction * self._m):
            self.rebuild()

    def rebuild(self):
        """Rebuild the tree from the current W (tight radii again)."""
        self._tree.rebuild()
        self._updates_since_build = 0
        self.n_rebuilds += 1
        self._stats["rebuilds"] += 1

    # -- pickling
    def __getstate__(self):
        state = self._tree.get_state()
        state.update(W=np.array(self._tree.W_arr, copy=True), leaf_size=self.leaf_size,
                     rebuild_factor=self.rebuild_factor, rebuild_fraction=self.rebuild_fraction,
                     fallback=self.fallback, pilot_queries=self.pilot_queries,
                     brute_flop_weight=self.brute_flop_weight, n_rebuilds=self.n_rebuilds,
                     updates_since_build=self._updates_since_build, stats=dict(self._stats))
        return state

    def __setstate__(self, state):
        W = np.array(state["W"], dtype=np.float64, order="C", copy=True)
        self._m, self._d = W.shape
        self._wmax = _max_abs(W)
        self.leaf_size = int(state["leaf_size"])
        self._tree = _core._BallTree(W, self.leaf_size, state)
        self.rebuild_factor = float(state["rebuild_factor"])
        self.rebuild_fraction = float(state["rebuild_fraction"])
        self.fallback = state["fallback"]
        self.pilot_queries = int(state["pilot_queries"])
        self.brute_flop_weight = float(state["brute_flop_weight"])
        self.n_rebuilds = int(state["n_rebuilds"])
        self._updates_since_build = int(state["updates_since_build"])
        self._zero_stats()
        self._stats.update(state["stats"])

    def __repr__(self):
        return (f"PartitionTree(m={self._m}, d={self._d}, leaf_size={self.leaf_size}, "
                f"n_nodes={self.n_nodes})")
