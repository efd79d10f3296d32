# The partition tree's nogil routines (the data layout and the algorithms are described in the
# header of _tree.pxi, which holds the _BallTree class that calls them): the view of a tree's
# flat arrays, sorting one answer, the leaf scan, one query's traversal with the node test of
# sparseadv/_src/sa_tree.h, and the build (quickselect and node construction).
from libc.math cimport sqrt
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
cimport numpy as cnp

cdef extern from "sa_tree.h":
    int sa_ctz64(unsigned long long x) noexcept nogil
    double sa_dist_safe(const double* a, const double* b, Py_ssize_t d) noexcept nogil
    int sa_sumsq_in_range(double q) noexcept nogil
    double sa_tree_slack(double cn, double radius, double xn, double b,
                         Py_ssize_t d) noexcept nogil
    int sa_tree_node_decide(double cx, double radius, double cn, double xn, double b,
                            Py_ssize_t d) noexcept nogil
    ctypedef struct sa_tree_pass:
        const double* rec
        const cnp.int64_t* nstart
        const cnp.int64_t* nend
        const double* tile
        const double* ct
        const cnp.int64_t* idx
        const double* blk
        Py_ssize_t d, first_leaf, nbs
    Py_ssize_t sa_tree_rec_at(Py_ssize_t node, Py_ssize_t f, Py_ssize_t d) noexcept nogil
    ctypedef struct sa_tree_upd:
        double* rec
        double* radius
        const double* centers
        const double* cnorm
        const cnp.int64_t* nstart
        const cnp.int64_t* nend
        double* blk
        const double* tile
        Py_ssize_t m, d, n_nodes, nbs
    void sa_tree_block_ball(const double* tile, Py_ssize_t m, Py_ssize_t d, Py_ssize_t nbs,
                            double* blk, Py_ssize_t j, double* c) noexcept nogil
    Py_ssize_t SA_TILE(Py_ssize_t p, Py_ssize_t k, Py_ssize_t d) noexcept nogil
    double sa_tree_update(const sa_tree_upd* t, const cnp.int64_t* P, Py_ssize_t u, double* V,
                          double* c) noexcept nogil
    Py_ssize_t sa_tree_walk(const sa_tree_pass* t, const double* x, double b, cnp.int64_t* rg,
                            cnp.int64_t* stack, cnp.int64_t* cnt,
                            cnp.int64_t* listed) noexcept nogil
    Py_ssize_t sa_tree_walk_anchor(const sa_tree_pass* t, const double* x0, double rho,
                                   double b, cnp.int64_t* rg, cnp.int64_t* stack,
                                   cnp.int64_t* cnt, cnp.int64_t* listed) noexcept nogil
    cnp.int64_t sa_tree_scan(const sa_tree_pass* t, const cnp.int64_t* rg, Py_ssize_t nr,
                             const double* x, double b, double* f, double* h,
                             cnp.int64_t* fired, cnp.int64_t* out, double* scratch,
                             cnp.int64_t* cnt) noexcept nogil

cdef enum:
    _INSERTION_MAX = 48


ctypedef struct _TreeView:
    const double* data
    const cnp.int64_t* idx
    const double* centers
    const double* radius
    const double* cnorm
    const cnp.int64_t* nstart
    const cnp.int64_t* nend
    Py_ssize_t m
    Py_ssize_t d
    Py_ssize_t n_nodes
    Py_ssize_t first_leaf
    int key_bits


