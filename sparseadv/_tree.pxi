# Partition (ball) tree for exact half-space reporting over the weight rows.
#
# Problem. Given W (m x d) and a query (x, b), report R(x, b) = {r : <w_r, x> > b} (strict),
# sorted by original row index; for a batch X (n x d), report all n sets as CSR
# (indptr (n+1,), indices), int64.
#
# Layout (after scikit-learn's sklearn/neighbors/_binary_tree.pxi.tp; no code shared).
#   * A complete binary tree in heap order: node i has children 2i+1, 2i+2, parent (i-1)//2.
#     n_levels = 1 + floor(log2(max(1, (m-1) // leaf_size))), n_nodes = 2**n_levels - 1, nodes
#     first_leaf = (n_nodes - 1) // 2 and up are leaves. Leaves are never empty; when there
#     are several (m > 2 * leaf_size), each holds between leaf_size and 2 * leaf_size rows,
#     otherwise the root is the only leaf and holds all m rows.
#   * ``idx`` (m,) is a permutation: tree position p holds original row idx[p]; ``pos`` is its
#     inverse. ``data`` (m, d) stores the rows in tree order, so the rows of every node are
#     the contiguous slice data[node_start[i]:node_end[i]] (leaf scans read memory
#     sequentially). ``W`` (m, d) keeps the rows in ORIGINAL order as well (the wrapper's
#     read-only ``W``, the GEMM fallback, and rebuilds read it); the memory cost is m*d*8 bytes.
#     ``tile`` (ms * d,) holds ``data`` transposed per block of 8 positions (ms = m rounded up
#     to a multiple of 8, zeros past m; entry k of position p at SA_TILE(p, k, d)), so the
#     engine's pass (``sa_tree_scan``) loads eight rows' entries k at once from one base;
#     another m*d*8 bytes. ``rec`` (n_nodes * (d + 2),) holds per node the centre, the radius
#     and K = fl(||c|| + R), siblings interleaved (``sa_tree_rec_at``: the pass tests two
#     siblings at once), and ``ct`` (ms,) the pass's coefficients scale * a[idx[p]] in tree order (per call).
#   * Per node: ``centers`` (n_nodes, d) the mean of its rows at build time, ``radius``
#     (n_nodes,) an upper bound on ||w - c|| over its rows, ``radius0`` the build-time radius,
#     ``cnorm`` = ||c||, ``node_start``/``node_end`` its position range.
#   All state is these flat arrays, so a tree pickles and restores without a rebuild.
#
# Build, O(m d log m). Nodes are filled in heap order (parents before children). For each
# node: centre = mean, radius = max distance (the farthest row a is noted), then, for an
# inner node, the split direction u = w_b - w_a with b the row farthest from a (the classic
# ball-tree "farthest pair" heuristic, rotation invariant, so weights near a low-dimensional
# subspace in any orientation split well), and a 3-way quickselect of the projections <w, u>
# puts the lower half in the left child. Duplicate rows are fine (3-way partition).
#
# Query (x, b), depth-first with an explicit stack. For a node with centre c, radius R and
# every row w in it, <c,x> - R||x|| <= <w,x> <= <c,x> + R||x||. Floating point: all
# computed quantities are within (d+4) eps (||c|| + R) ||x|| of the exact ones, plus an
# absolute (2d + 8) 2^-1074 for gradual underflow, so the tests use a slack
# s = SLACK_REL * ((||c|| + R) ||x|| + |b|) + (2d + 8) 2^-1074, SLACK_REL = 1e-10 (valid for
# d up to ~1e5); the node test is ``sa_tree_node_decide`` (sparseadv/_src/sa_tree.h):
#   upper = <c,x> + R||x|| <= b - s  -> prune (no row can fire, even as computed);
#   lower = <c,x> - R||x|| >  b + s  -> report the whole node without a dot product (every row
#                                       fires, exactly and as computed by the scan kernel);
# ||x||, ||c|| and R are computed so that they neither underflow nor overflow (``sa_norm_safe``
# scales by max |x_k|; a radius whose plain sum of squares is outside [2^-900, 2^900] is
# recomputed the same way), so the bounds stay proofs for ||x|| from 1e-300 to 1e300; the
# Python wrapper refuses inputs whose inner products could overflow.
#   otherwise a leaf is scanned (blocked dot products over its contiguous rows) and an inner
#   node is descended. Ambiguous cases always fall to exact evaluation: exactness is never
#   traded. The result of one query is then sorted by original index (``_sort_idx``: insertion
#   sort when short, a per-thread bitmap of m bits when dense, LSD radix sort otherwise).
#
# Batched query: nogil, OpenMP prange over points (dynamic schedule). Each thread appends its
# points' results to its own growable buffer and records (thread, offset, count) per point;
# afterwards indptr is a prefix sum and the segments are copied into ``indices`` in parallel.
# No atomics; work counters are per thread (padded) and summed, so they are deterministic.
#
# The blocked brute force (``hsr_brute_csr``, the tree's high-d fallback and BruteForceHSR's
# kernel) lives in _dense.pxi; the fallback policy (a pilot of a few queries through the tree,
# then a cost model on their exact work counts) in sparseadv/hsr.py, PartitionTree.query_batch.
#
# Update (rows, values): the row is overwritten in place in ``data`` (position pos[r]) and in
# ``W``; then the path from the root to the leaf holding that position is walked (child chosen
# by comparing the position with the left child's end) and every node whose radius is smaller
# than ||v - c|| is widened to it: O(depth * d) per row. Centres never move. The widening is
# accumulated as ``loose_sum`` = sum over nodes of size * (radius - radius0), which the wrapper
# compares with ``base_sum`` = sum over nodes of size * radius0 to decide when to rebuild.
#
# The nogil routines (sort, leaf scan, traversal, build), the _TreeView struct and the
# declarations of sa_tree.h are in _tree_search.pxi (included just before this file).

