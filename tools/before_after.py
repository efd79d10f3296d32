"""One engine's iteration timed through the public API of a given checkout, so that two commits
(before and after a change) are compared with the same script in one run.

    python tools/before_after.py --repo /path/to/checkout --engine certified --m 262144 --d 64 \
        --steps 3 --iters 6 --lr 2000

Runs in its own process with ``--repo`` first on ``sys.path`` (that checkout's built
``sparseadv``), on ``datasets.sphere(n, d, seed=1)``, ``ShiftedReLUNet(m, d, seed=0)`` and
``PGD(eps, steps)`` with a fixed learning rate (``lr="auto"`` has changed between commits): one
warm-up iteration, then the median of ``--iters``. Prints one JSON line: median seconds, inner
products and the last loss. Alternate the checkouts in a shell loop; only the public API
(``ShiftedReLUNet``, ``PGD``, ``AdversarialTrainer``, ``datasets.sphere``) is used, which every
commit since the first has.
"""
import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="checkout whose built sparseadv is timed")
    p.add_argument("--engine", default="certified")
    p.add_argument("--m", type=int, default=2 ** 18)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--lr", type=float, default=2000.0)
    a = p.parse_args(argv)
    repo = os.path.abspath(a.repo)
    sys.path.insert(0, repo)
    import numpy as np
    import sparseadv as sa
    if not os.path.abspath(sa.__file__).startswith(repo + os.sep):
        raise SystemExit(f"imported sparseadv from {sa.__file__}, not from {repo}")
    X, y = sa.datasets.sphere(a.n, a.d, seed=1)
    net = sa.ShiftedReLUNet(a.m, a.d, seed=0)
    tr = sa.AdversarialTrainer(net, sa.PGD(a.eps, a.steps), lr=a.lr, engine=a.engine)
    tr.step(X, y)
    recs = [tr.step(X, y) for _ in range(a.iters)]
    print(json.dumps({"repo": repo, "engine": a.engine, "m": a.m, "n": a.n, "d": a.d,
                      "steps": a.steps, "seconds": float(np.median([r["seconds"] for r in recs])),
                      "inner_products": float(np.median([r["inner_products"] for r in recs])),
                      "loss": recs[-1]["loss"]}))


if __name__ == "__main__":
    main()
