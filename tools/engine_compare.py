"""Per-iteration time and work of engines and references on one setting, measured in one run.

    python tools/engine_compare.py --engines dense tree certified --m 262144 --n 1024 \
        --d 3 --steps 3 --iters 10

Each contender runs in a fresh process (one after the other), so none inherits another's
heap or cache state. Data: uniform on the sphere, random ±1 labels, l2 PGD (eps 0.05),
lr = "auto" (all from the same start; ``sparseadv.analysis.contenders.run``). Time is the
median over the iterations after the first (the first builds the structures and picks lr);
counters are medians too. Prints a Markdown table.

An engine may carry options, ``NAME:KEY=VALUE[,KEY=VALUE]`` (values: true/false, numbers or
text), so variants compare in one run, e.g. the certified engine's tracked passes on and off:

    python tools/engine_compare.py --engines certified certified:lazy=false --d 16

References: ``oracle`` (the same iteration handed the exact fired pairs of every pass, found
outside the timed region) and ``torch32`` / ``torch64`` (PyTorch on CPU: autograd PGD and an
SGD step, float32 / float64; needs torch):

    python tools/engine_compare.py --engines dense certified oracle torch32 torch64 --d 64
"""
import argparse
import multiprocessing

from sparseadv.analysis.contenders import parse_engine, run


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["dense", "tree", "certified"])
    p.add_argument("--m", type=int, default=2 ** 18)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--dense-iters", type=int, default=3)
    p.add_argument("--tree-iters", type=int, default=None,
                   help="iterations of the tree engine (default --iters; fewer at high d)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=lambda t: t if t == "auto" else float(t), default="auto",
                   help="learning rate of every contender: a float or 'auto' (default)")
    a = p.parse_args()
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for e in a.engines:
        it = {"dense": a.dense_iters,
              "tree": a.tree_iters or a.iters}.get(parse_engine(e)[0], a.iters)
        with ctx.Pool(1) as pool:
            first, med = pool.apply(run, (e, a.m, a.n, a.d, a.steps, it, a.eps, a.seed, a.lr))
        rows.append((e, it, first, med))
    print(f"m={a.m} n={a.n} d={a.d} steps={a.steps} eps={a.eps} (l2), lr={a.lr}; medians over "
          f"the iterations after the first\n")
    print("| engine | iters | s/iter | first iter s | inner products/iter | candidate pairs/iter "
          "| fired pairs | nodes visited | re-anchored | speed-up vs dense | work ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = next((r for r in rows if parse_engine(r[0])[0] == "dense"), None)
    for e, it, first, med in rows:
        su = wr = ""
        if base is not None:
            su = f"{base[3]['seconds'] / med['seconds']:.1f}x"
            wr = (f"{base[3]['inner_products'] / med['inner_products']:.1f}x"
                  if med["inner_products"] else "")
        print(f"| {e} | {it} | {med['seconds']:.3f} | {first:.2f} | {med['inner_products']:.3e} | "
              f"{med['candidate_pairs']:.3e} | {med['fired_pairs']:.3e} | "
              f"{med['nodes_visited']:.3e} | {med['reanchored']:.0f} | {su} | {wr} |")


if __name__ == "__main__":
    main()