cdef int _sort_idx(cnp.int64_t* a, Py_ssize_t n, _IdxBuf* tmp, int key_bits,
                   cnp.uint64_t* bitmap, Py_ssize_t nwords) noexcept nogil:
    """Sort n distinct non-negative int64 keys < 2**key_bits ascending, in place.

    Short runs: insertion sort. Runs with n >= nwords / 4 (nwords = ceil(m / 64), the caller's
    all-zero scratch bitmap): set one bit per key, then read the words in order with
    count-trailing-zeros, zeroing them again (O(n + m/64)). Otherwise LSD radix sort in
    ceil(key_bits / 11) passes of equal digit width (<= 11 bits). 0 on success, -1 when out of
    memory."""
    cdef Py_ssize_t i, j, total, k
    cdef cnp.int64_t v, c
    cdef cnp.int64_t cnt[2048]
    cdef cnp.int64_t* src
    cdef cnp.int64_t* dst
    cdef cnp.int64_t* sw
    cdef cnp.uint64_t w
    cdef int shift, passes, digit, mask, nbins
    if n <= _INSERTION_MAX:
        for i in range(1, n):
            v = a[i]
            j = i - 1
            while j >= 0 and a[j] > v:
                a[j + 1] = a[j]
                j = j - 1
            a[j + 1] = v
        return 0
    if bitmap != NULL and n * 4 >= nwords:
        for i in range(n):
            v = a[i]
            bitmap[v >> 6] |= (<cnp.uint64_t>1) << (v & 63)
        k = 0
        for i in range(nwords):
            w = bitmap[i]
            if w:
                bitmap[i] = 0
                while w:
                    a[k] = (i << 6) + sa_ctz64(w)
                    k = k + 1
                    w = w & (w - 1)
        return 0
    tmp.n = 0
    if _buf_reserve(tmp, n) != 0:
        return -1
    passes = (key_bits + 10) // 11
    digit = (key_bits + passes - 1) // passes
    nbins = 1 << digit
    mask = nbins - 1
    src = a
    dst = tmp.a
    shift = 0
    while shift < key_bits:
        memset(cnt, 0, nbins * sizeof(cnp.int64_t))
        for i in range(n):
            cnt[(src[i] >> shift) & mask] += 1
        total = 0
        for i in range(nbins):
            c = cnt[i]
            cnt[i] = total
            total = total + c
        for i in range(n):
            j = (src[i] >> shift) & mask
            dst[cnt[j]] = src[i]
            cnt[j] += 1
        sw = src
        src = dst
        dst = sw
        shift = shift + digit
    if src != a:
        memcpy(a, src, n * sizeof(cnp.int64_t))
    return 0


cdef inline void _scan_rows(const double* data, const cnp.int64_t* idx, Py_ssize_t s,
                            Py_ssize_t e, Py_ssize_t d, const double* x, double b,
                            _IdxBuf* out) noexcept nogil:
    """Append idx[p] for every p in [s, e) with <data[p], x> > b (capacity reserved by the
    caller). The dot product always sums k = 0..d-1 in order, four rows at a time."""
    cdef Py_ssize_t p, k
    cdef double a0, a1, a2, a3, xk
    cdef const double* r0
    cdef const double* r1
    cdef const double* r2
    cdef const double* r3
    cdef cnp.int64_t* o = out.a
    cdef Py_ssize_t n = out.n
    if d == 2:
        for p in range(s, e):
            r0 = data + p * 2
            if r0[0] * x[0] + r0[1] * x[1] > b:
                o[n] = idx[p]
                n = n + 1
        out.n = n
        return
    if d == 3:
        for p in range(s, e):
            r0 = data + p * 3
            if r0[0] * x[0] + r0[1] * x[1] + r0[2] * x[2] > b:
                o[n] = idx[p]
                n = n + 1
        out.n = n
        return
    p = s
    while p + 4 <= e:
        r0 = data + p * d
        r1 = r0 + d
        r2 = r1 + d
        r3 = r2 + d
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for k in range(d):
            xk = x[k]
            a0 = a0 + r0[k] * xk
            a1 = a1 + r1[k] * xk
            a2 = a2 + r2[k] * xk
            a3 = a3 + r3[k] * xk
        if a0 > b:
            o[n] = idx[p]
            n = n + 1
        if a1 > b:
            o[n] = idx[p + 1]
            n = n + 1
        if a2 > b:
            o[n] = idx[p + 2]
            n = n + 1
        if a3 > b:
            o[n] = idx[p + 3]
            n = n + 1
        p = p + 4
    while p < e:
        r0 = data + p * d
        a0 = 0.0
        for k in range(d):
            a0 = a0 + r0[k] * x[k]
        if a0 > b:
            o[n] = idx[p]
            n = n + 1
        p = p + 1
    out.n = n


cdef inline double _center_dot(const double* c, const double* x, Py_ssize_t d) noexcept nogil:
    """<c, x> summed in order from 0.0 (d = 3 written out: the same value, 0.0 + p = p)."""
    cdef Py_ssize_t k
    cdef double s = 0.0
    if d == 3:
        return c[0] * x[0] + c[1] * x[1] + c[2] * x[2]
    for k in range(d):
        s = s + c[k] * x[k]
    return s


