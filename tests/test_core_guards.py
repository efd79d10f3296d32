"""Guards of the sparseadv._core wrappers: no argument may crash the interpreter.

Every public wrapper validates its offsets, indices, sizes and size arguments (unless called
with the internal ``check=False``). The randomized test below mutates one argument at a time of
every wrapper (None, wrong dtype, wrong ndim, wrong length, non-contiguous, NaN/inf, offsets
that decrease or point past the end, indices out of range, negative and huge sizes, 2**62
blocks, huge ints) and runs the cases in subprocesses, a batch per process: the process must
exit 0 and every case must either run or raise a clean TypeError/ValueError (InputError and
InputTypeError are those). A SIGSEGV, SIGFPE, heap corruption or hang fails the test and
names the last case started.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sparseadv import _core
from sparseadv.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The cases, as source run in the subprocesses (and imported here for the coverage check).
CASES_SRC = textwrap.dedent(r'''
    import numpy as np
    from sparseadv import _core

    n, m, d = 7, 5, 3
    i64 = lambda v: np.array(v, dtype=np.int64)
    i32 = lambda v: np.array(v, dtype=np.int32)

    def problem(rng):
        X = rng.standard_normal((n, d))
        W = rng.standard_normal((m, d))
        M = rng.random((m, n)) < 0.5                      # neuron-major pairs
        cptr = np.concatenate(([0], np.cumsum(M.sum(1)))).astype(np.int64)
        cidx = np.nonzero(M)[1].astype(np.int32)
        indptr = np.concatenate(([0], np.cumsum(M.T.sum(1)))).astype(np.int64)
        indices = np.nonzero(M.T)[1].astype(np.int64)
        return X, W, cptr, cidx, indptr, indices

    def specs(rng):
        """name -> (function, args, kwargs): a valid call of every public wrapper."""
        X, W, cptr, cidx, indptr, indices = problem(rng)
        a, b, nnz = rng.standard_normal(m), 0.1, len(cidx)
        rows = i64([0, 2, 4])
        nr = len(rows)
        tree = _core._BallTree(W, 2)
        return {
            "dense_forward": (_core.dense_forward, [X, W, a, b, 1.0, np.empty(n)],
                              dict(H_out=np.empty((n, d)), fired_out=np.empty(n, np.int64),
                                   volume=1000)),
            "dense_weight_grad": (_core.dense_weight_grad,
                                  [X, W, a, b, np.ones(n), np.empty((m, d))], dict(volume=0)),
            "dense_fired_pairs": (_core.dense_fired_pairs, [X, W, b], dict(tile=100)),
            "hsr_brute_csr": (_core.hsr_brute_csr, [W, X, b], dict(tile=0)),
            "nm_forward": (_core.nm_forward, [X, W, a, b, 1.0, cptr, cidx, np.empty(n)],
                           dict(H_out=np.empty((n, d)), fired_out=np.empty(n, np.int64),
                                mask_out=np.empty(nnz, np.uint8))),
            # a fresh pass (keep bits, deadlines out) and a tracked one (deadlines in), the
            # float32 screen on: every array and scalar the kernel reads
            "nm_pass": (_core.nm_pass,
                        [X, W, a, b, 1.0, cptr, cidx, np.zeros(nnz, np.uint8),
                         np.zeros((n, d)), np.zeros(n), np.zeros(n, np.int64), np.empty(n),
                         True],
                        dict(kept_only=False, keep_thr=np.full(m, -0.5), screen=True,
                             deadline=np.zeros(nnz, np.float32), records=np.empty(5, np.int64),
                             clock=0.0, dual_norm=np.linalg.norm(W, axis=1),
                             slack=np.full(m, 1e-9), cap=0.5)),
            "nm_pass.tracked": (_core.nm_pass,
                                [X + 0.01, W, a, b, 1.0, cptr, cidx,
                                 rng.integers(0, 4, nnz).astype(np.uint8), np.zeros((n, d)),
                                 np.zeros(n), np.zeros(n, np.int64), np.empty(n), False],
                                dict(kept_only=True, screen=True,
                                     deadline=rng.random(nnz).astype(np.float32), clock=0.5,
                                     dual_norm=np.linalg.norm(W, axis=1),
                                     slack=np.full(m, 1e-9), cap=1.0)),
            "nm_weight_grad": (_core.nm_weight_grad,
                               [X, W, a, b, np.ones(n), cptr, cidx, rows, np.empty((nr, d))],
                               dict(mask=np.ones(nnz, np.uint8))),
            "pm_forward": (_core.pm_forward, [X, W, a, b, 1.0, indptr, indices, np.empty(n)],
                           dict(H_out=np.empty((n, d)), fired_out=np.empty(n, np.int64))),
            "csr_transpose": (_core.csr_transpose, [indptr, indices, m], {}),
            "pm_weight_grad": (_core.pm_weight_grad, [X, W, a, b, np.ones(n), indptr, indices],
                               {}),
            "anchor_candidates": (_core.anchor_candidates,
                                  [X, W, rows, np.zeros(nr), np.full(nr, 0.1), np.ones(n)],
                                  dict(band_h=0.1, block=2)),
            "filter_candidates": (_core.filter_candidates,
                                  [X, W, rows, np.zeros(nr), np.full(nr, 0.1), np.ones(n),
                                   cptr, cidx], {}),
            "csr_replace_rows": (_core.csr_replace_rows,
                                 [cptr, cidx, i64([1, 3]), i64([0, 2, 3]), i32([4, 5, 0])],
                                 dict(out_idx=np.empty(nnz + 3, np.int32))),
            "row_drift": (_core.row_drift, [W, W + 0.1, rows, np.empty(nr)], {}),
            "copy_rows_norms": (_core.copy_rows_norms,
                                [W, np.zeros((m, d)), rows, np.empty(m), np.empty(m)], {}),
            "copy_rows_norms32": (_core.copy_rows_norms32,
                                  [W, np.zeros((m, d), np.float32), np.ones(m), np.zeros(m),
                                   rows, np.empty(m), np.empty(m)], {}),
            "row_drift32": (_core.row_drift32,
                            [W, W.astype(np.float32), np.ones(m), np.zeros(m), rows,
                             np.empty(nr)],
                            dict(norm2=np.empty(m), norm1=np.empty(m))),
            "row_norms": (_core.row_norms, [W, np.empty(m), np.empty(m)], {}),
            "sub_scaled_rows": (_core.sub_scaled_rows,
                                [W.copy(), rows, np.ones((nr, d)), 0.5],
                                dict(gmax=np.empty(1))),
            "swap_scaled_rows": (_core.swap_scaled_rows,
                                 [W.copy(), rows, np.ones((nr, d)), 0.5],
                                 dict(done=np.zeros(1, np.uint8), gmax=np.empty(1))),
            "_BallTree": (_core._BallTree, [W, 2], {}),
            "_BallTree.query": (tree.query, [X[0].copy(), b], {}),
            "_BallTree.query_batch": (tree.query_batch, [X, b], dict(sort=False,
                                                               out=np.empty(64, np.int64))),
            "_BallTree.update": (tree.update, [rows, np.ones((nr, d))], dict(full=False)),
        }

    def array_mutations(v, rng):
        """Ways to break an array argument (each returns a new object)."""
        with np.errstate(invalid="ignore", over="ignore"):    # casts of NaN/inf
            return _array_mutations(v, rng)

    def _array_mutations(v, rng):
        out = [None, v.tolist(), v[:-1].copy() if v.shape[0] else np.zeros(1, v.dtype),
               np.concatenate([v, v[:1]]) if v.ndim == 1 else np.concatenate([v, v[:1]]),
               v.reshape(-1) if v.ndim > 1 else v.reshape(1, -1),
               np.repeat(v, 2, axis=0)[::2],                    # non-contiguous
               v.astype(np.float32), v.astype(np.int32), v.astype(np.int64),
               v.astype(np.uint8), v.astype(np.complex128), np.zeros((0,) + v.shape[1:], v.dtype)]
        if v.dtype.kind == "f" and v.size:
            for bad in (np.nan, np.inf, -np.inf, 1e308, 1e-320):
                w = v.copy(); w.flat[rng.integers(v.size)] = bad; out.append(w)
        if v.dtype.kind in "iu" and v.size:
            info = np.iinfo(v.dtype)
            for bad in (-1, n, m, n + 1, m + 1, 10 ** 8, 2 ** 31 - 1, info.max, info.min):
                if not info.min <= bad <= info.max:
                    continue
                w = v.copy(); w.flat[rng.integers(v.size)] = bad; out.append(w)
                w = v.copy(); w.flat[0] = bad; out.append(w)
                w = v.copy(); w.flat[-1] = bad; out.append(w)
            if v.size > 2:
                w = v.copy(); w[1], w[-2] = w[-2], w[1]; out.append(w)   # non-monotone
                out.append(v[::-1].copy())
        return out

    def scalar_mutations(v):
        if isinstance(v, bool):
            return ["x", None, 2]
        if isinstance(v, int):
            return [-1, -2 ** 62, 2 ** 31, 2 ** 61, 2 ** 62, 2 ** 63, 2 ** 70, 1.5, "x", None]
        return [np.nan, np.inf, -np.inf, 1e308, "x", None]

    def cases(seed):
        """(case id, name, position or keyword, mutated value) for every mutation."""
        rng = np.random.default_rng(seed)
        out = []
        for name, (fn, args, kw) in specs(rng).items():
            slots = [(i, v) for i, v in enumerate(args)] + list(kw.items())
            for slot, v in slots:
                muts = (array_mutations(v, rng) if isinstance(v, np.ndarray)
                        else scalar_mutations(v))
                for j in range(len(muts)):
                    out.append((f"{name}[{slot}]#{j}", name, slot, j))
        return out

    def run_case(seed, name, slot, j):
        rng = np.random.default_rng(seed)
        sp = specs(rng)
        fn, args, kw = sp[name]
        args, kw = list(args), dict(kw)
        v = args[slot] if isinstance(slot, int) else kw[slot]
        rng2 = np.random.default_rng(seed + 1)
        muts = array_mutations(v, rng2) if isinstance(v, np.ndarray) else scalar_mutations(v)
        if isinstance(slot, int):
            args[slot] = muts[j]
        else:
            kw[slot] = muts[j]
        fn(*args, **kw)
''')

RUNNER = CASES_SRC + textwrap.dedent(r'''
    import sys
    seed, lo, hi = map(int, sys.argv[1:4])
    allc = cases(seed)
    # every mutation list must be rebuilt identically by run_case (same generator stream)
    for cid, name, slot, j in allc[lo:hi]:
        sys.stdout.write("START " + cid + "\n"); sys.stdout.flush()
        try:
            run_case(seed, name, slot, j)
            res = "ok"
        except (TypeError, ValueError) as e:
            res = type(e).__name__
        except BaseException as e:
            res = "BAD " + type(e).__name__ + ": " + str(e)[:200]
        sys.stdout.write("END " + cid + " " + res + "\n"); sys.stdout.flush()
''')


def _namespace():
    ns = {}
    exec(compile(CASES_SRC, "core_guard_cases", "exec"), ns)
    return ns


def test_every_public_wrapper_has_a_mutation_spec():
    """A new _core wrapper must be added to the mutation test."""
    ns = _namespace()
    covered = set(ns["specs"](np.random.default_rng(0)))
    public = {k for k, v in vars(_core).items()
              if callable(v) and not k.startswith("_") and not isinstance(v, type)
              and k not in ("check_allocation",)}
    info_only = {"openmp_enabled", "omp_max_threads", "active_kernels_simd"}   # no arguments
    assert public - info_only <= covered, sorted(public - info_only - covered)
    # and every valid call in the spec runs
    for name, (fn, args, kw) in ns["specs"](np.random.default_rng(0)).items():
        fn(*args, **kw)


@pytest.mark.parametrize("seed", [0, 1])
def test_mutating_every_argument_never_crashes(seed):
    ns = _namespace()
    total = len(ns["cases"](seed))
    assert total > 1500
    env = dict(os.environ, OMP_NUM_THREADS="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    batch = total                              # one process per seed (startup dominates)
    counts = {}
    for lo in range(0, total, batch):
        try:
            proc = subprocess.run([sys.executable, "-c", RUNNER, str(seed), str(lo),
                                   str(lo + batch)], env=env, capture_output=True, text=True,
                                  timeout=240)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode()
            started = [l for l in out.splitlines() if l.startswith("START")]
            pytest.fail(f"hang: last case started {started[-1] if started else None}")
        lines = proc.stdout.splitlines()
        started = [l for l in lines if l.startswith("START")]
        assert proc.returncode == 0, (f"crash (rc {proc.returncode}) in "
                                      f"{started[-1] if started else None}: "
                                      f"{proc.stderr[-2000:]}")
        ends = [l.split(" ", 2) for l in lines if l.startswith("END")]
        assert len(ends) == min(batch, total - lo)
        bad = [e for e in ends if e[2].startswith("BAD")]
        assert not bad, bad[:10]
        for e in ends:
            counts[e[2]] = counts.get(e[2], 0) + 1
    # most mutations must be refused (a mutation test whose cases all run proves nothing)
    assert counts.get("ValueError", 0) + counts.get("InputError", 0) > total // 3, counts


# ------------------------------------------------------------------- regression (issue 15.1)
REGRESSION = textwrap.dedent(r'''
    import numpy as np
    from sparseadv import _core
    from sparseadv.errors import InputError
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((10, 8)), rng.standard_normal((5, 8))
    calls = {}
    # compact_pairs (removed) checked only the first and last offsets: [0, 10**8, 4] was a
    # SIGSEGV, [0, 6, 4] read past the end; the same offsets reach nm_pass, which walks them
    for off in ([0, 10 ** 8, 4], [0, 6, 4], [0, 3, 2, 4]):
        k = len(off) - 1
        calls["nm_pass %r" % (off,)] = lambda off=off, k=k: _core.nm_pass(
            X, W[:k], np.ones(k), 0.1, 1.0, np.array(off, np.int64),
            np.arange(4, dtype=np.int32), np.zeros(4, np.uint8), np.zeros((10, 8)),
            np.zeros(10), np.zeros(10, np.int64), np.zeros(10), True)
    # anchor_candidates: block = 2**62 overflowed the buffer size (heap corruption), 2**61
    # looped forever (SIGFPE seen at d = 8)
    for block in (2 ** 62, 2 ** 61, 2 ** 21, -1, 2 ** 70):
        calls["anchor_candidates block=%d" % block] = lambda block=block: (
            _core.anchor_candidates(X, W, np.arange(5), np.zeros(5), np.zeros(5), np.ones(10),
                                    0.0, block))
    for name, call in calls.items():
        print("START", name, flush=True)
        try:
            call()
            print("ACCEPTED", name, flush=True)
        except InputError as e:
            print("REFUSED", name, "|", e, flush=True)
''')


def test_issue_cases_are_refused_cleanly():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", REGRESSION], env=env, capture_output=True,
                          text=True, timeout=60)
    started = [l for l in proc.stdout.splitlines() if l.startswith("START")]
    assert proc.returncode == 0, (started[-1:], proc.stderr[-2000:])
    refused = [l for l in proc.stdout.splitlines() if l.startswith("REFUSED")]
    assert len(refused) == len(started) == 8, proc.stdout
    for line in refused:
        word = "cptr" if "nm_pass" in line else "block"
        assert word in line.split("|")[1], line


def test_large_valid_block_gives_the_same_lists():
    """A block larger than the number of rows is valid and changes nothing."""
    rng = np.random.default_rng(3)
    X, W = rng.standard_normal((40, 8)), rng.standard_normal((30, 8))
    args = (X, W, np.arange(30), np.zeros(30), np.full(30, 0.1), np.ones(40), 0.2)
    ref = _core.anchor_candidates(*args)
    for block in (1, 7, 64, 2 ** 20):
        got = _core.anchor_candidates(*args, block)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
        assert got[2:] == ref[2:]


def test_check_false_skips_only_the_scans():
    """check=False (engines, on their own arrays) gives the same answers on valid input."""
    rng = np.random.default_rng(4)
    cptr = np.array([0, 2, 2, 5], np.int64)
    cidx = np.array([1, 3, 0, 2, 4], np.int32)
    X, Wp, a = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), np.ones(3)
    outs = []
    for check in (True, False):
        st, H, F0 = np.zeros(5, np.uint8), np.empty((5, 4)), np.empty(5)
        cnt, f = np.empty(5, np.int64), np.empty(5)
        r = _core.nm_pass(X, Wp, a, 0.1, 1.0, cptr, cidx, st, H, F0, cnt, f, True, check=check)
        outs.append((r, st, H, F0, cnt, f))
    assert outs[0][0] == outs[1][0]
    assert all(np.array_equal(u, v) for u, v in zip(outs[0][1:], outs[1][1:]))
    W = rng.standard_normal((6, 3))
    rows = np.array([1, 4], np.int64)
    W1, W2 = W.copy(), W.copy()
    _core.sub_scaled_rows(W1, rows, np.ones((2, 3)), 0.5)
    _core.sub_scaled_rows(W2, rows, np.ones((2, 3)), 0.5, check=False)
    assert np.array_equal(W1, W2)
    with pytest.raises(InputError, match="distinct"):
        _core.sub_scaled_rows(W1, np.array([1, 1], np.int64), np.ones((2, 3)), 0.5)
    assert np.array_equal(W1, W2)          # refused before any write
    with pytest.raises(InputError, match="increasing"):     # the scan, with check=True
        _core.nm_pass(X, Wp, a, 0.1, 1.0, cptr, np.array([3, 1, 0, 2, 4], np.int32), st, H,
                      F0, cnt, f, True)
