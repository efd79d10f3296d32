"""Print the Markdown table of the partition tree against blocked brute force.

m Gaussian rows N(0, I_d) (default m = 2**17), n = 1024 unit-norm queries uniform on the
sphere, b = sqrt(0.4 ln m), d in {2, 3, 4, 8, 16, 64} plus weights near a 4-dimensional
subspace of R^64 (W = G @ B + 0.01 noise, B a random orthonormal 4 x 64 basis). For each
case: fraction of the m*n inner products the tree evaluated, median wall time of
``PartitionTree.query_batch`` and of ``BruteForceHSR.query_batch`` over ``--repeat`` runs,
and their ratio. Usage: ``python tools/hsr_table.py [--m 131072]``.
"""
import argparse
import math
import os

import numpy as np

from sparseadv.analysis.grid import hsr_problem
from sparseadv.analysis.timing import median_times

SUBSPACE_CASE = "64 (4-dim subspace)"


def make_case(name, m, n, seed=0):
    """(W, X) of a table row: ``analysis.grid.hsr_problem`` (same data as the asv suite),
    the subspace case named as in the table."""
    W, X, _ = hsr_problem(m, "sub4" if name == SUBSPACE_CASE else int(name), n=n, seed=seed)
    return W, X


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=2 ** 17)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--leaf-size", type=int, default=32)
    ap.add_argument("--cases", default=f"2,3,4,8,16,64,{SUBSPACE_CASE}")
    args = ap.parse_args()
    from sparseadv import _core
    from sparseadv.hsr import BruteForceHSR, PartitionTree
    m, n = args.m, args.n
    b = math.sqrt(0.4 * math.log(m))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"m = {m}, n = {n}, b = sqrt(0.4 ln m) = {b:.4f}, leaf_size = {args.leaf_size}, "
          f"OpenMP threads = {_core.omp_max_threads()}, load average at start = {load:.1f}, "
          f"median of {args.repeat} interleaved runs\n")
    print("| d | path taken | tree inner products / (m n) | pure-tree fraction (64 queries) "
          "| tree query_batch (s) | brute query_batch (s) | tree / brute |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        W, X = make_case(name, m, n)
        tree = PartitionTree(W, leaf_size=args.leaf_size)
        pure = PartitionTree(W, leaf_size=args.leaf_size, fallback="tree")
        brute = BruteForceHSR(W)
        ref = brute.query_batch(X, b)
        got = tree.query_batch(X, b)
        assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])
        tree.reset_stats()
        tree.query_batch(X, b)
        frac = tree.stats["inner_products"] / (m * n)
        nbf = tree.stats["brute_force_queries"]
        path = "tree" if nbf == 0 else f"tree pilot ({n - nbf}) + GEMM ({nbf})"
        pure.query_batch(X[:64], b)
        frac_pure = pure.stats["inner_products"] / (m * 64)
        tt, tb = median_times([lambda: tree.query_batch(X, b),
                               lambda: brute.query_batch(X, b)], args.repeat)
        print(f"| {name} | {path} | {frac:.4f} | {frac_pure:.4f} | {tt:.4f} | {tb:.4f} "
              f"| {tt / tb:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
