"""Run the experiments and write REPORT.md: environment, claims and verdicts, one section each.

The verdicts are computed from the measurements by the ``verdict_*`` functions below (pure
functions of the metrics dicts the experiments return, so they can be tested on synthetic
numbers); nothing in the claims table is hard-coded. A verdict is one of "holds", "partly holds",
"does not hold" or "not measured", with what was measured and the regime it covers.
"""
import json
import math
import os
import sys
import time
import traceback

import numpy as np

from ..analysis.environment import environment
from ..analysis.estimate import FULL_ESTIMATE  # one wording for the CLI help and the report
from ..analysis.fit import fit_dict
from ..analysis.tables import fmt_fit, md_table, write_csv

# --------------------------------------------------------------------------- shared helpers

TOL_EXACT = 1e-8   # relative difference that still counts as "the same to round-off"
MIN_GAIN = 0.01    # robust-accuracy gain (1 point) below which two models count as tied


def progress_iter(items, desc, progress):
    items = list(items)
    if not progress:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, leave=True, file=sys.stderr)


def _upper(f):
    """The upper end of the exponent's interval (the estimate when there is no interval)."""
    return f["ci_high"] if math.isfinite(f["ci_high"]) else f["exponent"]


def _range(values):
    values = sorted(values)
    def p2(v):
        k = math.log2(v)
        return f"2^{int(k)}" if k == int(k) and v >= 256 else str(v)
    return f"{p2(values[0])}…{p2(values[-1])}" if len(values) > 1 else p2(values[0])


# --------------------------------------------------------------------------- verdicts

HOLDS, PARTLY, FAILS, NOT_MEASURED = "holds", "partly holds", "does not hold", "not measured"
INCONCLUSIVE = "inconclusive"


def _v(claim, verdict, measured, regime=""):
    return {"claim": claim, "verdict": verdict, "measured": measured, "regime": regime}


CLAIM_SPARSITY = "o(m) neurons fire per input; at most m^{4/5} (b = sqrt(0.4 ln m))"
CLAIM_COST = "per-iteration cost o(m·n·d) with the half-space reporting structure"
CLAIM_EXACT = "the sparse training reaches the same loss and weights as dense (exactness)"
CLAIM_ROBUST = "adversarial training improves robust accuracy"
CLAIM_TREE = "the tree's query cost is sublinear in m at low d"


def verdict_sparsity(m1):
    if not m1 or "clean_init" not in m1.get("fits", {}):
        return _v(CLAIM_SPARSITY, NOT_MEASURED, "E1 did not run")
    fits, ratios = m1["fits"], m1["ratio_to_bound"]
    sub = {s: _upper(f) < 1.0 for s, f in fits.items()}
    worst = max(ratios, key=ratios.get)
    parts = [f"{s.replace('_', ' ')}: exponent {fmt_fit(f)}" for s, f in fits.items()]
    measured = "; ".join(parts) + (f"; max fired / m^{{4/5}} = {ratios[worst]:.2f} "
                                   f"({worst.replace('_', ' ')})")
    regime = (f"m = {_range(m1['ms'])}, d = {m1['d']}, n = {m1['n']}, at init and after "
              f"{m1['train_iterations']} adversarial iterations (eps {m1['eps']})")
    if all(sub.values()) and ratios[worst] <= 1.0:
        verdict = HOLDS
    elif not any(sub.values()) and all(f["exponent"] < 1.0 for f in fits.values()):
        verdict = INCONCLUSIVE
        measured += "; every exponent is below 1 but its 95% interval includes 1 (too few sizes)"
    elif sub.get("clean_init") and any(sub.values()):
        verdict = PARTLY
        bad = [s for s, ok in sub.items() if not ok]
        measured += ("; not sublinear for: " + ", ".join(bad)) if bad else \
            "; above m^{4/5} for some inputs"
    else:
        verdict = FAILS
    return _v(CLAIM_SPARSITY, verdict, measured, regime)


