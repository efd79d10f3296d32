"""Why sparseadv sets OMP_WAIT_POLICY=PASSIVE: the same work under each wait policy.

    python tools/omp_wait_table.py [--m 65536 --n 1024 --d 64]

Each policy runs in a fresh process (libgomp reads the variable once, at load). The work
is one training step of the chosen engine (OpenMP regions of the compiled core) followed by a
pooled numpy BLAS call; medians of 5.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import sparseadv as sa
m, n, d = map(int, sys.argv[1:4])
engine = sys.argv[4]
X, y = sa.datasets.sphere(n, d, seed=1)
net = sa.ShiftedReLUNet(m, d, seed=0)
tr = sa.AdversarialTrainer(net, sa.PGD(0.05, 3), lr=1.0, engine=engine)
tr.step(X, y)
ts = []
for _ in range(5):
    t = time.perf_counter()
    tr.step(X, y)
    Z = X @ net.W[:4096].T                 # a pooled numpy BLAS call right after
    ts.append(time.perf_counter() - t)
print(json.dumps(float(np.median(ts))))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=65536)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--engines", nargs="+", default=["dense", "certified"])
    a = ap.parse_args()
    print(f"m={a.m} n={a.n} d={a.d}: one step + one numpy GEMM, median of 5\n")
    print("| engine | OMP_WAIT_POLICY | s | vs PASSIVE |")
    print("|---|---|---|---|")
    for engine in a.engines:
        res = {}
        for policy in ("PASSIVE", "ACTIVE"):
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            out = subprocess.run([sys.executable, "-c", CHILD, str(a.m), str(a.n), str(a.d),
                                  engine], env=env, capture_output=True, text=True,
                                 check=True).stdout
            res[policy] = json.loads(out.strip().splitlines()[-1])
        for policy, t in res.items():
            print(f"| {engine} | {policy} | {t:.3f} | {t / res['PASSIVE']:.2f}x |")

if __name__ == "__main__":
    main()
