"""Dense vs certified engine: time and work per iteration, and the growth of the certified
engine's inner products with the width m (a Markdown table on stdout).

Setting: data uniform on the sphere, random +-1 labels, l2 PGD with eps = 0.05, lr = "auto",
b = sqrt(0.4 ln m). Time = median over the iterations after the first (the first builds the
candidate sets); counts likewise. Usage:

    PYTHONPATH=. python benchmarks/engine_table.py [--m-max 18] [--n 1024] [--d 64] [--iters 10]
"""
import argparse
import time

import numpy as np

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet


def sphere(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, rng.choice([-1.0, 1.0], n)


def run(engine, m, n, d, steps, iters, eps=0.05, seed=0):
    X, y = sphere(n, d, seed)
    net = ShiftedReLUNet(m, d, seed=seed + 1)
    tr = AdversarialTrainer(net, PGD(eps, steps=steps), lr="auto", engine=engine)
    recs = []
    for _ in range(iters + 1):
        t = time.perf_counter()
        rec = tr.step(X, y)
        rec["wall"] = time.perf_counter() - t
        recs.append(rec)
    rest = recs[1:]
    med = lambda k: float(np.median([r[k] for r in rest]))
    return {"time": med("wall"), "first": recs[0]["wall"], "ip": med("inner_products"),
            "cand": med("candidate_pairs"), "fired": med("fired_pairs"),
            "reanch": med("reanchored"), "reanch_mean": float(np.mean([r["reanchored"] for r in rest])),
            "loss": recs[-1]["loss"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m-max", type=int, default=18)
    ap.add_argument("--m-min", type=int, default=12)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dense-iters", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--no-dense", action="store_true",
                    help="skip the dense runs (certified rows only)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the m sweep")
    ap.add_argument("--no-compare", action="store_true", help="skip the dense-vs-certified table")
    args = ap.parse_args()
    n, d, M = args.n, args.d, 2 ** args.m_max

    if not args.no_compare:
        compare(args, n, d, M)
    if not args.no_sweep:
        sweep(args, n, d)


def compare(args, n, d, M):
    print(f"## dense vs certified at m = 2^{args.m_max}, n = {n}, d = {d}, eps = 0.05 (l2)\n")
    print("| steps | engine | s/iter (median) | first iter s | inner products/iter | "
          "candidate pairs/iter | fired pairs | re-anchored/iter (median, mean) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for steps in args.steps:
        dn = None if args.no_dense else run("dense", M, n, d, steps, args.dense_iters)
        ce = run("certified", M, n, d, steps, args.iters)
        for name, r in (("dense", dn), ("certified", ce)):
            if r is None:
                continue
            sp = f"{dn['time'] / r['time']:.1f}x" if name == "certified" and dn else ""
            print(f"| {steps} | {name} | {r['time']:.3f} | {r['first']:.3f} | {r['ip']:.3e} | "
                  f"{r['cand']:.3e} | {r['fired']:.3e} | {r['reanch']:.0f}, {r['reanch_mean']:.0f} | {sp} |")
        if dn:
            print(f"|  | work ratio dense/certified (inner products) | | | "
                  f"{dn['ip'] / ce['ip']:.1f}x | | | | |")
        else:
            print(f"|  | dense inner products would be (K + 2) m n = {(steps + 2) * M * n:.3e}: "
                  f"ratio {(steps + 2) * M * n / ce['ip']:.1f}x | | | | | | | |")


def sweep(args, n, d):
    print(f"\n## certified inner products per iteration vs m (n = {n}, d = {d}, steps = 3)\n")
    print("| m | inner products/iter | / (m n) | candidate pairs per pass per point | "
          "fired per point | re-anchored/iter (mean) | s/iter |")
    print("|---|---|---|---|---|---|---|")
    ms, ips = [], []
    for k in range(args.m_min, args.m_max + 1):
        m = 2 ** k
        r = run("certified", m, n, d, 3, args.iters)
        ms.append(m)
        ips.append(r["ip"])
        print(f"| 2^{k} | {r['ip']:.3e} | {r['ip'] / (m * n):.4f} | {r['cand'] / 4 / n:.1f} | "
              f"{r['fired'] / n:.1f} | {r['reanch_mean']:.0f} | {r['time']:.3f} |")
    alpha = np.polyfit(np.log(ms), np.log(ips), 1)[0]
    print(f"\nFitted exponent: inner products per iteration ~ m^alpha with alpha = {alpha:.3f} "
          f"(m = 2^{args.m_min} ... 2^{args.m_max}; dense: alpha = 1).")


if __name__ == "__main__":
    main()
