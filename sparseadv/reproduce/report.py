"""Run the experiments and write REPORT.md: environment, claims and verdicts, one section each.

The verdicts are computed from the measurements by the ``verdict_*`` functions of
:mod:`.verdicts` (re-exported here; pure functions of the metrics dicts the experiments return,
so they can be tested on synthetic numbers); nothing in the claims table is hard-coded.
"""
import json
import os
import sys
import time
import traceback

import numpy as np

from ..analysis.environment import environment  # noqa: F401 - re-exported for the experiments
from ..analysis.estimate import FULL_ESTIMATE  # one wording for the CLI help and the report
from ..analysis.fit import fit_dict  # noqa: F401 - re-exported for the experiments
from ..analysis.tables import fmt_fit, md_table, write_csv  # noqa: F401 - re-exported
from ..engines import ENGINES
from ..errors import InputError

# --------------------------------------------------------------------------- shared helpers


def progress_iter(items, desc, progress):
    items = list(items)
    if not progress:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, leave=True, file=sys.stderr)


# --------------------------------------------------------------------------- verdicts
# (the claims table lives in .verdicts; re-exported here for the experiments and the tests)

from .verdicts import (CLAIM_CONVERGENCE, CLAIM_COST, CLAIM_COST_HSR,  # noqa: E402,F401
                       CLAIM_COST_SPARSE, CLAIM_EXACT, CLAIM_ROBUST, CLAIM_SPARSITY, CLAIM_STABLE,
                       CLAIM_TREE,
                       FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, PARTLY, TOL_EXACT,
                       VERDICT_RULES, claims_table, verdict_convergence, verdict_cost,
                       verdict_exactness, verdict_robust, verdict_sparsity, verdict_stability,
                       verdict_tree)


# --------------------------------------------------------------------------- configs

def make_configs(mode="quick", seed=0):
    """Experiment configs for ``mode`` in {"quick", "full", "tiny"}, with base seed ``seed``."""
    from . import e1_sparsity as e1, e2_convergence as e2, e3_cost as e3, e4_hsr as e4, \
        e5_real_data as e5
    from .robust_eval import EvalConfig
    if mode == "quick":
        # sized from work counts for about 3 minutes on 2 quiet cores (the README main command)
        cfgs = {"e1": e1.Config(ms=[2 ** k for k in range(10, 19)], n=128, d=16),
                "e2": e2.Config(ms=[1024, 4096, 16384, 65536], n=32, d=8, eps=0.1,
                                iterations=200, eval_m=4096),
                "e3": e3.Config(m0=16384, n0=256, d0=16, ms=[2 ** k for k in range(11, 18)],
                                ns=[64, 128, 256, 512]),
                "e4": e4.Config(m=2 ** 17, queries=1024, ms=[2 ** k for k in range(10, 19)]),
                "e5": e5.Config(m=2048, iterations=80, eval=EvalConfig(max_points=100))}
    elif mode == "full":
        full_eval = EvalConfig(steps=50, restarts=4, max_points=300)
        cfgs = {"e1": e1.Config(ms=[2 ** k for k in range(10, 21)], n=256, d=16),
                "e2": e2.Config(ms=[2 ** k for k in range(12, 19, 2)], n=64, d=16, eps=0.1,
                                iterations=200, eval_m=16384, seeds_max_m=16384,
                                eval=full_eval),
                "e3": e3.Config(m0=65536, n0=256, d0=32,
                                ms=[2 ** k for k in range(12, 21)], ns=[64, 128, 256, 512, 1024],
                                ds=[4, 8, 16, 32, 64, 128], repeats=5),
                "e4": e4.Config(m=2 ** 17, queries=1024, ms=[2 ** k for k in range(10, 21)],
                                repeats=5),
                "e5": e5.Config(m=16384, iterations=100, eval=full_eval)}
    elif mode == "tiny":
        tiny_eval = EvalConfig(steps=3, restarts=0, loss_steps=2, max_points=24)
        cfgs = {"e1": e1.Config(ms=[256, 512, 1024], n=32, d=8),
                "e2": e2.Config(ms=[256, 1024], n=16, n_test=16, d=4, iterations=6,
                                long_iterations=12, eval_every=2, exact_iterations=2, eval_m=256, eval=tiny_eval),
                "e3": e3.Config(m0=512, n0=32, d0=8, ms=[256, 512, 1024], ns=[16, 32],
                                ds=[4, 8], warmup=1, repeats=1),
                "e4": e4.Config(m=1024, queries=16, ds=[2, 8], ms=[256, 512, 1024],
                                subspace_dim=2, ambient_d=16, repeats=1),
                "e5": e5.Config(m=256, iterations=2, subsample=100, eval=tiny_eval)}
    else:
        raise InputError(f"mode must be 'quick', 'full' or 'tiny', got {mode!r}")
    for c in cfgs.values():
        c.seed = seed
    return cfgs


CONFIGS = ("quick", "full", "tiny")

# --------------------------------------------------------------------------- run

EXPERIMENTS = ("e1", "e2", "e3", "e4", "e5")
MODULES = {"e1": "e1_sparsity", "e2": "e2_convergence", "e3": "e3_cost", "e4": "e4_hsr",
           "e5": "e5_real_data"}