def verdict_cost(m3):
    """One verdict per sparse engine (any registered engine other than dense)."""
    if not m3:
        return [_v(CLAIM_COST, NOT_MEASURED, "E3 did not run")]
    sparse = [e for e in m3["engines"] if e != "dense"]
    dense = m3["fits"].get("dense", {}).get("m", {})
    base = (f"dense baseline: time exponent in m {fmt_fit(dense.get('seconds_median'))}, "
            f"inner products {fmt_fit(dense.get('inner_products'))}")
    regime = (f"m = {_range(m3['ms'])} at n = {m3['n0']}, d = {m3['d0']}; "
              f"n = {_range(m3['ns'])}; d = {_range(m3['ds'])}")
    if not sparse:
        return [_v(CLAIM_COST, NOT_MEASURED,
                   "no sparse engine (tree, certified) is registered in this build; " + base,
                   regime)]
    out = []
    for e in sparse:
        fm = m3["fits"].get(e, {})
        ip = {ax: fm.get(ax, {}).get("inner_products") for ax in ("m", "n", "d")}
        tm = fm.get("m", {}).get("seconds_median")
        speed = m3["speedup_at_max_m"].get(e, float("nan"))
        frac = m3["ip_fraction_at_max_m"].get(e, float("nan"))
        measured = (f"inner products ∝ m^{fmt_fit(ip['m'])}, n^{fmt_fit(ip['n'])}, "
                    f"d^{fmt_fit(ip['d'])}; time ∝ m^{fmt_fit(tm)}; at m = {max(m3['ms'])}: "
                    f"{frac:.3f} of dense's inner products, speed-up {speed:.2f}x; {base}")
        if ip["m"] is None:
            verdict = NOT_MEASURED
        elif _upper(ip["m"]) < 1.0 and (tm is not None and _upper(tm) < 1.0) and speed > 1.0:
            verdict = HOLDS
        elif _upper(ip["m"]) < 1.0 or frac < 1.0:
            verdict = PARTLY
            measured += ("; the work counts are sublinear in m but wall time is not faster "
                         "than dense here" if speed <= 1.0 or tm is None or _upper(tm) >= 1.0
                         else "")
        else:
            verdict = FAILS
        out.append(_v(f"{CLAIM_COST} [engine {e}]", verdict, measured, regime))
    return out


def verdict_exactness(m2):
    if not m2:
        return _v(CLAIM_EXACT, NOT_MEASURED, "E2 did not run")
    sparse = [e for e in m2["engines"] if e != "dense"]
    regime = f"m ∈ {m2['ms']}, n = {m2['n']}, d = {m2['d']}, eps = {m2['eps']}"
    if not sparse:
        return _v(CLAIM_EXACT, NOT_MEASURED,
                  "only the dense engine is registered: nothing to compare against", regime)
    parts, ok = [], []
    for e in sparse:
        d = m2["diffs"][e]
        parts.append(f"{e}: max rel. loss diff {d['loss_rel']:.1e}, "
                     f"‖ΔW‖/‖W‖ {d['w_rel']:.1e}")
        ok.append(d["loss_rel"] <= TOL_EXACT and d["w_rel"] <= TOL_EXACT)
    verdict = HOLDS if all(ok) else (PARTLY if any(ok) else FAILS)
    return _v(CLAIM_EXACT, verdict, "; ".join(parts) + f" (tolerance {TOL_EXACT:g})", regime)


