"""Growth of an engine's work with the width m, and with the number of points n.

    python tools/engine_table.py [--m-min 12] [--m-max 17] [--n 1024] [--d 64] [--iters 3]
    python tools/engine_table.py --lr 2000 --m-min 12 --m-max 18 --ns 256 512 1024 2048 4096 --n-m 65536

Runs the engine (default certified) at m = 2^m_min ... 2^m_max with n points, and, with
``--ns``, at each n of the list with m = ``--n-m`` (same setting and measurement as
``engine_compare.py``: ``sparseadv.analysis.contenders.run``; engine-vs-engine tables come from
that script), and fits inner products per iteration ~ m^alpha (and ~ n^beta) with a 95%
interval (``theory.fit_power_law``). ``--lr`` fixes the learning rate (default "auto", which
itself grows with n: docs/benchmarks.md, "Why the certified engine's inner products grow").
"""
import argparse

from sparseadv.analysis.contenders import run
from sparseadv.theory import fit_power_law


def _lr(text):
    return text if text == "auto" else float(text)


def _sweep(a, axis, values, m_of, n_of):
    print(f"| {axis} | inner products/iter | / (m n) | candidate pairs per pass per point | "
          "fired per point | re-anchored/iter | s/iter |")
    print("|---|---|---|---|---|---|---|")
    ips = []
    for v in values:
        m, n = m_of(v), n_of(v)
        _, r = run(a.engine, m, n, a.d, a.steps, a.iters, 0.05, 0, lr=a.lr)
        ips.append(r["inner_products"])
        print(f"| {v} | {r['inner_products']:.3e} | {r['inner_products'] / (m * n):.4f} | "
              f"{r['candidate_pairs'] / (a.steps + 1) / n:.1f} | "
              f"{r['fired_pairs'] / n:.1f} | {r['reanchored']:.0f} | {r['seconds']:.3f} |",
              flush=True)
    fit = fit_power_law(values, ips)
    print(f"\nFitted: inner products per iteration ~ {axis}^{fit.exponent:.3f} "
          f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}] (95%; {axis} = {values[0]} ... {values[-1]}; "
          f"dense: exactly {axis}^1).\n")
    return fit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="certified")
    ap.add_argument("--m-min", type=int, default=12)
    ap.add_argument("--m-max", type=int, default=17)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--lr", type=_lr, default="auto")
    ap.add_argument("--ns", type=int, nargs="*", default=[],
                    help="also sweep n over these values at m = --n-m")
    ap.add_argument("--n-m", type=int, default=65536)
    a = ap.parse_args(argv)
    print(f"## {a.engine} inner products per iteration (d = {a.d}, steps = {a.steps}, "
          f"l2 eps 0.05, lr = {a.lr}; medians over {a.iters} iterations after the first)\n")
    print(f"Against m (n = {a.n}):\n")
    _sweep(a, "m", [2 ** k for k in range(a.m_min, a.m_max + 1)], lambda v: v, lambda v: a.n)
    if a.ns:
        print(f"Against n (m = {a.n_m}):\n")
        _sweep(a, "n", sorted(a.ns), lambda v: a.n_m, lambda v: v)


if __name__ == "__main__":
    main()