TITLES = {"e1": "E1 sparsity: fired neurons per input",
          "e2": "E2 training in the theory's regime; engines agree; robustness",
          "e3": "E3 cost: per-iteration time and work against m, n, d",
          "e4": "E4 the data structure: partition tree vs brute force",
          "e5": "E5 real data: handwritten digits and breast cancer"}


def run(out="sparseadv-report", mode="quick", seed=0, engines=None, only=None, progress=True,
        command=None, configs=None, threads=None, client=None):
    """Run the experiments and write ``out/REPORT.md``; returns its path.

    ``configs`` (a dict ``key -> Config``) overrides the preset of ``mode`` per experiment;
    ``threads`` limits the BLAS and OpenMP thread pools (threadpoolctl) for the whole run;
    with a Dask ``client``, E3's grid points run as tasks on its cluster (the timing grid;
    the other experiments run here)."""
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise InputError("--threads needs threadpoolctl: pip install threadpoolctl") from None
        with threadpool_limits(limits=int(threads)):
            return run(out, mode, seed, engines, only, progress, command, configs, None,
                       client)
    import importlib
    t0 = time.perf_counter()
    load_start = _loadavg()
    os.makedirs(out, exist_ok=True)
    if engines is None:
        engines = list(ENGINES)
    engines = list(engines)
    if "dense" not in engines:
        engines.insert(0, "dense")  # the baseline every comparison needs
    cfgs = make_configs(mode, seed)
    if configs:
        cfgs.update(configs)
    keys = [k for k in EXPERIMENTS if not only or k in only]
    results = {}
    for k in keys:
        mod = importlib.import_module(f".{MODULES[k]}", __package__)
        try:
            where = {"client": client} if k == "e3" and client is not None else {}
            results[k] = mod.run(cfgs[k], out, engines=tuple(engines), progress=progress,
                                 **where)
        except Exception as exc:  # noqa: BLE001 - one failing experiment must not hide the rest
            tb = traceback.format_exc()
            results[k] = {"key": k, "title": TITLES[k], "status": "failed",
                          "reason": f"{type(exc).__name__}: {exc}",
                          "markdown": f"**Failed**: `{type(exc).__name__}: {exc}`\n\n"
                                      f"```\n{tb[-3000:]}\n```\n",
                          "files": [], "seconds": 0.0, "metrics": None}
    total = time.perf_counter() - t0
    path = write_report(out, results, mode=mode, seed=seed, engines=engines, cfgs=cfgs,
                        keys=keys, total_seconds=total, command=command,
                        load=(load_start, _loadavg()))
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump({k: {"status": r["status"], "seconds": r["seconds"], "metrics": r["metrics"]}
                   for k, r in results.items()}, fh, indent=1, default=_json_default)
    return path


def _loadavg():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_report(out, results, *, mode, seed, engines, cfgs, keys, total_seconds, command=None,
                 load=None):
    from dataclasses import asdict

    from . import plotting
    info, versions, env, pools = environment()
    cmd = " ".join(command) if command else " ".join([os.path.basename(sys.argv[0])]
                                                     + sys.argv[1:])
    lines = ["# sparseadv reproduction report", "",
             "Reference implementation of *A Sublinear Adversarial Training Algorithm* (Gao, Qin, "
             "Song, Wang, ICLR 2024). Every verdict below is computed from the measurements in "
             "this run.", "",
             f"- command: `{cmd}`",
             f"- mode: {mode} (total {total_seconds:.0f} s); `--full` is the paper-scale grid: "
             f"{FULL_ESTIMATE}",
             f"- base seed: {seed} (networks use seed, data seed + 1, attacks seed + 2)",
             f"- engines: {', '.join(engines)}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
             "## Machine", "",
             md_table(["", ""], [[k, v] for k, v in info.items()]), "",
             "Libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
             "Threads: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "; "
             + ("; ".join(pools) if pools else "no thread pools reported"), ""]
    if load and load[0] is not None and load[1] is not None:
        lines += [f"Load average (1, 5, 15 min) at the start: "
                  f"{', '.join(f'{x:.2f}' for x in load[0])}; at the end: "
                  f"{', '.join(f'{x:.2f}' for x in load[1])} (above the CPU count means other "
                  f"processes competed for the cores and wall times are inflated).", ""]
    if not plotting.available():
        lines += [f"Note: {plotting.MISSING_NOTE}.", ""]
    lines += ["## Claims and verdicts", ""]
    rows = claims_table(results)
    lines += [md_table(["claim (paper)", "verdict", "measured", "regime"],
                       [[r["claim"], f"**{r['verdict']}**", r["measured"], r["regime"]]
                        for r in rows]), ""]
    lines += [VERDICT_RULES, ""]
    for k in keys:
        r = results[k]
        lines += [f"## {r['title']}", ""]
        lines += [f"Status: {r['status']}; {r['seconds']:.1f} s. Config: `"
                  + ", ".join(f"{a}={b}" for a, b in asdict(cfgs[k]).items()) + "`", ""]
        lines += [r["markdown"], ""]
        pngs = [f for f in r["files"] if f.endswith(".png")]
        csvs = [f for f in r["files"] if f.endswith(".csv")]
        for p in pngs:
            lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})", ""]
        if csvs:
            lines += ["Data: " + ", ".join(f"[{os.path.basename(c)}]({os.path.basename(c)})"
                                           for c in csvs), ""]
    path = os.path.join(out, "REPORT.md")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, path)
    return path
