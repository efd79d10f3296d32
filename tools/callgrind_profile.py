"""Where one iteration's instructions go, per compiled kernel: callgrind counts, repeatable on
a loaded host (wall time is not).

    python tools/callgrind_profile.py --engine certified --m 32768 --n 512 --d 64 --steps 3
    python tools/callgrind_profile.py --engine tree --m 65536 --n 512 --d 3 --steps 3
    python tools/callgrind_profile.py --engine oracle --m 32768 --n 512 --d 64 --steps 3

Runs the training loop (the data of ``engine_compare.py``; a fixed learning rate, ``--lr``,
2000 by default as in issue 12's table: "auto" would spend most of the run in its NTK power
iteration under valgrind) twice, concurrently, under
``valgrind --tool=callgrind`` with one OpenMP and one BLAS thread: ``--warm`` iterations, then
``--warm + --iters``. The difference of the two runs is the cost of the last ``--iters``
iterations, so setup, imports and the first build drop out. Per ``sparseadv._core`` entry
point (the Cython wrapper ``__pyx_pw_...``, inclusive of the C kernel, OpenMP and BLAS it calls)
the table gives instructions (Ir) per iteration; "rest" is everything else of the iteration
(Python, numpy temporaries of the engines and the attack). For ``oracle`` the brute-force
search of the fired pairs (``prepare``, untimed in the oracle benchmark) is subtracted: it runs
the same iteration on a copy of the weights, so ``dense_fired_pairs`` / ``hsr_brute_csr`` /
``csr_transpose`` are dropped and everything else is halved.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

_CHILD = r"""
import sys
import numpy as np
import sparseadv as sa
from sparseadv.analysis.grid import problem
engine, m, n, d, steps, eps, seed, iters, opts, lr = sys.argv[1:11]
m, n, d, steps, iters = int(m), int(n), int(d), int(steps), int(iters)
options = eval(opts)
net, X, y = problem(m, n, d, seed=int(seed))
attack = sa.PGD(float(eps), steps)
if engine == "oracle":
    from sparseadv.analysis.oracle import OracleIteration
    it = OracleIteration(net, X, y, attack, float(lr))
    for _ in range(iters):
        it.prepare()
        it.step()
else:
    tr = sa.AdversarialTrainer(net, attack, lr=lr if lr == "auto" else float(lr),
                               engine=engine, **options)
    for _ in range(iters):
        rec = tr.step(X, y)
    print("COUNTERS", {k: rec[k] for k in ("inner_products", "candidate_pairs",
                                           "fired_pairs", "reanchored", "nodes_visited")
                       if k in rec})
"""

_PYX = re.compile(r"__pyx_pw_9sparseadv_5_core_(?:\d+_BallTree_)?\d+(\w+)")


def _start(args, iters, out):
    # valgrind has no AVX-512: the kernels' dispatch is capped at AVX2 (what the tree's leaf
    # scan uses anyway) unless the caller chose a level
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONHASHSEED="0")
    env.setdefault("SPARSEADV_SIMD", "avx2")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           sys.executable, "-c", _CHILD, args.engine, str(args.m), str(args.n), str(args.d),
           str(args.steps), str(args.eps), str(args.seed), str(iters), repr(args.options), args.lr]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _collect(proc, out):
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    counters = [ln for ln in run.stdout.splitlines() if ln.startswith("COUNTERS")]
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          "--show-percs=no", "--auto=no", out],
                         capture_output=True, text=True, check=True).stdout
    total, per = 0, {}
    for line in ann.splitlines():
        s = line.strip()
        if s.endswith("PROGRAM TOTALS"):
            total = int(s.split()[0].replace(",", ""))
            continue
        hit = _PYX.search(s)
        if hit and s[:1].isdigit():
            name = hit.group(1).lstrip("_").replace("BallTree_", "tree.")
            name = re.sub(r"^\d+", "", name)
            per[name] = per.get(name, 0) + int(s.split()[0].replace(",", ""))
    return total, per, counters[-1] if counters else ""


def _parse_options(text):
    out = {}
    for item in filter(None, text.split(",")):
        k, v = item.split("=")
        out[k] = {"true": True, "false": False}.get(v.lower(), v)
        try:
            out[k] = float(v) if "." in v else int(v)
        except ValueError:
            pass
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="certified", help="dense, tree, certified or oracle")
    p.add_argument("--options", type=_parse_options, default={},
                   help="engine options KEY=VALUE[,KEY=VALUE]")
    p.add_argument("--m", type=int, default=2 ** 15)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", default="2000", help='a number, or "auto"')
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, "a.out"), os.path.join(tmp, "b.out")]
        procs = [_start(a, a.warm, outs[0]), _start(a, a.warm + a.iters, outs[1])]
        (t0, k0, _), (t1, k1, counters) = [_collect(p, o) for p, o in zip(procs, outs)]
    per = {k: (k1.get(k, 0) - k0.get(k, 0)) / a.iters for k in set(k0) | set(k1)}
    total = (t1 - t0) / a.iters
    if a.engine == "oracle":
        for k in ("dense_fired_pairs", "hsr_brute_csr", "csr_transpose"):
            total -= per.pop(k, 0)
        total /= 2
        per = {k: v / 2 for k, v in per.items()}
    per = {k: v for k, v in per.items() if v > 0}
    # entry points that other entry points call through Python (their cost is inside the
    # caller's inclusive count): listed under the caller, not summed twice
    inside = {k: "pm_weight_grad" for k in ("csr_transpose", "nm_weight_grad")
              if "pm_weight_grad" in per}
    inside.update((k, "callers") for k in ("int_arg", "shapes", "dims_fit", "out_int32")
                  if k in per)
    print(f"{a.engine} {a.options or ''}: m={a.m} n={a.n} d={a.d} steps={a.steps} "
          f"eps={a.eps} (l2), lr={a.lr}; instructions per iteration, iterations "
          f"{a.warm + 1}..{a.warm + a.iters}, 1 thread\n")
    if counters:
        print(counters.replace("COUNTERS", "last iteration's counters:") + "\n")
    print("| kernel | Ir / iteration | share |")
    print("|---|---|---|")
    for k in sorted(per, key=lambda k: -per[k]):
        name = f"{k} (in {inside[k]})" if k in inside else k
        print(f"| {name} | {per[k]:.4g} | {per[k] / total:.1%} |")
    rest = total - sum(v for k, v in per.items() if k not in inside)
    print(f"| rest (Python, numpy) | {rest:.4g} | {rest / total:.1%} |")
    print(f"| **total** | **{total:.4g}** | |")


if __name__ == "__main__":
    main()
