"""Growth of the certified engine's work with the width m (the issue's alpha <= 0.85 check).

    python tools/engine_table.py [--m-min 12] [--m-max 17] [--n 1024] [--d 64] [--iters 3]

Runs the certified engine at m = 2^m_min ... 2^m_max (same setting and measurement as
``engine_compare.py``: ``sparseadv.analysis.contenders.run``; engine-vs-engine tables come from that script)
and fits inner products per iteration ~ m^alpha with a 95% interval (``theory.fit_power_law``).
"""
import argparse

from sparseadv.analysis.contenders import run
from sparseadv.theory import fit_power_law


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m-min", type=int, default=12)
    ap.add_argument("--m-max", type=int, default=17)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    print(f"## certified inner products per iteration vs m (n = {a.n}, d = {a.d}, "
          f"steps = {a.steps}; medians over {a.iters} iterations after the first)\n")
    print("| m | inner products/iter | / (m n) | candidate pairs per pass per point | "
          "fired per point | re-anchored/iter | s/iter |")
    print("|---|---|---|---|---|---|---|")
    ms, ips = [], []
    for k in range(a.m_min, a.m_max + 1):
        m = 2 ** k
        _, r = run("certified", m, a.n, a.d, a.steps, a.iters, 0.05, 0)
        ms.append(m)
        ips.append(r["inner_products"])
        print(f"| 2^{k} | {r['inner_products']:.3e} | {r['inner_products'] / (m * a.n):.4f} | "
              f"{r['candidate_pairs'] / (a.steps + 1) / a.n:.1f} | "
              f"{r['fired_pairs'] / a.n:.1f} | {r['reanchored']:.0f} | {r['seconds']:.3f} |")
    fit = fit_power_law(ms, ips)
    print(f"\nFitted: inner products per iteration ~ m^{fit.exponent:.3f} "
          f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}] (95%; m = 2^{a.m_min} ... 2^{a.m_max}; "
          f"dense: exactly m^1).")


if __name__ == "__main__":
    main()