def verdict_robust(m2, m5=None):
    diffs, parts = [], []
    if m2:
        for m, r in m2["robust"].items():
            diffs.append(r["adversarial"] - r["standard"])
            parts.append(f"m={m}: {r['adversarial']:.3f} vs {r['standard']:.3f}")
    if m5:
        diffs.append(m5["robust_adversarial"] - m5["robust_standard"])
        parts.append(f"digits test (eps {m5['eps_eval']:g}): {m5['robust_adversarial']:.3f} vs "
                     f"{m5['robust_standard']:.3f}")
    if not diffs:
        return _v(CLAIM_ROBUST, NOT_MEASURED, "E2 and E5 did not run")
    measured = "robust accuracy, adversarial vs standard training: " + "; ".join(parts)
    regime = (f"training points, PGD eps {m2['eps_eval']:g} (2x training eps)" if m2 else "") + \
        ("; digits held-out split" if m5 else "")
    if all(x >= MIN_GAIN for x in diffs):
        verdict = HOLDS
    elif any(x >= MIN_GAIN for x in diffs):
        verdict = PARTLY
    else:
        verdict = FAILS
    return _v(CLAIM_ROBUST, verdict, measured, regime)


def verdict_tree(m4, why=None):
    if not m4:
        return _v(CLAIM_TREE, NOT_MEASURED,
                  why or "the partition tree (sparseadv.hsr) is not available")
    f = m4.get("fit_m")
    fr = m4["fraction_by_d"]
    beats = [d for d, s in m4["speedup_by_d"].items() if s > 1.0]
    frac = ", ".join(f"{v:.0%} at d={d}" for d, v in sorted(fr.items()))
    measured = (f"inner products per query ∝ m^{fmt_fit(f)} at d = {m4['low_d']}; fraction "
                f"evaluated at m = {m4['m']}: {frac}")
    if m4.get("subspace_fraction") is not None:
        measured += f"; near a 4-dim subspace of R^64: {m4['subspace_fraction']:.0%}"
    measured += f"; faster than brute force at d ∈ {beats if beats else 'none'}"
    regime = f"m = {_range(m4['ms'])}, d = {m4['low_d']} (sweep in m); d ∈ {sorted(fr)} at m = {m4['m']}"
    if not m4.get("all_exact", True):
        return _v(CLAIM_TREE, FAILS, "the tree's answers differ from brute force; " + measured,
                  regime)
    if f is None:
        return _v(CLAIM_TREE, NOT_MEASURED, measured, regime)
    if _upper(f) < 1.0:
        verdict = HOLDS
    elif f["exponent"] < 1.0:
        verdict = INCONCLUSIVE
    else:
        verdict = FAILS
    return _v(CLAIM_TREE, verdict, measured, regime)


def claims_table(results):
    """The verdict rows for a dict ``key -> result`` of experiment results."""
    def metrics(k):
        r = results.get(k)
        return r["metrics"] if r and r.get("status") == "ok" else None

    def why(k, name):
        r = results.get(k)
        if r is None:
            return f"{name} was not run"
        if r.get("status") != "ok":
            return f"{name}: {r['status']}" + (f" ({r.get('reason')})" if r.get("reason") else "")
        return None
    rows = []
    v = verdict_sparsity(metrics("e1"))
    if v["verdict"] == NOT_MEASURED:
        v["measured"] = why("e1", "E1") or v["measured"]
    rows.append(v)
    rows.extend(verdict_cost(metrics("e3")))
    if metrics("e3") is None:
        rows[-1]["measured"] = why("e3", "E3") or rows[-1]["measured"]
    v = verdict_exactness(metrics("e2"))
    if metrics("e2") is None:
        v["measured"] = why("e2", "E2") or v["measured"]
    rows.append(v)
    rows.append(verdict_robust(metrics("e2"), metrics("e5")))
    r4 = results.get("e4")
    rows.append(verdict_tree(metrics("e4"), why("e4", "E4")
                             if r4 is None or r4.get("status") != "ok" else None))
    return rows


# --------------------------------------------------------------------------- configs