cdef int _tree_query_one(const _TreeView* t, const double* x, double b, _IdxBuf* out,
                         _IdxBuf* tmp, cnp.uint64_t* bitmap, cnp.int64_t* stack,
                         cnp.int64_t* cnt, bint sort=True) noexcept nogil:
    """Append the original indices of {r : <w_r, x> > b} to ``out``, sorted unless ``sort``
    is false (then in traversal order, which is deterministic).
    cnt[0] += nodes visited, cnt[1] += inner products with rows, cnt[2] += rows reported
    without evaluation. 0 on success, -1 when out of memory."""
    cdef Py_ssize_t d = t.d
    cdef Py_ssize_t s, e, node, top
    cdef Py_ssize_t start = out.n
    cdef double xn = sa_norm_safe(x, d), cx
    cdef int decision
    stack[0] = 0
    top = 1
    while top > 0:
        top = top - 1
        node = stack[top]
        cnt[0] += 1
        cx = _center_dot(t.centers + node * d, x, d)
        decision = sa_tree_node_decide(cx, t.radius[node], t.cnorm[node], xn, b, d)
        if decision < 0:
            continue
        s = t.nstart[node]
        e = t.nend[node]
        if decision > 0:
            if _buf_reserve(out, e - s) != 0:
                return -1
            memcpy(out.a + out.n, t.idx + s, (e - s) * sizeof(cnp.int64_t))
            out.n = out.n + (e - s)
            cnt[2] += e - s
            continue
        if node >= t.first_leaf:
            if _buf_reserve(out, e - s) != 0:
                return -1
            _scan_rows(t.data, t.idx, s, e, d, x, b, out)
            cnt[1] += e - s
            continue
        stack[top] = 2 * node + 2
        stack[top + 1] = 2 * node + 1
        top = top + 2
    if not sort:
        return 0
    return _sort_idx(out.a + start, out.n - start, tmp, t.key_bits, bitmap,
                     (t.m + 63) // 64)


cdef int _tree_forward_one(const sa_tree_pass* t, const double* x, double b, double* f,
                           double* h, cnp.int64_t* fired, _IdxBuf* out, cnp.int64_t* rg,
                           Py_ssize_t nr, cnp.int64_t listed, cnp.int64_t* stack,
                           double* scratch, cnp.int64_t* cnt) noexcept nogil:
    """The query of ``_tree_query_one`` fused with the forward pass over its answer (the tree
    engine's pass, sparseadv/_src/sa_tree.h): ``sa_tree_walk`` lists the position ranges of
    the leaves not pruned and of the nodes wholly inside the half-space (the same node test)
    into rg, unless ``nr`` >= 0: then rg already holds nr ranges of ``listed`` rows (an
    anchored walk's, valid for x); ``sa_tree_scan`` tests the blocks of 8 positions in them
    and evaluates the rows of the blocks not pruned with the sequential dot product, summing
    f = sum scale a_r (<w_r, x> - b) and h = sum scale a_r w_r (d entries, overwritten;
    skipped when NULL) over the rows that fire, in 8 lanes by tree position; fired = their
    count; with ``out``, their original indices are appended in scan order. cnt[0] += nodes
    and blocks tested, cnt[1] += rows evaluated (cnt[2], rows reported without evaluation,
    stays 0: f needs every score). 0 on success, -1 when out of memory."""
    if nr < 0:
        nr = sa_tree_walk(t, x, b, rg, stack, cnt, &listed)
    if out == NULL:
        sa_tree_scan(t, rg, nr, x, b, f, h, fired, NULL, scratch, cnt)
        return 0
    if _buf_reserve(out, listed + 8) != 0:        # (8: room for the scan's packing)
        return -1
    out.n = out.n + sa_tree_scan(t, rg, nr, x, b, f, h, fired, out.a + out.n, scratch, cnt)
    return 0


cdef inline bint _within(const double* x, const double* x0, Py_ssize_t d, double rho,
                         double* diff) noexcept nogil:
    """||x - x0||_2 <= rho, with room for the rounding of the computed norm (a relative
    1e-12: the computed difference and norm are within a few ulps)."""
    cdef Py_ssize_t k
    for k in range(d):
        diff[k] = x[k] - x0[k]
    return sa_norm_safe(diff, d) * (1.0 + 1e-12) <= rho


def _tree_node_decision(double cx, double radius, double cnorm, double xn, double b, Py_ssize_t d):
    """The node test of a query (``sa_tree_node_decide``): -1 prune, 1 report the whole node,
    0 undecided; exposed so that tests can check each term of the bound directly."""
    return sa_tree_node_decide(cx, radius, cnorm, xn, b, d)


def _safe_norm(const double[::1] x not None):
    """||x||_2 as the tree computes it for a query (``sa_norm_safe``: no under/overflow)."""
    return sa_norm_safe(&x[0], x.shape[0]) if x.shape[0] > 0 else 0.0


cdef void _select(double* key, cnp.int64_t* idx, Py_ssize_t n, Py_ssize_t kth) noexcept nogil:
    """Reorder key/idx (in parallel) so that key[kth] is the kth smallest, smaller keys before
    it and larger after (3-way quickselect, median-of-three pivot)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, mid, lt, i, gt
    cdef double pivot, ka, kb, kc, tk
    cdef cnp.int64_t ti
    while hi > lo:
        mid = lo + (hi - lo) // 2
        ka = key[lo]
        kb = key[mid]
        kc = key[hi]
        if ka < kb:
            if kb < kc:
                pivot = kb
            elif ka < kc:
                pivot = kc
            else:
                pivot = ka
        else:
            if ka < kc:
                pivot = ka
            elif kb < kc:
                pivot = kc
            else:
                pivot = kb
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            if key[i] < pivot:
                tk = key[i]; key[i] = key[lt]; key[lt] = tk
                ti = idx[i]; idx[i] = idx[lt]; idx[lt] = ti
                lt = lt + 1
                i = i + 1
            elif key[i] > pivot:
                tk = key[i]; key[i] = key[gt]; key[gt] = tk
                ti = idx[i]; idx[i] = idx[gt]; idx[gt] = ti
                gt = gt - 1
            else:
                i = i + 1
        if kth < lt:
            hi = lt - 1
        elif kth > gt:
            lo = gt + 1
        else:
            return


cdef void _build_nodes(const double* W, Py_ssize_t m, Py_ssize_t d, cnp.int64_t* idx,
                       Py_ssize_t n_nodes, Py_ssize_t first_leaf, cnp.int64_t* nstart,
                       cnp.int64_t* nend, double* centers, double* radius,
                       double* key) noexcept nogil:
    cdef Py_ssize_t node, s, e, n, p, k, far_a, mid
    cdef double dist, best, v
    cdef double* c
    cdef const double* w
    nstart[0] = 0
    nend[0] = m
    for node in range(n_nodes):
        s = nstart[node]
        e = nend[node]
        n = e - s
        c = centers + node * d
        for k in range(d):
            c[k] = 0.0
        for p in range(s, e):
            w = W + idx[p] * d
            for k in range(d):
                c[k] = c[k] + w[k]
        for k in range(d):
            c[k] = c[k] / n
        best = -1.0
        far_a = s
        for p in range(s, e):
            w = W + idx[p] * d
            dist = 0.0
            for k in range(d):
                v = w[k] - c[k]
                dist = dist + v * v
            if dist > best:
                best = dist
                far_a = p
        if sa_sumsq_in_range(best):
            radius[node] = sqrt(best)
        else:
            # tiny or huge rows: the sums of squares under- or overflowed; recompute safely
            best = 0.0
            for p in range(s, e):
                dist = sa_dist_safe(W + idx[p] * d, c, d)
                if dist > best:
                    best = dist
            radius[node] = best
        if node >= first_leaf:
            _order_blocks(W, d, idx, s, e, key)
            continue
        mid = s + n // 2
        nstart[2 * node + 1] = s
        nend[2 * node + 1] = mid
        nstart[2 * node + 2] = mid
        nend[2 * node + 2] = e
        _split_from(W, d, idx, s, e, far_a, mid, key)


cdef void _split_from(const double* W, Py_ssize_t d, cnp.int64_t* idx, Py_ssize_t s,
                      Py_ssize_t e, Py_ssize_t far_a, Py_ssize_t mid, double* key) noexcept nogil:
    """Reorder idx[s:e) so that the rows before ``mid`` are those with the smallest
    projections on u = w_b - w_a, w_a the row at position ``far_a`` and w_b the row farthest
    from it (the split of ``_build_nodes`` and ``_split_rows``)."""
    cdef Py_ssize_t p, k, far_b = far_a
    cdef double dist, best = -1.0, v
    cdef const double* w
    cdef const double* wa = W + idx[far_a] * d
    cdef const double* wb
    for p in range(s, e):
        w = W + idx[p] * d
        dist = 0.0
        for k in range(d):
            v = w[k] - wa[k]
            dist = dist + v * v
        if dist > best:
            best = dist
            far_b = p
    if not best > 0.0:
        return              # all rows identical (or not comparable): any order will do
    wb = W + idx[far_b] * d
    for p in range(s, e):
        w = W + idx[p] * d
        v = 0.0
        for k in range(d):
            v = v + w[k] * (wb[k] - wa[k])
        key[p] = v
    _select(key + s, idx + s, e - s, mid - s)


cdef void _split_rows(const double* W, Py_ssize_t d, cnp.int64_t* idx, Py_ssize_t s,
                      Py_ssize_t e, Py_ssize_t mid, double* key) noexcept nogil:
    """Reorder idx[s:e) so that the rows before ``mid`` are those with the smallest
    projections on u = w_b - w_a (w_a the row farthest from the mean, w_b the row farthest
    from w_a: the split of ``_build_nodes``)."""
    cdef Py_ssize_t p, k, far_a = s, n = e - s
    cdef double dist, best, v
    cdef double c[64]
    cdef const double* w
    if d > 64:
        far_a = s           # wide rows: no mean, the first row serves as the anchor
    else:
        for k in range(d):
            c[k] = 0.0
        for p in range(s, e):
            w = W + idx[p] * d
            for k in range(d):
                c[k] = c[k] + w[k]
        for k in range(d):
            c[k] = c[k] / n
        best = -1.0
        for p in range(s, e):
            w = W + idx[p] * d
            dist = 0.0
            for k in range(d):
                v = w[k] - c[k]
                dist = dist + v * v
            if dist > best:
                best = dist
                far_a = p
    _split_from(W, d, idx, s, e, far_a, mid, key)


cdef void _order_blocks(const double* W, Py_ssize_t d, cnp.int64_t* idx, Py_ssize_t s,
                        Py_ssize_t e, double* key) noexcept nogil:
    """Order the rows of a leaf, positions [s, e), so that each aligned block of 8 positions
    holds rows close together (the pass tests a ball per block, sa_tree_scan): halve the
    range at the multiple of 8 nearest its middle, recursively, while one lies strictly
    inside (the split of ``_split_rows``)."""
    cdef Py_ssize_t lo[64]
    cdef Py_ssize_t hi[64]
    cdef Py_ssize_t top = 1, a, z, first, last, mid
    lo[0] = s
    hi[0] = e
    while top > 0:
        top = top - 1
        a = lo[top]
        z = hi[top]
        first = (a & ~7) + 8
        last = (z - 1) & ~7
        if first > last:
            continue
        mid = ((a + z) // 2 + 4) & ~7
        if mid < first:
            mid = first
        elif mid > last:
            mid = last
        _split_rows(W, d, idx, a, z, mid, key)
        if top + 2 > 64:
            continue        # (unreachable: each halving at least halves the blocks)
        lo[top] = a
        hi[top] = mid
        lo[top + 1] = mid
        hi[top + 1] = z
        top = top + 2


cdef int _block_balls(const double* tile, Py_ssize_t m, Py_ssize_t d, Py_ssize_t nbs,
                      double* blk) noexcept nogil:
    """The ball of every block of 8 positions (``sa_tree_block_ball``; blocks past the last
    row stay zero). 0, or -1 when out of memory."""
    cdef Py_ssize_t j
    cdef double* c = <double*>malloc(d * sizeof(double))
    if c == NULL:
        return -1
    for j in range((m + 7) // 8):
        sa_tree_block_ball(tile, m, d, nbs, blk, j, c)
    free(c)
    return 0


cdef void _tree_coefs(double* ct, const double* a, double scale, const cnp.int64_t* idx,
                      Py_ssize_t m) noexcept nogil:
    """The pass's coefficients in tree order: ct[p] = scale * a[idx[p]]."""
    cdef Py_ssize_t p
    for p in range(m):
        ct[p] = scale * a[idx[p]]