from libc.float cimport DBL_MAX
from libc.math cimport sqrt, fabs, INFINITY
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy, memcmp
from cython.parallel cimport prange
cimport numpy as cnp


cdef class _BallTree:
    """Flat-array ball tree (see the header of _tree.pxi). Inputs are trusted: C-contiguous
    float64, finite, validated by sparseadv.hsr.PartitionTree."""
    cdef readonly object W_arr, data_arr, idx_arr, pos_arr, nstart_arr, nend_arr
    cdef readonly object centers_arr, radius_arr, radius0_arr, cnorm_arr, tile_arr, rec_arr
    cdef object ct_arr, blk_arr, cta_arr, umark_arr, at_arr, iota_arr
    cdef cnp.uint8_t[::1] umark     # update's marks, one per position, zero between calls
    cdef double[:, ::1] W
    cdef double[:, ::1] data
    cdef double[::1] tile
    cdef double[::1] rec
    cdef double[::1] ct
    cdef double[::1] cta            # the a and scale that ct was computed from (ct_ok)
    cdef double[::1] at             # a in tree order (with ct)
    cdef cnp.int64_t[::1] iota      # 0 .. ms - 1: the ids a kept pass writes (positions)
    cdef double ct_scale
    cdef bint ct_ok
    cdef double[::1] blk
    cdef cnp.int64_t[::1] idx
    cdef cnp.int64_t[::1] pos
    cdef cnp.int64_t[::1] nstart
    cdef cnp.int64_t[::1] nend
    cdef double[:, ::1] centers
    cdef double[::1] radius
    cdef double[::1] radius0
    cdef double[::1] cnorm
    cdef readonly Py_ssize_t m, d, leaf_size, n_levels, n_nodes, first_leaf, ms, nbs
    cdef readonly double loose_sum, base_sum
    cdef int key_bits
    # per-thread answer buffers of query_batch, kept between calls: their pages are touched
    # once, not on every query (a batch at m = 2^18, d = 3 reports ~27 MB)
    cdef _IdxBuf* _qbufs
    cdef _IdxBuf* _qtmps
    cdef Py_ssize_t _nq
    cdef bint _qbusy
    cdef readonly cnp.int64_t version     # changes with every update and rebuild
    cdef _Anchor _anc                     # forward_batch's anchor during the call (or None)
    cdef Py_ssize_t _anc_row
    # the pairs of the last forward_batch(keep=True) left in the thread buffers: per row of
    # the kept batch (thread, offset, count); _kept_n rows (-1: none); _keep during the call
    cdef object _kseg_arr
    cdef cnp.int64_t[:, ::1] _kseg
    cdef Py_ssize_t _kept_n
    cdef bint _keep
    cdef cnp.int64_t _kept_ver

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._qbufs != NULL:
            for i in range(self._nq):
                free(self._qbufs[i].a)
                free(self._qtmps[i].a)
        free(self._qbufs)
        free(self._qtmps)

    cdef int _reserve_threads(self, Py_ssize_t T, bint empty=True):
        """Make the per-thread buffers hold T threads and empty them (unless ``empty`` is
        false: a kept batch continues); -1 when out of memory."""
        cdef Py_ssize_t i
        cdef _IdxBuf* nb
        cdef _IdxBuf* nt
        if T > self._nq:
            nb = <_IdxBuf*>realloc(self._qbufs, T * sizeof(_IdxBuf))
            if nb == NULL:
                return -1
            self._qbufs = nb
            nt = <_IdxBuf*>realloc(self._qtmps, T * sizeof(_IdxBuf))
            if nt == NULL:
                return -1
            self._qtmps = nt
            memset(self._qbufs + self._nq, 0, (T - self._nq) * sizeof(_IdxBuf))
            memset(self._qtmps + self._nq, 0, (T - self._nq) * sizeof(_IdxBuf))
            self._nq = T
        if empty:
            for i in range(self._nq):
                self._qbufs[i].n = 0
                self._qtmps[i].n = 0
        return 0

    cdef bint _kept_ready(self, Py_ssize_t n):
        """The tree holds the kept pairs of a whole batch of n points, unchanged since."""
        return self._kept_n == n and self._kept_ver == self.version and not self._qbusy

    cdef const double* _a_tree(self, const double* a, double* tmp) noexcept:
        """a in tree order: the tree's copy when a is the array it was made from, else
        gathered into tmp (m doubles)."""
        if self.ct_ok and memcmp(&self.cta[0], a, self.m * sizeof(double)) == 0:
            return &self.at[0]
        _tree_coefs(tmp, a, 1.0, &self.idx[0], self.m)
        return tmp

    cdef void _kept_segments(self, const cnp.int64_t** segp, cnp.int64_t* segn):
        """Pointers to and lengths of the kept pairs of each point (``_kept_ready``): tree
        positions, increasing within a point."""
        cdef Py_ssize_t i
        for i in range(self._kept_n):
            segp[i] = self._qbufs[self._kseg[i, 0]].a + self._kseg[i, 1]
            segn[i] = self._kseg[i, 2]

    def __init__(self, W, leaf_size, state=None):
        """Build from W (copied), or restore from ``state`` (the dict of ``get_state``)."""
        cdef Py_ssize_t m, d, q
        cdef Py_ssize_t ls = _int_arg("_BallTree", "leaf_size", leaf_size, 1, 2 ** 62)
        if not (isinstance(W, np.ndarray) and W.ndim == 2 and W.dtype.kind == "f"):
            raise InputTypeError("_BallTree: W must be a 2-D floating-point array")
        if W.shape[0] < 1 or W.shape[1] < 1 or not np.isfinite(W).all():
            raise InputError("_BallTree: W must be non-empty and finite")
        m = W.shape[0]
        d = W.shape[1]
        self.m = m
        self.d = d
        self._kept_n = -1
        self.ms = (m + 7) // 8 * 8
        self.nbs = self.ms // 8 + 8
        self.leaf_size = ls
        q = (m - 1) // ls
        self.n_levels = 1
        while q >= 2:
            q = q // 2
            self.n_levels += 1
        # n_levels = 1 + floor(log2(max(1, (m - 1) // leaf_size)))
        self.n_nodes = (1 << self.n_levels) - 1
        self.first_leaf = (self.n_nodes - 1) // 2
        self.key_bits = 1
        while (<cnp.int64_t>1 << self.key_bits) < m:
            self.key_bits += 1
        if state is None:
            self._set_arrays(np.array(W, dtype=np.float64, order='C', copy=True),
                             np.arange(m, dtype=np.int64),
                             np.zeros(self.n_nodes, dtype=np.int64),
                             np.zeros(self.n_nodes, dtype=np.int64),
                             np.zeros((self.n_nodes, d), dtype=np.float64),
                             np.zeros(self.n_nodes, dtype=np.float64), None)
            self.rebuild()
        else:
            self._set_arrays(np.array(W, dtype=np.float64, order='C', copy=True),
                             np.array(state['idx'], dtype=np.int64, copy=True),
                             np.array(state['node_start'], dtype=np.int64, copy=True),
                             np.array(state['node_end'], dtype=np.int64, copy=True),
                             np.array(state['centers'], dtype=np.float64, order='C', copy=True),
                             np.array(state['radius'], dtype=np.float64, copy=True),
                             np.array(state['radius0'], dtype=np.float64, copy=True))
            self._check_state()
            self._derive()
            self.loose_sum = float(state['loose_sum'])

    def _check_state(self):
        """Reject restored arrays that do not describe a tree over m rows (a corrupt pickle
        would otherwise make the nogil loops read out of bounds)."""
        nn, m = self.n_nodes, self.m
        ok = (self.idx_arr.shape == (m,) and self.centers_arr.shape == (nn, self.d)
              and all(a.shape == (nn,) for a in (self.nstart_arr, self.nend_arr,
                                                  self.radius_arr, self.radius0_arr)))
        ok = ok and np.array_equal(np.sort(self.idx_arr), np.arange(m))
        ok = ok and self.nstart_arr[0] == 0 and self.nend_arr[0] == m
        ok = ok and bool(np.all((0 <= self.nstart_arr) & (self.nstart_arr < self.nend_arr)
                                & (self.nend_arr <= m)))
        ok = ok and bool(np.all(np.isfinite(self.radius_arr)) and np.all(self.radius_arr >= 0))
        if not ok:
            raise ValueError("inconsistent partition-tree state")

    def __reduce__(self):
        return (_BallTree, (self.W_arr, self.leaf_size, self.get_state()))

    def _set_arrays(self, W, idx, nstart, nend, centers, radius, radius0):
        self.W_arr = W
        self.W = W
        self.idx_arr = idx
        self.idx = idx
        self.nstart_arr = nstart
        self.nstart = nstart
        self.nend_arr = nend
        self.nend = nend
        self.centers_arr = centers
        self.centers = centers
        self.radius_arr = radius
        self.radius = radius
        if radius0 is None:
            radius0 = np.zeros_like(radius)
        self.radius0_arr = radius0
        self.radius0 = radius0
        self.data_arr = np.empty_like(W)
        self.data = self.data_arr
        self.tile_arr = np.zeros(self.ms * self.d, dtype=np.float64)
        self.tile = self.tile_arr
        self.rec_arr = np.empty(self.n_nodes * (self.d + 2), dtype=np.float64)
        self.rec = self.rec_arr
        self.ct_arr = np.zeros(self.ms, dtype=np.float64)
        self.ct = self.ct_arr
        self.cta_arr = np.zeros(self.m, dtype=np.float64)
        self.cta = self.cta_arr
        self.at_arr = np.zeros(self.ms, dtype=np.float64)
        self.at = self.at_arr
        self.iota_arr = np.arange(self.ms, dtype=np.int64)
        self.iota = self.iota_arr
        self.umark_arr = np.zeros(self.m, dtype=np.uint8)
        self.umark = self.umark_arr
        self.ct_ok = False
        self.blk_arr = np.zeros((self.d + 2) * self.nbs, dtype=np.float64)
        self.blk = self.blk_arr
        self.pos_arr = np.empty(self.m, dtype=np.int64)
        self.pos = self.pos_arr
        self.cnorm_arr = np.empty(self.n_nodes, dtype=np.float64)
        self.cnorm = self.cnorm_arr

    cdef int _derive(self) except -1:
        """data, tile, pos, cnorm, rec, the blocks' balls and base_sum from W, idx, centers,
        radius, radius0."""
        cdef Py_ssize_t p, k, i, d = self.d
        cdef int oom
        cdef double s, tot = 0.0
        with nogil:
            for p in range(self.m):
                memcpy(&self.data[p, 0], &self.W[self.idx[p], 0], self.d * sizeof(double))
                self.pos[self.idx[p]] = p
                for k in range(self.d):
                    self.tile[SA_TILE(p, k, d)] = self.data[p, k]
            for i in range(self.n_nodes):
                self.cnorm[i] = sa_norm_safe(&self.centers[i, 0], self.d)
                tot = tot + (self.nend[i] - self.nstart[i]) * self.radius0[i]
                for k in range(d):
                    self.rec[sa_tree_rec_at(i, k, d)] = self.centers[i, k]
                self.rec[sa_tree_rec_at(i, d, d)] = self.radius[i]
                self.rec[sa_tree_rec_at(i, d + 1, d)] = self.cnorm[i] + self.radius[i]
            oom = _block_balls(&self.tile[0], self.m, d, self.nbs, &self.blk[0])
        if oom != 0:
            raise MemoryError()
        self.ct_ok = False          # idx may have changed
        self.base_sum = tot

    def rebuild(self):
        """Rebuild every node from the current W (original order)."""
        cdef double* key = <double*>malloc(self.m * sizeof(double))
        cdef Py_ssize_t p
        if key == NULL:
            raise MemoryError()
        with nogil:
            for p in range(self.m):
                self.idx[p] = p
            _build_nodes(&self.W[0, 0], self.m, self.d, &self.idx[0], self.n_nodes,
                         self.first_leaf, &self.nstart[0], &self.nend[0],
                         &self.centers[0, 0], &self.radius[0], key)
            for p in range(self.n_nodes):
                self.radius0[p] = self.radius[p]
        free(key)
        self._derive()
        self.loose_sum = 0.0
        self.version += 1

    def get_state(self):
        """The flat arrays that define the tree (copies)."""
        return {
            'idx': self.idx_arr.copy(), 'node_start': self.nstart_arr.copy(),
            'node_end': self.nend_arr.copy(), 'centers': self.centers_arr.copy(),
            'radius': self.radius_arr.copy(), 'radius0': self.radius0_arr.copy(),
            'loose_sum': self.loose_sum,
        }

    @property
    def nbytes(self):
        return int(sum(a.nbytes for a in (self.W_arr, self.data_arr, self.tile_arr,
                                           self.rec_arr, self.ct_arr, self.blk_arr,
                                           self.cta_arr, self.umark_arr,
                                           self.at_arr, self.iota_arr,
                                           self.idx_arr, self.pos_arr, self.nstart_arr, self.nend_arr,
                                           self.centers_arr, self.radius_arr,
                                           self.radius0_arr, self.cnorm_arr)))

    cdef void _view_upd(self, sa_tree_upd* t) noexcept:
        t.rec = &self.rec[0]
        t.radius = &self.radius[0]
        t.centers = &self.centers[0, 0]
        t.cnorm = &self.cnorm[0]
        t.nstart = &self.nstart[0]
        t.nend = &self.nend[0]
        t.blk = &self.blk[0]
        t.tile = &self.tile[0]
        t.m = self.m
        t.d = self.d
        t.n_nodes = self.n_nodes
        t.nbs = self.nbs

    cdef void _view(self, _TreeView* t) noexcept:
        t.data = &self.data[0, 0]
        t.idx = &self.idx[0]
        t.centers = &self.centers[0, 0]
        t.radius = &self.radius[0]
        t.cnorm = &self.cnorm[0]
        t.nstart = &self.nstart[0]
        t.nend = &self.nend[0]
        t.m = self.m
        t.d = self.d
        t.n_nodes = self.n_nodes
        t.first_leaf = self.first_leaf
        t.key_bits = self.key_bits

    def query(self, const double[::1] x not None, double b):
        """(sorted int64 indices, counters (nodes, inner products, reported w/o eval))."""
        cdef _TreeView t
        cdef _IdxBuf out, tmp
        cdef cnp.int64_t cnt[3]
        cdef cnp.int64_t* stack = <cnp.int64_t*>malloc((self.n_levels + 2) * sizeof(cnp.int64_t))
        cdef cnp.uint64_t* bitmap = <cnp.uint64_t*>calloc((self.m + 63) // 64, sizeof(cnp.uint64_t))
        cdef int rc
        if x.shape[0] != self.d:
            free(stack); free(bitmap)
            raise InputError(f"_BallTree.query: x must have length {self.d}, got {x.shape[0]}")
        if stack == NULL or bitmap == NULL:
            free(stack); free(bitmap)
            raise MemoryError()
        self._view(&t)
        out.a = NULL; out.n = 0; out.cap = 0
        tmp.a = NULL; tmp.n = 0; tmp.cap = 0
        cnt[0] = 0; cnt[1] = 0; cnt[2] = 0
        with nogil:
            rc = _tree_query_one(&t, &x[0], b, &out, &tmp, bitmap, stack, cnt)
        free(stack)
        free(bitmap)
        free(tmp.a)
        if rc != 0:
            free(out.a)
            raise MemoryError()
        res = np.empty(out.n, dtype=np.int64)
        cdef cnp.int64_t[::1] rv = res
        if out.n > 0:
            memcpy(&rv[0], out.a, out.n * sizeof(cnp.int64_t))
        free(out.a)
        return res, (int(cnt[0]), int(cnt[1]), int(cnt[2]))

    def query_batch(self, const double[:, ::1] X not None, double b, bint sort=True,
                    out=None):
        """CSR (indptr, indices) of the tree query for every row of X, nogil, prange over
        points with per-thread output buffers (the tree's own, kept between calls; fresh
        ones when another thread is querying this tree at the same time). ``out``: an int64
        array the indices are written into when it has room (they are then a view of its
        head). Returns (indptr, indices, counters)."""
        if X.shape[1] != self.d:
            raise InputError(f"_BallTree.query_batch: X must have {self.d} columns, got "
                             f"{X.shape[1]}")
        return self._batch(X, b, sort, out, 0, NULL, 0.0, NULL, NULL, NULL)

    def forward_batch(self, const double[:, ::1] X not None, double b,
                      const double[::1] a not None, double scale, double[::1] f_out not None,
                      double[:, ::1] H_out=None, cnp.int64_t[::1] fired_out=None,
                      bint pairs=False, out=None, _Anchor anchor=None, Py_ssize_t anchor_row=0,
                      bint keep=False):
        """The query of every row x_i of X fused with the forward pass over its answer (the
        tree engine's pass, docs/design.md §3): f_out[i] = sum_r scale a_r (<w_r, x_i> - b),
        H_out[i] = sum_r scale a_r w_r (optional), fired_out[i] = the count (optional), over
        the rows r that fire on x_i, summed in 8 lanes by tree position (lane p mod 8, each in
        the deterministic traversal order, combined in a fixed order: ``sa_tree_scan``,
        sparseadv/_src/sa_tree.h), with the scan's score (``sa_dot_seq``'s operations), so no
        score is computed twice. With ``pairs``, also the fired rows as CSR in that order
        (``out`` as in ``query_batch``). ``anchor`` (from ``anchor()``, of this tree): x_i
        is point anchor_row + i of its clean points; when x_i lies within its radius of that
        point, the walk is the anchored one, done once and kept (``_Anchor``), else a walk
        at x_i. ``keep``, with ``pairs``: the pairs of this batch (the whole batch, in this
        one call) stay in the tree's buffers for ``_pm_weight_grad_kept`` (indices is then
        None; kept until another query with pairs, a query or a change). Returns (indptr, indices, counters), indptr and
        indices None without ``pairs``; counters as in ``query_batch``, every row of a node
        wholly inside the half-space evaluated."""
        cdef Py_ssize_t n = X.shape[0]
        if X.shape[1] != self.d:
            raise InputError(f"_BallTree.forward_batch: X must have {self.d} columns, got "
                             f"{X.shape[1]}")
        _shapes("_BallTree.forward_batch", ("a", 0, a.shape[0], self.m),
                ("f_out", 0, f_out.shape[0], n))
        if H_out is not None and (H_out.shape[0] != n or H_out.shape[1] != self.d):
            raise InputError("_BallTree.forward_batch: H_out must have shape (n, d)")
        if fired_out is None:
            fired_out = np.empty(n, dtype=np.int64)
        elif fired_out.shape[0] != n:
            raise InputError("_BallTree.forward_batch: fired_out must have length n")
        if anchor is not None and (anchor.tree is not self or anchor_row < 0
                                   or anchor_row + n > anchor.n):
            raise InputError("_BallTree.forward_batch: the anchor must be one of this tree's "
                             "with rows anchor_row .. anchor_row + n")
        if n == 0:
            indptr = np.zeros(1, dtype=np.int64) if pairs else None
            return indptr, (np.zeros(0, dtype=np.int64) if pairs else None), (0, 0, 0)
        self._anc = anchor
        self._anc_row = anchor_row
        self._keep = keep and pairs
        try:
            return self._batch(X, b, False, out, 2 if pairs else 1, &a[0], scale, &f_out[0],
                               &H_out[0, 0] if H_out is not None else NULL, &fired_out[0])
        finally:
            self._anc = None
            self._keep = False

    def anchor(self, const double[:, ::1] X0 not None, double rho, _Anchor reuse=None):
        """An anchor for the passes of one attack around the clean points X0 (n x d): every
        later point within ``rho`` (l2) of its clean point is answered from one anchored walk
        per point (``sa_tree_walk_anchor``: the nodes that may hold a row firing anywhere in
        that ball), computed at the first pass that needs it and kept while the tree is not
        changed (an update or rebuild makes the anchor stale: walks at the points again).
        ``reuse``: an anchor of this tree whose buffers are taken over (no allocation)."""
        if X0.shape[1] != self.d:
            raise InputError(f"_BallTree.anchor: X0 must have {self.d} columns")
        if not (rho >= 0.0 and rho <= DBL_MAX):
            raise InputError(f"_BallTree.anchor: rho must be finite and >= 0, got {rho!r}")
        anc = reuse if reuse is not None and reuse.tree is self else _Anchor()
        anc._reset(self, X0, rho)
        return anc

    cdef object _batch(self, const double[:, ::1] X, double b, bint sort, object out, int mode,
                       const double* a, double scale, double* f, double* H,
                       cnp.int64_t* fired):
        """query_batch (mode 0) or forward_batch (1: without pairs, 2: with) on the tree's
        per-thread buffers, or fresh ones when another thread is using them."""
        cdef Py_ssize_t T = sa_omp_max_threads(), i
        cdef _IdxBuf* bufs
        cdef _IdxBuf* tmps
        cdef bint own = self._qbusy
        if T < 1:
            T = 1
        if own:
            bufs = <_IdxBuf*>calloc(T, sizeof(_IdxBuf))
            tmps = <_IdxBuf*>calloc(T, sizeof(_IdxBuf))
            if bufs == NULL or tmps == NULL:
                free(bufs); free(tmps)
                raise MemoryError()
        else:
            # a pass without pairs (mode 1) writes nothing into the buffers and leaves the
            # kept pairs; any other call ends their validity
            if mode != 1:
                self._kept_n = -1
            if self._reserve_threads(T, mode != 1) != 0:
                raise MemoryError()
            bufs, tmps = self._qbufs, self._qtmps
            self._qbusy = True
        try:
            return self._query_into(X, b, sort, out, bufs, tmps, T, mode, a, scale, f, H,
                                    fired)
        finally:
            if own:
                for i in range(T):
                    free(bufs[i].a)
                    free(tmps[i].a)
                free(bufs); free(tmps)
            else:
                self._qbusy = False

    cdef object _query_into(self, const double[:, ::1] X, double b, bint sort, object out,
                            _IdxBuf* bufs, _IdxBuf* tmps, Py_ssize_t T, int mode,
                            const double* a, double scale, double* f, double* H,
                            cnp.int64_t* fired):
        cdef Py_ssize_t n = X.shape[0], i, sl = self.n_levels + 2, d = self.d
        cdef Py_ssize_t tid, off
        cdef _TreeView t
        cdef cnp.int64_t* stacks = <cnp.int64_t*>malloc(T * sl * sizeof(cnp.int64_t))
        cdef cnp.int64_t* cnts = <cnp.int64_t*>calloc(T * 8, sizeof(cnp.int64_t))
        cdef int* fail = <int*>calloc(T, sizeof(int))
        cdef Py_ssize_t nw = (self.m + 63) // 64 if mode == 0 else 1
        cdef cnp.uint64_t* bitmaps = <cnp.uint64_t*>calloc(T * nw, sizeof(cnp.uint64_t))
        cdef cnp.int64_t c0 = 0, c1 = 0, c2 = 0
        cdef bint oom = False
        # the pass (modes 1, 2): per thread the scan ranges (at most one per leaf) and the
        # scan's scratch (8 d doubles, 64-byte aligned); the coefficients in tree order
        cdef Py_ssize_t nrg = 2 * (self.n_nodes - self.first_leaf) if mode != 0 else 0
        cdef Py_ssize_t nsc = 8 * d + 8 if mode != 0 else 0
        cdef cnp.int64_t* rgs = <cnp.int64_t*>malloc((T * nrg + 1) * sizeof(cnp.int64_t))
        cdef double* scr = <double*>malloc((T * nsc + 1) * sizeof(double))
        cdef double* scr0
        cdef sa_tree_pass tp
        cdef double[::1] ctv
        cdef _Anchor anc = self._anc
        cdef bint anchored = False
        cdef Py_ssize_t arow = self._anc_row, j, nra
        cdef double* ax0 = NULL
        cdef cnp.int64_t* arec = NULL
        cdef _IdxBuf* abufs = NULL
        cdef double rho = 0.0
        cdef cnp.int64_t listed
        indptr = np.zeros(n + 1, dtype=np.int64)
        seg_tid = np.zeros(n, dtype=np.int64)
        seg_off = np.zeros(n, dtype=np.int64)
        cdef cnp.int64_t[::1] ip = indptr
        cdef cnp.int64_t[::1] stid = seg_tid
        cdef cnp.int64_t[::1] soff = seg_off
        cdef cnp.int64_t[::1] ind
        if (stacks == NULL or cnts == NULL or fail == NULL or bitmaps == NULL or rgs == NULL
                or scr == NULL):
            free(stacks); free(cnts); free(fail); free(bitmaps); free(rgs); free(scr)
            raise MemoryError()
        self._view(&t)
        if mode != 0:
            # the tree's coefficient buffer, kept while a, scale and idx are those it was
            # computed from (one comparison of m doubles), or a fresh one when another thread
            # is querying
            if bufs != self._qbufs:
                ctv = np.zeros(self.ms, dtype=np.float64)
                _tree_coefs(&ctv[0], a, scale, &self.idx[0], self.m)
            else:
                ctv = self.ct
                if not (self.ct_ok and memcmp(&self.ct_scale, &scale, sizeof(double)) == 0
                        and memcmp(&self.cta[0], a, self.m * sizeof(double)) == 0):
                    _tree_coefs(&ctv[0], a, scale, &self.idx[0], self.m)
                    _tree_coefs(&self.at[0], a, 1.0, &self.idx[0], self.m)
                    memcpy(&self.cta[0], a, self.m * sizeof(double))
                    self.ct_scale = scale
                    self.ct_ok = True
            tp.rec = &self.rec[0]
            tp.nstart = &self.nstart[0]
            tp.nend = &self.nend[0]
            tp.tile = &self.tile[0]
            tp.ct = &ctv[0]
            # a kept pass writes positions (the gradient then works in tree order)
            tp.idx = &self.iota[0] if (mode == 2 and self._keep
                                       and bufs == self._qbufs) else &self.idx[0]
            tp.blk = &self.blk[0]
            tp.nbs = self.nbs
            tp.d = d
            tp.first_leaf = self.first_leaf
            scr0 = <double*>((<size_t>scr + 63) & ~(<size_t>63))
            if anc is not None and anc.version == self.version and (
                    not anc.has_b or memcmp(&anc.b, &b, sizeof(double)) == 0):
                if anc._reserve(T) != 0:
                    free(stacks); free(cnts); free(fail); free(bitmaps); free(rgs); free(scr)
                    raise MemoryError()
                anc.b = b
                anc.has_b = True
                anchored = True
                ax0 = &anc.X0[0, 0]
                arec = &anc.rec[0, 0]
                abufs = anc.bufs
                rho = anc.rho
        with nogil:
            if anchored:
                # the anchored walks still missing for the points of this call that lie in
                # their balls, each into its thread's buffer (no buffer moves in the scans)
                for i in prange(n, schedule='dynamic', chunksize=4):
                    tid = sa_omp_thread_num()
                    j = arow + i
                    if (fail[tid] == 0 and arec[4 * j + 2] < 0
                            and _within(&X[i, 0], ax0 + j * d, d, rho, scr0 + tid * nsc)):
                        if _buf_reserve(&abufs[tid], nrg) != 0:
                            fail[tid] = 1
                        else:
                            listed = 0
                            nra = sa_tree_walk_anchor(&tp, ax0 + j * d, rho, b,
                                                      abufs[tid].a + abufs[tid].n,
                                                      stacks + tid * sl, cnts + tid * 8,
                                                      &listed)
                            arec[4 * j] = tid
                            arec[4 * j + 1] = abufs[tid].n
                            arec[4 * j + 3] = listed
                            arec[4 * j + 2] = nra
                            abufs[tid].n = abufs[tid].n + 2 * nra
            for i in prange(n, schedule='dynamic', chunksize=4):
                tid = sa_omp_thread_num()
                off = bufs[tid].n
                if fail[tid] == 0:
                    if mode == 0:
                        if _tree_query_one(&t, &X[i, 0], b, &bufs[tid], &tmps[tid],
                                           bitmaps + tid * nw, stacks + tid * sl,
                                           cnts + tid * 8, sort) != 0:
                            fail[tid] = 1
                    else:
                        j = arow + i
                        if (anchored and arec[4 * j + 2] >= 0
                                and _within(&X[i, 0], ax0 + j * d, d, rho, scr0 + tid * nsc)):
                            nra = arec[4 * j + 2]       # the anchored walk's ranges
                            listed = arec[4 * j + 3]
                            if _tree_forward_one(&tp, &X[i, 0], b, f + i,
                                                 H + i * d if H != NULL else NULL, fired + i,
                                                 &bufs[tid] if mode == 2 else NULL,
                                                 abufs[arec[4 * j]].a + arec[4 * j + 1], nra,
                                                 listed, stacks + tid * sl, scr0 + tid * nsc,
                                                 cnts + tid * 8) != 0:
                                fail[tid] = 1
                        elif _tree_forward_one(&tp, &X[i, 0], b, f + i,
                                               H + i * d if H != NULL else NULL, fired + i,
                                               &bufs[tid] if mode == 2 else NULL,
                                               rgs + tid * nrg, -1, 0, stacks + tid * sl,
                                               scr0 + tid * nsc, cnts + tid * 8) != 0:
                            fail[tid] = 1
                stid[i] = tid
                soff[i] = off
                ip[i + 1] = bufs[tid].n - off
            for i in range(T):
                if fail[i]:
                    oom = True
                c0 = c0 + cnts[i * 8]
                c1 = c1 + cnts[i * 8 + 1]
                c2 = c2 + cnts[i * 8 + 2]
            for i in range(n):
                ip[i + 1] += ip[i]
        indices = None
        if not oom and mode == 2 and self._keep and bufs == self._qbufs:
            # kept: (thread, offset, count) per row, the pairs stay in the buffers
            if self._kseg_arr is None or self._kseg_arr.shape[0] < n:
                self._kseg_arr = np.empty((n, 3), dtype=np.int64)
            self._kseg = self._kseg_arr
            for i in range(n):
                self._kseg[i, 0] = stid[i]
                self._kseg[i, 1] = soff[i]
                self._kseg[i, 2] = ip[i + 1] - ip[i]
            self._kept_n = n
            self._kept_ver = self.version
            free(stacks); free(cnts); free(fail); free(bitmaps); free(rgs); free(scr)
            return indptr, None, (int(c0), int(c1), int(c2))
        if not oom and mode != 1:
            if (isinstance(out, np.ndarray) and out.dtype == np.int64 and out.ndim == 1
                    and out.flags.c_contiguous and out.flags.writeable
                    and out.shape[0] >= ip[n]):
                indices = out[:ip[n]]
            else:
                indices = np.empty(ip[n], dtype=np.int64)
            ind = indices
            with nogil:
                for i in prange(n, schedule='static'):
                    if ip[i + 1] > ip[i]:
                        memcpy(&ind[ip[i]], bufs[stid[i]].a + soff[i],
                               (ip[i + 1] - ip[i]) * sizeof(cnp.int64_t))
        free(stacks); free(cnts); free(fail); free(bitmaps); free(rgs); free(scr)
        if oom:
            raise MemoryError()
        return (indptr if mode != 1 else None), indices, (int(c0), int(c1), int(c2))

    def update(self, const cnp.int64_t[::1] rows not None, const double[:, ::1] values not None,
               bint full=False, double max_abs=INFINITY):
        """Overwrite rows (original indices) with values and widen radii on their paths.
        values[j] is the new row rows[j]; with ``full``, values is a whole m x d matrix and
        values[rows[j]] is (so a caller holding all of W need not gather a copy). The new
        rows must be finite with entries of magnitude <= ``max_abs`` (checked first, in one
        pass: nothing is written otherwise). Returns the largest |entry| of the new rows."""
        cdef Py_ssize_t j, r, p, k, s, d = self.d
        cdef double v, grow = 0.0, vmax = 0.0
        cdef double* cb = NULL
        cdef cnp.int64_t* P = NULL
        cdef double* V = NULL
        cdef Py_ssize_t u
        cdef sa_tree_upd up
        cdef bint finite = True
        if values.shape[1] != d or (full and values.shape[0] != self.m) or (
                not full and values.shape[0] != rows.shape[0]):
            raise InputError("_BallTree.update: values must have shape (len(rows), d), or "
                             "(m, d) with full=True")
        if not _rows_in_range(rows, self.m):
            raise InputError(f"_BallTree.update: rows must be in [0, {self.m})")
        with nogil:
            for j in range(rows.shape[0]):
                s = rows[j] if full else j
                for k in range(d):
                    v = fabs(values[s, k])
                    if not v <= DBL_MAX:           # inf or NaN
                        finite = False
                    elif v > vmax:
                        vmax = v
        if not finite:
            raise InputError("the new rows must be finite (contain NaN or infinity)")
        if vmax > max_abs:
            raise InputError(f"the new rows have entries up to {vmax:.3g}, above the limit "
                             f"{max_abs:.3g}")
        cb = <double*>malloc(d * sizeof(double))
        P = <cnp.int64_t*>malloc((rows.shape[0] + 1) * sizeof(cnp.int64_t))
        V = <double*>malloc((rows.shape[0] * d + 1) * sizeof(double))
        if cb == NULL or P == NULL or V == NULL:
            free(cb); free(P); free(V)
            raise MemoryError()
        self._view_upd(&up)
        with nogil:
            for j in range(rows.shape[0]):
                r = rows[j]
                s = r if full else j
                p = self.pos[r]
                memcpy(&self.W[r, 0], &values[s, 0], d * sizeof(double))
                memcpy(&self.data[p, 0], &values[s, 0], d * sizeof(double))
                for k in range(d):
                    self.tile[SA_TILE(p, k, d)] = values[s, k]
                self.umark[p] = 1
            # the positions that changed, increasing (the mark array is left zero again)
            u = 0
            for p in range(self.m):
                if self.umark[p]:
                    self.umark[p] = 0
                    P[u] = p
                    u = u + 1
            # radii widened on the paths, the blocks' balls recomputed (sa_tree_update)
            grow = sa_tree_update(&up, P, u, V, cb)
        free(cb); free(P); free(V)
        self.version += 1
        self.loose_sum += grow
        return vmax


cdef class _Anchor:
    """The anchored walks of a batch of clean points X0 (``_BallTree.anchor``): per point j,
    the position ranges of the nodes that may hold a row firing on some x with ||x - x0_j||
    <= rho (``sa_tree_walk_anchor``), computed at the first pass that needs them and kept for
    the later ones while the tree's version and the threshold b are those they were computed
    for. Ranges live in per-thread buffers; rec[j] = (thread, offset, count, rows listed),
    count -1 while not computed. Not for concurrent use by several Python threads."""
    cdef readonly object X0_arr
    cdef double[:, ::1] X0
    cdef readonly double rho
    cdef double b
    cdef bint has_b
    cdef readonly Py_ssize_t n
    cdef readonly object tree
    cdef cnp.int64_t version
    cdef object rec_arr
    cdef cnp.int64_t[:, ::1] rec
    cdef _IdxBuf* bufs
    cdef Py_ssize_t nb
    cdef public object path         # the wrapper's path decision for these points (or None)

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.bufs != NULL:
            for i in range(self.nb):
                free(self.bufs[i].a)
        free(self.bufs)

    cdef int _reserve(self, Py_ssize_t T):
        """At least T thread buffers (new ones empty); -1 when out of memory."""
        cdef _IdxBuf* nbuf
        if T > self.nb:
            nbuf = <_IdxBuf*>realloc(self.bufs, T * sizeof(_IdxBuf))
            if nbuf == NULL:
                return -1
            memset(nbuf + self.nb, 0, (T - self.nb) * sizeof(_IdxBuf))
            self.bufs = nbuf
            self.nb = T
        return 0

    cdef _reset(self, _BallTree tree, const double[:, ::1] X0, double rho):
        cdef Py_ssize_t i
        self.tree = tree
        self.version = tree.version
        self.path = None
        self.rho = rho
        self.has_b = False
        self.n = X0.shape[0]
        if (self.X0_arr is None or self.X0_arr.shape[0] < self.n
                or self.X0_arr.shape[1] != X0.shape[1]):
            self.X0_arr = np.empty((self.n, X0.shape[1]))
            self.rec_arr = np.empty((self.n, 4), dtype=np.int64)
        self.X0 = self.X0_arr[:self.n]
        self.X0[:, :] = X0
        self.rec = self.rec_arr[:self.n]
        self.rec[:, 2] = -1
        for i in range(self.nb):
            self.bufs[i].n = 0
