"""The robust training loss past its floor: constant rates against rules that react to rises.

    python tools/stepsize_floor.py [--m 4096 --n 64 --d 16 --iterations 400 --seeds 0 1000 2000]

E2's setting (``datasets.separated(n + 128, d, margin=0.1, seed=s + 1)``, the first n points;
``ShiftedReLUNet(m, d, seed=s)``; l2 PGD eps 0.1, 3 steps; dense engine), lr0 = ``auto_lr`` at
the start (n / (64 lambda_max)). Per seed and rule, the training attack's robust loss L_A(W_t)
over ``--iterations`` iterations: the fraction of iterations at which it fell, the first at
which it did not, min_t, last / min, the last rate over lr0. ``--strong T`` also evaluates,
from iteration T on, a stronger robust loss of the same weights (per point the largest
squared loss over 9 squared-loss PGD runs of 20 steps, one from the clean point and 8 from
seeded random starts) and prints the fraction of those iterations at which each fell. Rules:

- ``constant:F``   lr = F x lr0 throughout (F = 1 is lr="auto");
- ``halve``        lr halves after every iteration at which L_A did not fall;
- ``undo``         as ``halve``, and the step that led to the rise is undone (the weights go
                   back to the last iterate whose loss fell; a backtracking line search).
"""
import argparse

import numpy as np


def _strong_loss(net, X, y, eps):
    from sparseadv import PGD
    worst = np.zeros(len(y))
    for k in range(9):
        f = net.forward(PGD(eps, 20, random_start=k > 0, seed=k).perturb(net, X, y))
        worst = np.maximum(worst, 0.5 * (f - y) ** 2)
    return worst.mean()


def _run(rule, net0, X, y, lr0, iterations, eps, strong_from=None):
    from sparseadv import PGD, AdversarialTrainer
    from sparseadv.reproduce.e2_convergence import floor_diagnostics
    kind, _, factor = rule.partition(":")
    net = net0.copy()
    tr = AdversarialTrainer(net, PGD(eps, 3), lr=lr0 * (float(factor) if factor else 1.0),
                            engine="dense")
    losses, best_W, best, strong = [], None, np.inf, []
    for t in range(iterations):
        if strong_from is not None and t >= strong_from:
            strong.append(_strong_loss(net, X, y, eps))
        W_before = net.W.copy() if kind == "undo" else None
        loss = tr.step(X, y)["loss"]          # L_A(W_t), then the step from W_t
        if kind == "halve" and losses and loss >= losses[-1]:
            tr.lr_ *= 0.5
        elif kind == "undo" and loss >= best:  # back to the best iterate, a halved step
            tr.lr_ *= 0.5
            net.W = best_W.copy()
            tr.step(X, y)
        elif kind == "undo":
            best, best_W = loss, W_before
        losses.append(loss)
    out = dict(floor_diagnostics(losses), lr_over_lr0=tr.lr_ / lr0)
    if strong_from is not None:
        L = np.asarray(losses[strong_from:])
        out.update(strong_fell=float(np.mean(np.diff(strong) < 0)),
                   attack_fell_after=float(np.mean(np.diff(L) < 0)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    p.add_argument("--rules", nargs="+", default=["constant:1", "constant:0.7071", "halve",
                                                  "undo"])
    p.add_argument("--strong", type=int, default=None, metavar="T",
                   help="also a stronger robust loss from iteration T on (slow)")
    args = p.parse_args(argv)
    from sparseadv import ShiftedReLUNet, datasets
    from sparseadv.stepsize import auto_lr
    extra = (f" L_A fell from t = {args.strong} | strong loss fell from t = {args.strong} |"
             if args.strong is not None else "")
    print("| seed | rule | L_A fell | first not falling | min_t L_A (t) | last / min | "
          "last lr / lr0 |" + extra)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if extra else ""))
    for s in args.seeds:
        X, y = datasets.separated(args.n + 128, args.d, margin=0.1, seed=s + 1)
        X, y = X[:args.n], y[:args.n]
        net0 = ShiftedReLUNet(args.m, args.d, seed=s)
        lr0 = auto_lr(net0, X)
        for rule in args.rules:
            r = _run(rule, net0, X, y, lr0, args.iterations, args.eps, args.strong)
            more = (f" {r['attack_fell_after']:.3f} | {r['strong_fell']:.3f} |"
                    if args.strong is not None else "")
            print(f"| {s} | {rule} | {r['fell']:.3f} | {r['first_rise'] or 'never'} | "
                  f"{r['min']:.4f} ({r['argmin']}) | {r['last_over_min']:.4f} | "
                  f"{r['lr_over_lr0']:.3g} |" + more, flush=True)


if __name__ == "__main__":
    main()