def make_configs(mode="quick", seed=0):
    """Experiment configs for ``mode`` in {"quick", "full", "tiny"}, with base seed ``seed``."""
    from . import e1_sparsity as e1, e2_convergence as e2, e3_cost as e3, e4_hsr as e4, \
        e5_real_data as e5
    if mode == "quick":
        # sized for about a minute on 2 quiet cores (64 s measured; the README main command)
        cfgs = {"e1": e1.Config(ms=[2 ** k for k in range(10, 19)], n=128, d=16,
                                train_iterations=3),
                "e2": e2.Config(ms=[1024, 4096], n=256, d=8, eps=0.1, iterations=60),
                "e3": e3.Config(m0=16384, n0=256, d0=16, ms=[2 ** k for k in range(11, 18)],
                                ns=[64, 128, 256, 512]),
                "e4": e4.Config(m=2 ** 17, queries=1024, ms=[2 ** k for k in range(10, 19)]),
                "e5": e5.Config(m=4096, iterations=40)}
    elif mode == "full":
        cfgs = {"e1": e1.Config(ms=[2 ** k for k in range(10, 21)], n=256, d=16,
                                train_iterations=5),
                "e2": e2.Config(ms=[1024, 8192, 65536], n=512, d=8, eps=0.1, iterations=100),
                "e3": e3.Config(m0=65536, n0=256, d0=32,
                                ms=[2 ** k for k in range(12, 21)], ns=[64, 128, 256, 512, 1024],
                                ds=[4, 8, 16, 32, 64, 128], repeats=5),
                "e4": e4.Config(m=2 ** 17, queries=1024, ms=[2 ** k for k in range(10, 21)],
                                repeats=5),
                "e5": e5.Config(m=16384, iterations=100)}
    elif mode == "tiny":
        cfgs = {"e1": e1.Config(ms=[256, 512, 1024], n=32, d=8, train_iterations=1),
                "e2": e2.Config(ms=[256], n=32, d=8, iterations=3, eval_steps=2),
                "e3": e3.Config(m0=512, n0=32, d0=8, ms=[256, 512, 1024], ns=[16, 32],
                                ds=[4, 8], warmup=1, repeats=1),
                "e4": e4.Config(m=1024, queries=16, ds=[2, 8], ms=[256, 512, 1024],
                                subspace_dim=2, ambient_d=16, repeats=1),
                "e5": e5.Config(m=256, iterations=2, subsample=200, eval_steps=2)}
    else:
        raise ValueError(f"mode must be 'quick', 'full' or 'tiny', got {mode!r}")
    for c in cfgs.values():
        c.seed = seed
    return cfgs


CONFIGS = ("quick", "full", "tiny")

# --------------------------------------------------------------------------- run

EXPERIMENTS = ("e1", "e2", "e3", "e4", "e5")
MODULES = {"e1": "e1_sparsity", "e2": "e2_convergence", "e3": "e3_cost", "e4": "e4_hsr",
           "e5": "e5_real_data"}
TITLES = {"e1": "E1 sparsity: fired neurons per input",
          "e2": "E2 convergence: engines agree; robust vs standard training",
          "e3": "E3 cost: per-iteration time and work against m, n, d",
          "e4": "E4 the data structure: partition tree vs brute force",
          "e5": "E5 real data: handwritten digits"}


def registered_engines():
    from ..engines import ENGINES
    return [e for e in ("dense", "tree", "certified") if e in ENGINES]


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
            raise ValueError("--threads needs threadpoolctl: pip install threadpoolctl") from None
        with threadpool_limits(limits=int(threads)):
            return run(out, mode, seed, engines, only, progress, command, configs, None,
                       client)
    import importlib
    t0 = time.perf_counter()
    load_start = _loadavg()
    os.makedirs(out, exist_ok=True)
    if engines is None:
        engines = registered_engines()
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
             f"- engines: {', '.join(engines)} (registered: {', '.join(registered_engines())})",
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
    lines += ["Verdict rules: an exponent is 'sublinear' when the upper end of its 95% interval "
              "is below 1; 'exact' means relative differences ≤ "
              f"{TOL_EXACT:g}; robust training 'improves' when its robust accuracy is at least "
              f"{MIN_GAIN:.0%} higher than standard training's from the same start. Wall times come from a shared "
              "machine; the work counts (inner products) are deterministic.", ""]
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
