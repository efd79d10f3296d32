"""Where one engine's iteration spends its time: seconds per compiled kernel, per iteration.

    python tools/kernel_profile.py --engine certified --m 262144 --d 64 --steps 10
    python tools/kernel_profile.py --engine tree --d 3

Every ``sparseadv._core`` function an engine module calls (and the partition tree's
``query_batch`` / ``forward_batch`` / ``update_from``) is wrapped with a timer; the table
gives, per kernel, the median over the iterations after the first of its seconds per iteration and its calls per
iteration, next to the iteration's wall time and its system time (``os.times``: page faults of
fresh allocations show up there) and the process's peak resident memory. Same data and setting as ``engine_compare.py``; engine
options as there (``certified:lazy=false``). The README's breakdown of the certified engine's
iteration and the per-pass kernel times quoted in comments come from this script.
"""
import argparse
import collections
import os
import resource
import time

import numpy as np

from sparseadv.analysis.contenders import parse_engine
from sparseadv.analysis.grid import problem


class _TimedCore:
    """Stands in for ``_core`` in an engine module: same functions, each call timed."""

    def __init__(self, core, log, passes):
        self._core = core
        self._log = log
        self._passes = passes

    def __getattr__(self, name):
        fn = getattr(self._core, name)
        if not callable(fn):
            return fn
        return _timed(fn, name, self._log, self._passes)


def _timed(fn, name, log, passes=None):
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        finally:
            log[name][0] += time.perf_counter() - t0
            log[name][1] += 1
        if name == "nm_pass" and passes is not None:
            # the certified engine's passes: (fresh, pairs evaluated, float64 re-evaluations,
            # state flips)
            fresh = args[12] if len(args) > 12 else kwargs["fresh"]
            passes.append((bool(fresh),) + tuple(out[:3]))
        return out
    return call


def profile(spec, m, n, d, steps, iters, eps, seed, lr="auto"):
    import sparseadv as sa
    from sparseadv import _core
    from sparseadv import network
    from sparseadv.engines import candidates, certified, dense, tree
    name, options = parse_engine(spec)
    log = collections.defaultdict(lambda: [0.0, 0])
    passes = []                                 # per certified pass (see _timed)
    modules = (candidates, certified, dense, tree, network)   # every caller of _core in a step
    for mod in modules:
        mod._core = _TimedCore(_core, log, passes)
    try:
        net, X, y = problem(m, d=d, n=n, seed=seed)
        tr = sa.AdversarialTrainer(net, sa.PGD(eps, steps), lr=lr, engine=name, **options)
        pt = getattr(tr.engine, "tree", None)
        if pt is not None:
            for meth in ("query_batch", "forward_batch", "update_from"):
                setattr(pt, meth, _timed(getattr(pt, meth), "tree." + meth, log))
        tr.step(X, y)
        rows = []
        for _ in range(iters):
            log.clear()
            passes.clear()
            t0 = os.times()
            rec = tr.step(X, y)
            t1 = os.times()
            rows.append((rec["seconds"], t1.system - t0.system,
                         {k: tuple(v) for k, v in log.items()}, list(passes)))
    finally:
        for mod in modules:
            mod._core = _core
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="certified")
    p.add_argument("--m", type=int, default=2 ** 18)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=lambda t: t if t == "auto" else float(t), default="auto",
                   help="learning rate: a float or 'auto' (default)")
    a = p.parse_args()
    rows = profile(a.engine, a.m, a.n, a.d, a.steps, a.iters, a.eps, a.seed, a.lr)
    names = sorted({k for _, _, log, _ in rows for k in log})
    med = {k: (float(np.median([log.get(k, (0.0, 0))[0] for _, _, log, _ in rows])),
               float(np.median([log.get(k, (0.0, 0))[1] for _, _, log, _ in rows])))
           for k in names}
    print(f"{a.engine}: m={a.m} n={a.n} d={a.d} steps={a.steps} eps={a.eps} (l2), lr={a.lr}; "
          f"medians over {a.iters} iterations after the first\n")
    print(f"iteration: {np.median([r[0] for r in rows]):.3f} s wall, "
          f"{np.median([r[1] for r in rows]):.3f} s system time; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(W: {a.m * a.d * 8 / 2 ** 20:.1f} MB)\n")
    print("| kernel | s / iteration | calls / iteration | s / call |")
    print("|---|---|---|---|")
    for k in sorted(names, key=lambda k: -med[k][0]):
        s, c = med[k]
        print(f"| {k} | {s:.4f} | {c:g} | {s / c if c else 0:.4f} |")
    per_iter = [ps for *_, ps in rows]
    if per_iter[0] and all(len(ps) == len(per_iter[0]) for ps in per_iter):
        fresh, ev, ex, fl = np.median(np.array(per_iter, dtype=float), axis=0).T
        print("\ncertified passes (medians over iterations), in order: "
              + ", ".join(("fresh" if f else "tracked") + f" {e:.3g} evaluated ({x:.3g} in "
                          f"float64, {v:.3g} flips)" for f, e, x, v in zip(fresh, ev, ex, fl)))


if __name__ == "__main__":
    main()
