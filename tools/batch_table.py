"""Mini-batches against full batch: seconds and inner products per epoch, and robust accuracy
reached per second of training on digits.

    python tools/batch_table.py epochs [--m 65536 --n 8192 --d 64 --batches 4096 1024 256 64]
    python tools/batch_table.py digits [--m 4096 --eps 0.05 --seconds 60 --batches 64 256]

``epochs``: for the dense and certified engines and each batch size (and full batch), one
warm-up epoch then ``--repeats`` timed epochs (median) on ``sparseadv.analysis.grid.problem``
data; columns: seconds per epoch, iterations per epoch, counted inner products per epoch.

``digits``: ``datasets.load_digits`` (binary, unit-norm), full batch and each batch size,
trained for ``--seconds`` of wall time each (the same budget), evaluated after every
``--eval-every`` seconds of training: robust accuracy on the test split from the margin
ensemble (``sparseadv.robustness.robust_accuracy``, evaluation time not counted). The
learning rate (``lr="auto"``: ``stepsize.auto_lr`` on all training points at the initial
weights) is computed once, untimed, and used for every batch size. Prints the
robust accuracy reached against training seconds and the best one with its time.
"""
import argparse
import time

import numpy as np


def _batch(text):
    return None if text == "full" else int(text)


def epochs_table(args):
    from sparseadv import PGD, AdversarialTrainer
    from sparseadv.analysis.grid import problem
    print(f"m={args.m} n={args.n} d={args.d} steps={args.steps} eps={args.eps} (l2), "
          f"lr=auto; median of {args.repeats} epochs after one warm-up epoch\n")
    print("| engine | batch size | iterations / epoch | s / epoch | inner products / epoch |")
    print("|---|---|---|---|---|")
    for engine in args.engines:
        for batch_size in [None] + args.batches:
            net, X, y = problem(args.m, args.n, args.d)
            tr = AdversarialTrainer(net, PGD(args.eps, args.steps), lr="auto", engine=engine,
                                    batch_size=batch_size, seed=0)
            tr.fit(X, y, epochs=1, progress=False)
            times, work = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                hist = tr.fit(X, y, epochs=1, progress=False)
                times.append(time.perf_counter() - t0)
                work = int(hist["inner_products"].sum())
            print(f"| {engine} | {batch_size or 'full'} | {len(hist['loss'])} | "
                  f"{np.median(times):.3g} | {work:.3e} |")


def _robust_accuracy(net, X, y, eps):
    from sparseadv.robustness import robust_accuracy
    return robust_accuracy(net, X, y, eps, seed=0)


def digits_table(args):
    from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets
    split = datasets.load_digits(seed=0)
    X, y = split.X_train, split.y_train
    Xt, yt = split.X_test[:args.eval_points], split.y_test[:args.eval_points]
    print(f"digits (0-4 vs 5-9), n_train={len(X)}, {len(Xt)} test points, m={args.m}, "
          f"eps={args.eps} (train and evaluation, l2), engine={args.engine}, "
          f"{args.seconds:g} s of training each")
    lr = args.lr
    if lr == "auto":    # once, untimed: every run starts from the same network and rate
        from sparseadv.stepsize import auto_lr
        lr = auto_lr(ShiftedReLUNet(args.m, X.shape[1], seed=0), X)
    print(f"lr = {lr:.4g} for every batch size\n")
    print("| batch size | training s | epochs | robust accuracy (test, margin ensemble) |")
    print("|---|---|---|---|")
    best = {}
    for batch_size in [None] + args.batches:
        net = ShiftedReLUNet(args.m, X.shape[1], seed=0)
        tr = AdversarialTrainer(net, PGD(args.eps, args.steps), lr=lr, engine=args.engine,
                                batch_size=batch_size, seed=0)
        trained, next_eval, done = 0.0, args.eval_every, 0
        while trained < args.seconds:
            t0 = time.perf_counter()
            tr.step(X, y)
            trained += time.perf_counter() - t0
            done += 1
            if trained >= next_eval or trained >= args.seconds:
                next_eval += args.eval_every
                acc = _robust_accuracy(net, Xt, yt, args.eps)
                epochs = done / tr.batches_per_epoch(len(X))
                print(f"| {batch_size or 'full'} | {trained:.3g} | {epochs:.3g} | {acc:.3f} |")
                if acc > best.get(batch_size, (-1.0, 0.0))[0]:
                    best[batch_size] = (acc, trained)
    print("\n| batch size | best robust accuracy | reached after s | accuracy per s |")
    print("|---|---|---|---|")
    for batch_size, (acc, seconds) in best.items():
        print(f"| {batch_size or 'full'} | {acc:.3f} | {seconds:.3g} | {acc / seconds:.3g} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="table", required=True)
    e = sub.add_parser("epochs")
    e.add_argument("--m", type=int, default=4096)
    e.add_argument("--n", type=int, default=1024)
    e.add_argument("--d", type=int, default=16)
    e.add_argument("--batches", type=int, nargs="+", default=[256, 64])
    e.add_argument("--engines", nargs="+", default=["dense", "certified"])
    e.add_argument("--repeats", type=int, default=3)
    g = sub.add_parser("digits")
    g.add_argument("--m", type=int, default=4096)
    g.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    g.add_argument("--engine", default="dense")
    g.add_argument("--lr", default="auto", type=lambda t: t if t == "auto" else float(t))
    g.add_argument("--seconds", type=float, default=60.0)
    g.add_argument("--eval-every", type=float, default=10.0)
    g.add_argument("--eval-points", type=int, default=200)
    for q in (e, g):
        q.add_argument("--steps", type=int, default=3)
        q.add_argument("--eps", type=float, default=0.05)
    args = p.parse_args(argv)
    (epochs_table if args.table == "epochs" else digits_table)(args)


if __name__ == "__main__":
    main()
