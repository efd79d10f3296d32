"""Time and bytes per iteration: the single process against 1 and 2 shards on a Dask cluster.

    python tools/distributed_bench.py                       # small default size (CI, ~1 min)
    python tools/distributed_bench.py --m 262144 --n 1024 --d 64 --engine certified
    python tools/distributed_bench.py ... --scheduler tcp://HOST:8786   # a running cluster

The single process runs ``AdversarialTrainer`` with ``--threads`` BLAS/OpenMP threads
(threadpoolctl, when installed); the sharded runs use a LocalCluster of max(--shards)
single-threaded worker processes (``--local-cluster``, the default) or the cluster at
``--scheduler``. Every configuration starts from the same network with the same learning
rate (the single process's lr="auto"), runs ``--warmup`` untimed iterations (the sparse engines
build their structures there) and ``--iterations`` timed ones; the table gives the median
seconds per iteration (min-max), the ratio to the single process, the payload megabytes sent
and received per iteration, and the client's seconds waiting for the shards. The weights of
every sharded run are checked against the single process's (max relative difference).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def parse(argv):
    from sparseadv import _argtypes as argtypes
    from sparseadv.distributed import cli_support
    p = argparse.ArgumentParser(prog="python tools/distributed_bench.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=argtypes.positive_int, default=4096)
    p.add_argument("--n", type=argtypes.positive_int, default=256)
    p.add_argument("--d", type=argtypes.positive_int, default=16)
    p.add_argument("--steps", type=argtypes.positive_int, default=3)
    p.add_argument("--eps", type=argtypes.eps, default=0.05)
    p.add_argument("--engine", default="certified")
    p.add_argument("--shards", default="1,2", help="comma-separated shard counts (default 1,2)")
    p.add_argument("--iterations", type=argtypes.positive_int, default=3,
                   help="timed iterations (default 3; median)")
    p.add_argument("--warmup", type=argtypes.nonneg_int, default=1)
    p.add_argument("--threads", type=argtypes.positive_int, default=2,
                   help="threads of the single process (default 2)")
    p.add_argument("--seed", type=argtypes.nonneg_int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    cli_support.add_cluster_arguments(p)
    args = p.parse_args(argv)
    try:
        args.shards = sorted({int(s) for s in args.shards.split(",")})
    except ValueError:
        p.error(f"--shards: expected comma-separated integers, got {args.shards!r}")
    if args.scheduler is None and args.local_cluster is None:
        args.local_cluster = max(args.shards)
    return args


def _limit_threads(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def _row(name, records, W, ref_W, wall):
    secs = [r["seconds"] for r in records]
    row = {"config": name, "seconds": statistics.median(secs), "seconds_min": min(secs),
           "seconds_max": max(secs), "wall": wall,
           "mb_sent": statistics.median(r.get("bytes_sent", 0) for r in records) / 1e6,
           "mb_received": statistics.median(r.get("bytes_received", 0) for r in records) / 1e6,
           "seconds_waiting": statistics.median(r.get("seconds_waiting", 0.0) for r in records)}
    row["max_rel_diff"] = (float(np.abs(W - ref_W).max() / np.abs(ref_W).max())
                           if ref_W is not None else 0.0)
    return row


def run(args, out=sys.stdout):
    from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets
    from sparseadv.distributed import ShardedTrainer, cli_support
    from sparseadv.stepsize import auto_lr

    X, y = datasets.make("separated", args.n, args.d, seed=args.seed + 1)
    net0 = ShiftedReLUNet(args.m, args.d, seed=args.seed)
    lr = auto_lr(net0, X)
    total = args.warmup + args.iterations
    rows = []
    limit = _limit_threads(args.threads)
    try:
        trainer = AdversarialTrainer(net0.copy(), PGD(args.eps, args.steps), lr,
                                     engine=args.engine)
        t0 = time.perf_counter()
        recs = [trainer.step(X, y) for _ in range(total)]
        ref_W = trainer.net.W
        rows.append(_row(f"single process, {args.threads} threads", recs[args.warmup:], ref_W,
                         None, time.perf_counter() - t0))
    finally:
        if limit is not None:
            limit.unregister()
    with cli_support.cluster_from_args(args, min_workers=max(args.shards)) as cluster:
        for k in args.shards:
            with ShardedTrainer(net0, PGD(args.eps, args.steps), lr, engine=args.engine,
                                shards=k, client=cluster.client) as tr:
                t0 = time.perf_counter()
                recs = [tr.step(X, y) for _ in range(total)]
                wall = time.perf_counter() - t0
                rows.append(_row(f"{k} shard{'s' * (k > 1)}", recs[args.warmup:],
                                 tr.gather().W, ref_W, wall))
    base = rows[0]["seconds"]
    print(f"m={args.m} n={args.n} d={args.d} steps={args.steps} engine={args.engine} "
          f"warmup={args.warmup} timed={args.iterations}", file=out)
    print("| configuration | s/iteration (min-max) | vs single | MB sent | MB received "
          "| s waiting | max rel. diff of W |", file=out)
    print("|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        print(f"| {r['config']} | {r['seconds']:.4f} ({r['seconds_min']:.4f}-"
              f"{r['seconds_max']:.4f}) | {r['seconds'] / base:.2f}x | {r['mb_sent']:.3f} | "
              f"{r['mb_received']:.3f} | {r['seconds_waiting']:.4f} | "
              f"{r['max_rel_diff']:.1e} |", file=out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "rows": rows}, fh,
                      indent=1)
    return rows


def main(argv=None):
    from sparseadv.errors import SparseAdvError
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except SparseAdvError as exc:
        print(f"distributed_bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
