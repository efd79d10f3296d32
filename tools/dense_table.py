"""Seconds per dense iteration and GFLOP/s, next to the plain-numpy iteration, in one run.

    python tools/dense_table.py [--m 65536 --n 1024 --d 64 --steps 3 --repeats 5]

GFLOP/s uses the nominal 16 m n d flops of a 3-step iteration (4 m n d (steps + 1) in general,
``theory.dense_flops``); the blocked engine actually does one extra score pass (2 m n d) in its
weight-gradient pass, which is not credited.
"""
import argparse

from sparseadv.analysis.timing import median_times


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--m", type=int, default=65536)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--volume", type=int, default=262144,
                   help="max m*n*k of one tile dgemm in the dense kernels")
    args = p.parse_args()
    import sparseadv as sa
    from sparseadv import reference, theory
    X, y = sa.datasets.sphere(args.n, args.d, seed=1)
    net = sa.ShiftedReLUNet(args.m, args.d, seed=0)
    W0 = net.W.copy()
    lr = 1.0
    tr = sa.AdversarialTrainer(net, sa.PGD(args.eps, args.steps), lr=lr, engine="dense",
                               volume=args.volume)
    tr.step(X, y)                                            # warm-up
    t_dense, = median_times([lambda: tr.step(X, y)], args.repeats)
    t_numpy, = median_times([lambda: reference.iteration(W0, net.a, net.b, X, y, args.eps,
                                                         args.steps, lr)], args.repeats)
    flops = theory.dense_flops(args.m, args.n, args.d, args.steps)
    print(f"m={args.m} n={args.n} d={args.d} steps={args.steps} eps={args.eps} "
          f"(median of {args.repeats}; nominal {flops / 1e9:.1f} GFLOP per iteration)\n")
    print("| implementation | s / iteration | GFLOP/s (nominal) | vs plain numpy |")
    print("|---|---|---|---|")
    print(f"| sparseadv dense engine (blocked, tile volume={args.volume}) | {t_dense:.3f} | "
          f"{flops / t_dense / 1e9:.1f} | {t_numpy / t_dense:.2f}x faster |")
    print(f"| plain numpy (full n x m temporaries) | {t_numpy:.3f} | {flops / t_numpy / 1e9:.1f} | 1 |")


if __name__ == "__main__":
    main()
