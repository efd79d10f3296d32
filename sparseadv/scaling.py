"""Scaling analysis: how the cost of one adversarial iteration grows with m, n and d, per engine.

``python -m sparseadv.scaling`` (and ``sparseadv bench``, which calls :func:`main`) either runs
an (m, n, d) grid itself (``--run``) or reads the results of the asv suite (``--from-asv``),
then fits power laws ``cost ~ m^a n^b d^c`` and writes, into ``--out``:

- ``scaling.md``: the exponents of time and of each work counter in m, n and d with 95%
  confidence intervals, and per engine the verdict "m-exponent below 1 with 95% confidence";
- ``scaling.csv``: the raw measurements, one row per (engine, m, n, d);
- ``scaling_seconds.png``, ``scaling_inner_products.png``: log-log plots of the m-, n- and
  d-slices of the grid with the reference slopes m n d (exponent 1) and m^{4/5}.

Measurement (``--run``): for every (m, n, d) and every engine in ``sparseadv.engines.ENGINES``
(or ``--engines``), a seeded network and data set (the same as ``benchmarks/common.py``), one
warm-up iteration (for the sparse engines this is where the candidate sets / tree are built),
then ``--repeats`` timed iterations: the time is their median, the work counters their mean.
Engines are interleaved point by point so that the load of a shared machine hits all alike.

asv results (``--from-asv``, :func:`load_asv_results`): one asv class per engine, so that one
fit never mixes settings: a ``*Scaling`` class (``bench_dense.DenseScaling``: the scaling grid)
first, else a class with an ``engine`` parameter (``bench_engines.EngineIteration``), else any
other class with an (m, n, d) parameter; the classes passed over are listed in the report.
Without ``--run`` or ``--from-asv``, ``./.asv/results`` is read when it holds results, unless
an option that only applies to a run (``--grid``, ``--repeats``, ``--seed``, ``--steps``,
``--eps``, ``--lr``, ``--threads``) is given: then the grid is run. With ``--from-asv`` those
options are an error.

Fits: :func:`sparseadv.theory.fit_exponents` (least squares on logarithms, all grid points of
an engine at once, 95% t-intervals). If the exponents are not identifiable from the points
(too few, or m, n, d moving together, as in some asv suites) it falls back to per-axis
:func:`sparseadv.theory.fit_power_law` on the slices of the grid; the table says which.

The work counters are deterministic (DESIGN.md section 4), so their exponents answer the
o(m n d) question exactly; wall time on a shared machine is noisy and only confirms it.
"""
from __future__ import annotations

import argparse
import ast
import csv
import datetime
import glob
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections import Counter, OrderedDict

import numpy as np

from . import _argtypes as argtypes

__all__ = ["GRIDS", "grid_points", "estimate_dense_seconds", "problem", "measure",
           "load_asv_results", "fit_rows", "slice_indices", "verdict", "format_table",
           "write_report", "main"]

# --------------------------------------------------------------------------- grids

#: One-factor-at-a-time grids: an m-slice, an n-slice and a d-slice through a centre point.
#: Together they identify all three exponents in a single multivariate fit.
GRIDS = {
    # About 20 s for the dense engine on 2 cores (9 points, 1 warm-up + 3 timed iterations).
    # m starts at 2^12: below that a dense iteration takes a few ms and its time is per-call
    # overhead, not m n d work, which would make even the dense time look sublinear in m.
    "default": {"center": (16384, 256, 16),
                "m": [2 ** k for k in range(12, 17)],      # 4096 .. 65536 at n=256, d=16
                "n": [128, 256, 512],                       # at m=16384, d=16
                "d": [8, 16, 32]},                          # at m=16384, n=256
    # Paper scale, opt-in: m up to 2^20. About 1.6e12 flop per iteration of the dense engine
    # over the whole grid, 6.3e12 with the warm-up and 3 repeats: about 4 minutes of dense
    # arithmetic at the 25 GFLOP/s of estimate_dense_seconds (not measured over the whole
    # grid); the automatic step size and the sparse engines add their own time.
    "large": {"center": (65536, 1024, 32),
              "m": [2 ** k for k in range(10, 21)],        # 1024 .. 1048576 at n=1024, d=32
              "n": [256, 512, 1024, 2048, 4096],            # at m=65536, d=32
              "d": [8, 16, 32, 64, 128]},                   # at m=65536, n=1024
}

AXES = ("m", "n", "d")
COUNTERS = ("inner_products", "candidate_pairs", "fired_pairs", "reanchored", "nodes_visited")
# Quantities fitted (when positive at every point of an engine), in table order.
QUANTITIES = ("seconds",) + COUNTERS
QUANTITY_LABELS = {"seconds": "time per iteration (s)",
                   "inner_products": "inner products per iteration (count)",
                   "candidate_pairs": "candidate pairs per iteration (count)",
                   "fired_pairs": "fired pairs per iteration (count)",
                   "reanchored": "neurons re-anchored per iteration (count)",
                   "nodes_visited": "tree nodes visited per iteration (count)"}
CSV_FIELDS = (("engine", "m", "n", "d", "steps", "eps", "lr", "seed", "repeats",
               "seconds", "seconds_min", "seconds_max", "seconds_attack", "seconds_forward",
               "seconds_backward", "loss", "fired_mean")
              + COUNTERS + ("warmup_seconds", "warmup_inner_products",
                            "dense_inner_products", "source"))
# An exponent counts as "below 1" only when its upper 95% limit is below 1 - TOL: exact power
# laws (the dense counts) fit to round-off, and 1 - 1e-15 must not read as sublinear.
VERDICT_TOL = 1e-6
PLOTTED = ("seconds", "inner_products")


def grid_points(grid):
    """The (m, n, d) points of a named grid (or a dict like ``GRIDS[...]``), sorted, unique."""
    spec = GRIDS[grid] if isinstance(grid, str) else grid
    m0, n0, d0 = spec["center"]
    pts = {(m0, n0, d0)}
    pts.update((m, n0, d0) for m in spec["m"])
    pts.update((m0, n, d0) for n in spec["n"])
    pts.update((m0, n0, d) for d in spec["d"])
    return sorted(pts)


#: Effective dense rate assumed by :func:`estimate_dense_seconds`, GFLOP/s (nominal flops of
#: ``theory.dense_flops``). ``benchmarks/dense_table.py`` measured 46.4 at m = 2^16, n = 1024,
#: d = 64, 3 steps on 2 quiet cores (README "Latest measurements"); about half of that is kept
#: as a conservative figure for a shared machine and the smaller d of the grids.
DENSE_GFLOPS = 25.0


def estimate_dense_seconds(points, repeats=3, steps=3, gflops=DENSE_GFLOPS):
    """Rough run time of the dense engine over ``points``: (repeats + 1 warm-up) iterations of
    ``theory.dense_flops`` each at an effective ``gflops`` GFLOP/s (:data:`DENSE_GFLOPS`, from
    ``benchmarks/dense_table.py``). Arithmetic only: the small default grid is dominated by
    per-call overheads and the automatic step size (its dense run took about 20 s, several
    times this estimate), and a loaded machine is slower."""
    from .theory import dense_flops
    flops = sum(dense_flops(m, n, d, steps) for m, n, d in points)
    return flops * (repeats + 1) / (gflops * 1e9)


# --------------------------------------------------------------------------- measuring

def problem(m, n, d, seed=0):
    """(net, X, y) exactly as ``benchmarks/common.py`` builds them: a Gaussian network seeded
    with ``seed``, unit-sphere points from ``seed + 1``, coin-flip ±1 labels from ``seed + 2``."""
    from .network import ShiftedReLUNet
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(np.random.default_rng(seed + 2).random(n) < 0.5, -1.0, 1.0)
    return ShiftedReLUNet(m, d, seed=seed), X, y


def _mean_counter(values):
    mean = float(np.mean(values))
    return int(mean) if mean == int(mean) else mean


def measure(engines, points, repeats=3, seed=0, steps=3, eps=0.05, lr="auto", progress=True):
    """Time one adversarial iteration of every engine at every (m, n, d); list of row dicts.

    Each (point, engine): fresh seeded problem, one warm-up iteration, then ``repeats`` timed
    iterations (wall clock around ``AdversarialTrainer.step``): ``seconds`` is their median,
    the counters their mean (the sparse engines' counts vary from step to step). ``lr="auto"``
    (the NTK step size of ``sparseadv.stepsize``, chosen in the warm-up, as in training) makes
    the weights move as they do in real training, which is what decides how often a sparse
    engine must re-anchor; a small fixed lr would flatter the sparse engines."""
    from .attacks import PGD
    from .theory import dense_inner_products
    from .trainer import AdversarialTrainer

    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(points) * len(engines), desc="scaling grid", unit="run",
                   file=sys.stderr)
    try:
        for m, n, d in points:
            for engine in engines:
                if bar is not None:
                    bar.set_postfix_str(f"{engine} m={m} n={n} d={d}")
                net, X, y = problem(m, n, d, seed)
                trainer = AdversarialTrainer(net, PGD(eps, steps), lr=lr, engine=engine)
                t0 = time.perf_counter()
                warm = trainer.step(X, y)
                warm_s = time.perf_counter() - t0
                secs, recs = [], []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    rec = trainer.step(X, y)
                    secs.append(time.perf_counter() - t0)
                    recs.append(rec)
                row = {"engine": engine, "m": m, "n": n, "d": d, "steps": steps, "eps": eps,
                       "lr": trainer.lr_, "seed": seed, "repeats": repeats,
                       "seconds": statistics.median(secs), "seconds_min": min(secs),
                       "seconds_max": max(secs),
                       "seconds_attack": statistics.median(r["seconds_attack"] for r in recs),
                       "seconds_forward": statistics.median(r["seconds_forward"] for r in recs),
                       "seconds_backward": statistics.median(r["seconds_backward"]
                                                             for r in recs),
                       "loss": recs[-1]["loss"],
                       "fired_mean": float(np.mean([r["fired_mean"] for r in recs])),
                       "warmup_seconds": warm_s,
                       "warmup_inner_products": warm["inner_products"],
                       "dense_inner_products": dense_inner_products(m, n, steps),
                       "source": "run"}
                for key in COUNTERS:
                    row[key] = _mean_counter([r[key] for r in recs])
                rows.append(row)
                del net, X, y, trainer
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


# --------------------------------------------------------------------------- asv results

class ScalingError(ValueError):
    """A problem with the inputs (arguments, result files) that ends the run with a message."""


def _asv_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _is_size(value):
    return (isinstance(value, tuple) and len(value) == 3
            and all(isinstance(v, int) and v > 0 for v in value))


def _engine_from_class(cls):
    name = cls
    for suffix in ("Iteration", "Scaling", "Step"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
            break
    return name.lower()


def _result_files(results_dir):
    files = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))
                       + glob.glob(os.path.join(results_dir, "*", "*.json"))):
        if os.path.basename(path) in ("machine.json", "benchmarks.json"):
            continue
        files.append(path)
    return files


def load_asv_results(results_dir, machine=None, commit=None):
    """Rows (as :func:`measure` returns) from asv results under ``results_dir``.

    Reads the newest result file (or the one whose commit hash starts with ``commit``; with
    ``machine``, only that machine's), asv format version 2: a benchmark with a size
    parameter ``m_n_d`` (an (m, n, d) tuple) contributes its ``time_iteration`` as ``seconds``
    and its ``track_<counter>`` values as counters. The engine is the ``engine`` parameter if
    there is one, else the class name without its suffix (``DenseIteration`` -> ``dense``);
    other parameters that take several values are appended to the engine label.

    One class per engine: different classes measure under different settings (grid, lr,
    warm-up), so their rows are never merged. For each engine label the rows come from one
    class: a class whose name ends in ``Scaling`` (the scaling grid: ``bench_dense.DenseScaling``)
    if any, else one with an ``engine`` parameter (``bench_engines.EngineIteration``), else the
    class with the most sizes (ties: the first by name). With the sparseadv suite: dense from
    ``DenseScaling`` (lr = 1.0), the sparse engines from ``EngineIteration`` (lr = "auto");
    ``DenseIteration`` and ``EngineIteration``'s dense are passed over.

    Returns ``(rows, info)`` with ``info`` describing the file read (for the report header):
    also ``classes`` (engine -> class read), ``ignored`` ((engine, class) passed over) and
    ``threads`` (``bench_dense.Threads``' counts, when recorded).
    """
    if not os.path.isdir(results_dir):
        raise ScalingError(f"asv results directory {results_dir!r} does not exist")
    candidates = []
    for path in _result_files(results_dir):
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ScalingError(f"cannot read asv result file {path}: {exc}") from None
        if not isinstance(data, dict) or "results" not in data:
            continue
        if data.get("version") != 2:
            raise ScalingError(f"{path}: unsupported asv results format version "
                               f"{data.get('version')!r} (this reader knows version 2, asv 0.5+)")
        if machine is not None and data.get("params", {}).get("machine") != machine:
            continue
        if commit is not None and not str(data.get("commit_hash", "")).startswith(commit):
            continue
        started = [v[3] for v in data["results"].values()
                   if isinstance(v, list) and len(v) > 3 and isinstance(v[3], (int, float))]
        candidates.append((max(started, default=0), os.path.getmtime(path), path, data))
    if not candidates:
        what = []
        if machine is not None:
            what.append(f"machine {machine!r}")
        if commit is not None:
            what.append(f"commit {commit!r}")
        raise ScalingError(f"no asv result files in {results_dir!r}"
                           + (" for " + " and ".join(what) if what else ""))
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, path, data = candidates[-1]

    param_names = {}
    bench_json = os.path.join(results_dir, "benchmarks.json")
    if os.path.exists(bench_json):
        try:
            with open(bench_json) as fh:
                for name, spec in json.load(fh).items():
                    if isinstance(spec, dict) and "param_names" in spec:
                        param_names[name] = spec["param_names"]
        except (OSError, ValueError):
            pass

    columns = data.get("result_columns", ["result", "params"])
    i_res, i_par = columns.index("result"), columns.index("params")
    per_class = OrderedDict()         # (class path, engine label) -> OrderedDict size -> row
    engine_param = {}                 # class path -> has an "engine" parameter
    threads = {}
    for bench, entry in sorted(data["results"].items()):
        parts = bench.split(".")
        if len(parts) < 3:
            continue
        method, cls = parts[-1], parts[-2]
        clspath = ".".join(parts[:-1])
        if cls == "Threads" and method == "track_threads":
            threads.update(_threads_entry(entry, i_res, i_par))
            continue
        if method == "time_iteration":
            quantity = "seconds"
        elif method.startswith("track_") and method[6:] in COUNTERS:
            quantity = method[6:]
        else:
            continue
        values, params = entry[i_res], entry[i_par]
        if values is None or not params:
            continue
        params = [[_asv_value(v) for v in p] for p in params]
        names = list(param_names.get(bench, []))
        if len(names) != len(params):
            names = [f"param{k + 1}" for k in range(len(params))]
        size_at = [k for k, p in enumerate(params)
                   if names[k] == "m_n_d" or (p and all(_is_size(v) for v in p))]
        if not size_at:
            continue
        size_at = size_at[0]
        engine_at = names.index("engine") if "engine" in names else None
        engine_param[clspath] = engine_param.get(clspath, False) or engine_at is not None
        combos = [()]
        for p in params:
            combos = [c + (v,) for c in combos for v in p]
        if len(values) != len(combos):
            raise ScalingError(f"{path}: benchmark {bench} has {len(values)} results for "
                               f"{len(combos)} parameter combinations")
        for combo, value in zip(combos, values):
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            size = combo[size_at]
            if not _is_size(size):
                continue
            engine = str(combo[engine_at]) if engine_at is not None else _engine_from_class(cls)
            extras = []
            steps = None
            for k, v in enumerate(combo):
                if k in (size_at, engine_at):
                    continue
                if names[k] == "steps" and isinstance(v, int):
                    steps = v
                if len(params[k]) > 1:
                    extras.append(f"{names[k]}={v}")
            if extras:
                engine = f"{engine} ({', '.join(extras)})"
            rows_of = per_class.setdefault((clspath, engine), OrderedDict())
            row = rows_of.setdefault(size, {"engine": engine, "m": size[0], "n": size[1],
                                            "d": size[2], "source": f"asv:{clspath}"})
            if steps is not None:
                row.setdefault("steps", steps)
            row.setdefault(quantity, value)
    classes, ignored = _pick_classes(per_class, engine_param)
    info = {"file": path, "commit": data.get("commit_hash"), "env": data.get("env_name"),
            "machine": data.get("params", {}).get("machine"),
            "params": data.get("params", {}), "env_vars": data.get("env_vars", {}),
            "requirements": data.get("requirements", {}), "classes": classes,
            "ignored": ignored, "threads": threads}
    machine_json = os.path.join(os.path.dirname(path), "machine.json")
    if os.path.exists(machine_json):
        try:
            with open(machine_json) as fh:
                info["machine_info"] = json.load(fh)
        except (OSError, ValueError):
            pass
    rows = [row for (clspath, engine), rows_of in per_class.items()
            if classes[engine] == clspath for row in rows_of.values()]
    if not rows:
        raise ScalingError(f"{path}: no benchmark with an (m, n, d) parameter 'm_n_d' and a "
                           f"time_iteration or track_<counter> method")
    return rows, info


def _class_rank(clspath, has_engine_param, npoints):
    """Sort key of the classes offering one engine: *Scaling first, then classes with an
    engine parameter, then the others; more sizes first; then by name."""
    cls = clspath.rsplit(".", 1)[-1]
    kind = 0 if cls.endswith("Scaling") else 1 if has_engine_param else 2
    return (kind, -npoints, clspath)


def _pick_classes(per_class, engine_param):
    """({engine: class read}, [(engine, class passed over), ...]) (see load_asv_results)."""
    offers = OrderedDict()
    for clspath, engine in per_class:
        offers.setdefault(engine, []).append(clspath)
    classes, ignored = OrderedDict(), []
    for engine, paths in offers.items():
        best = min(paths, key=lambda c: _class_rank(c, engine_param.get(c, False),
                                                    len(per_class[(c, engine)])))
        classes[engine] = best
        ignored += [(engine, c) for c in paths if c != best]
    return classes, ignored


def _threads_entry(entry, i_res, i_par):
    """{pool: threads} from ``bench_dense.Threads.track_threads`` (skipped pools left out)."""
    try:
        values, params = entry[i_res], entry[i_par]
        pools = [str(_asv_value(v)) for v in params[0]]
    except (IndexError, TypeError):
        return {}
    if values is None:
        return {}
    return {pool: v for pool, v in zip(pools, values)
            if isinstance(v, (int, float)) and math.isfinite(v)}


# --------------------------------------------------------------------------- fitting

def slice_indices(sizes, axis):
    """Indices of the largest one-factor slice along ``axis`` ("m", "n" or "d"): the points
    that share the other two coordinates, with the most distinct values of ``axis``; sorted by
    it. Empty when no two points differ only in ``axis``."""
    k = AXES.index(axis)
    groups = OrderedDict()
    for i, s in enumerate(sizes):
        groups.setdefault(tuple(v for j, v in enumerate(s) if j != k), []).append(i)
    best = []
    for idx in groups.values():
        if len({sizes[i][k] for i in idx}) > len({sizes[i][k] for i in best}):
            best = idx
    if len({sizes[i][k] for i in best}) < 2:
        return []
    return sorted(best, key=lambda i: sizes[i][k])


def _positive_values(rows, quantity):
    """Values of ``quantity`` on every row, or None when one is missing or not positive."""
    vals = []
    for r in rows:
        v = r.get(quantity)
        if v is None or v == "":
            return None
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            return None
        vals.append(v)
    return vals


def _measured(rows, quantity):
    """The rows that measured ``quantity`` (asv suites time some sizes and count others), or
    [] when a measured value is zero, negative or not finite (no logarithm: not fitted)."""
    have = [r for r in rows if r.get(quantity) not in (None, "")]
    return have if _positive_values(have, quantity) is not None else []


def fit_rows(rows, engines=None):
    """Fit the exponents of every quantity of every engine. Returns a list of dicts:
    ``engine, quantity, method ("grid" or "slices"), points, fits {axis: PowerLawFit or None},
    note`` (why something could not be fitted), and ``slices {axis: PowerLawFit}``."""
    from .theory import fit_exponents, fit_power_law
    by_engine = OrderedDict()
    for r in rows:
        by_engine.setdefault(r["engine"], []).append(r)
    out = []
    for engine, erows in by_engine.items():
        if engines is not None and engine not in engines:
            continue
        for quantity in QUANTITIES:
            qrows = _measured(erows, quantity)
            if len(qrows) < 2:
                continue
            vals = _positive_values(qrows, quantity)
            sizes = [(int(r["m"]), int(r["n"]), int(r["d"])) for r in qrows]
            slices = {}
            for axis in AXES:
                idx = slice_indices(sizes, axis)
                if len(idx) >= 2:
                    k = AXES.index(axis)
                    slices[axis] = fit_power_law([sizes[i][k] for i in idx],
                                                 [vals[i] for i in idx])
            entry = {"engine": engine, "quantity": quantity, "points": len(vals),
                     "slices": slices, "note": ""}
            try:
                fe = fit_exponents({a: [s[k] for s in sizes] for k, a in enumerate(AXES)},
                                   vals)
                entry["method"] = "grid"
                entry["fits"] = {a: fe.get(a) for a in AXES}
                entry["dof"] = fe.dof
            except ValueError as exc:
                entry["method"] = "slices"
                entry["fits"] = {a: slices.get(a) for a in AXES}
                entry["dof"] = None
                entry["note"] = f"multivariate fit impossible ({exc}); per-axis slice fits"
            out.append(entry)
    return out


def verdict(fit):
    """("yes" | "no", reason) for "m-exponent below 1 with 95% confidence"."""
    if fit is None:
        return "no", "m-exponent not identifiable from these points"
    if not math.isfinite(fit.ci_high):
        return "no", "no confidence interval (too few points)"
    if fit.ci_high < 1.0 - VERDICT_TOL:
        return "yes", f"upper 95% limit {fit.ci_high:.3f} < 1"
    return "no", f"upper 95% limit {fit.ci_high:.3f} >= 1"


def _f3(x):
    text = f"{x:.3f}"
    return "0.000" if text == "-0.000" else text


def _fmt_fit(fit):
    if fit is None:
        return "—"
    if not math.isfinite(fit.ci_low):
        return f"{_f3(fit.exponent)} [no CI]"
    return f"{_f3(fit.exponent)} [{_f3(fit.ci_low)}, {_f3(fit.ci_high)}]"


def format_table(fitted):
    """The Markdown table of exponents (one row per engine and quantity)."""
    lines = ["| engine | quantity | points | fit | exponent in m [95% CI] | "
             "exponent in n [95% CI] | exponent in d [95% CI] | m-exponent < 1 (95%) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in fitted:
        yes, _ = verdict(e["fits"].get("m"))
        lines.append(f"| {e['engine']} | {e['quantity']} | {e['points']} | {e['method']} | "
                     + " | ".join(_fmt_fit(e["fits"].get(a)) for a in AXES) + f" | {yes} |")
    return "\n".join(lines)


def format_verdicts(fitted):
    """Per engine: "m-exponent below 1 with 95% confidence: yes/no", from the inner-product
    counts (deterministic work), with the time verdict beside it."""
    lines = []
    engines = list(OrderedDict.fromkeys(e["engine"] for e in fitted))
    for engine in engines:
        got = {e["quantity"]: e for e in fitted if e["engine"] == engine}
        parts = []
        for quantity in ("inner_products", "seconds"):
            if quantity in got:
                yes, why = verdict(got[quantity]["fits"].get("m"))
                parts.append((quantity, yes, why))
        if not parts:
            continue
        short = {"inner_products": "inner products", "seconds": "time"}
        head = parts[0]
        line = (f"- **{engine}**: m-exponent below 1 with 95% confidence: **{head[1]}** "
                f"({short[head[0]]}: {head[2]})")
        for quantity, yes, why in parts[1:]:
            line += f"; {short[quantity]}: {yes} ({why})"
        lines.append(line)
    return "\n".join(lines)


def format_slices(fitted):
    lines = ["| engine | quantity | slice fit in m | slice fit in n | slice fit in d |",
             "|---|---|---|---|---|"]
    for e in fitted:
        lines.append(f"| {e['engine']} | {e['quantity']} | "
                     + " | ".join(_fmt_fit(e["slices"].get(a)) for a in AXES) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- environment

def _pool_summary():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "(threadpoolctl not installed)"
    pools = [f"{p.get('user_api')}/{p.get('internal_api')} {p.get('version', '')} "
             f"threads={p.get('num_threads')}" for p in threadpool_info()]
    return "; ".join(pools) or "(no thread pools loaded)"


def environment(seed=None, command=None, extra=None):
    """Machine, versions and thread settings for the report header (a list of (key, value))."""
    import scipy

    from . import __version__
    env = [("command", command or shlex.join(getattr(sys, "orig_argv", sys.argv))),
           ("date (UTC)", datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M:%S")),
           ("platform", platform.platform()),
           ("processor", platform.processor() or platform.machine()),
           ("CPUs", f"{os.cpu_count()} (usable by this process: "
                    f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'})"),
           ("Python", platform.python_version()),
           ("numpy", np.__version__), ("scipy", scipy.__version__),
           ("sparseadv", __version__)]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "OMP_WAIT_POLICY"):
        env.append((var, os.environ.get(var, "(unset)")))
    env.append(("threadpoolctl", _pool_summary()))
    if hasattr(os, "getloadavg"):
        env.append(("load average (1, 5, 15 min)",
                    ", ".join(f"{v:.2f}" for v in os.getloadavg())))
    if seed is not None:
        env.append(("seeds", f"network seed={seed}, points seed={seed + 1}, "
                             f"labels seed={seed + 2}"))
    env.extend(extra or [])
    return env


# --------------------------------------------------------------------------- output

def write_csv(rows, path):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})


def read_csv(path):
    """Rows back from a ``scaling.csv`` (numbers parsed)."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row = {}
            for k, v in r.items():
                if v == "" or k in ("engine", "source"):
                    row[k] = v
                    continue
                try:
                    row[k] = int(v)
                except ValueError:
                    row[k] = float(v)
            rows.append(row)
    return rows


def plot(rows, out_dir, quantities=PLOTTED):
    """Log-log plots of the slices (m, n, d panels), one PNG per quantity; returns the paths
    written, or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    by_engine = OrderedDict()
    for r in rows:
        by_engine.setdefault(r["engine"], []).append(r)
    axis_labels = {"m": "width m (neurons)", "n": "points n", "d": "dimension d"}
    written = []
    for quantity in quantities:
        if not any(len(_measured(er, quantity)) >= 2 for er in by_engine.values()):
            continue
        fig = Figure(figsize=(15, 4.6))
        FigureCanvasAgg(fig)
        axs = fig.subplots(1, 3)
        for ax, axis in zip(axs, AXES):
            k = AXES.index(axis)
            anchor = None
            fixed = ""
            for engine, er in by_engine.items():
                er = _measured(er, quantity)
                vals = _positive_values(er, quantity)
                if not er:
                    continue
                sizes = [(int(r["m"]), int(r["n"]), int(r["d"])) for r in er]
                idx = slice_indices(sizes, axis)
                if not idx:
                    continue
                xs = [sizes[i][k] for i in idx]
                ys = [vals[i] for i in idx]
                ax.plot(xs, ys, "o-", label=engine)
                if anchor is None:
                    anchor = (xs, ys)
                    fixed = ", ".join(f"{a}={sizes[idx[0]][j]}" for j, a in enumerate(AXES)
                                      if a != axis)
            if anchor is None:
                ax.text(0.5, 0.5, f"no {axis}-slice in the data", ha="center",
                        va="center", transform=ax.transAxes)
                ax.set_xlabel(axis_labels[axis])
                continue
            xs, ys = anchor
            xr = np.array([min(xs), max(xs)], dtype=float)
            # Reference slopes through the first point of the first engine's slice.
            ax.plot(xr, ys[0] * (xr / xs[0]), "k--", lw=1,
                    label=f"slope 1 (∝ m·n·d: dense cost in {axis})")
            if axis == "m":
                ax.plot(xr, ys[0] * (xr / xs[0]) ** 0.8, "k:", lw=1.5,
                        label=r"slope 4/5 ($\propto m^{4/5}$: fired neurons)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis_labels[axis])
            ax.set_ylabel(QUANTITY_LABELS[quantity])
            ax.set_title(f"{axis}-slice ({fixed})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"sparseadv scaling: {QUANTITY_LABELS[quantity]} (log-log)")
        fig.tight_layout()
        path = os.path.join(out_dir, f"scaling_{quantity}.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def write_report(rows, fitted, out_dir, env, source_note, plots):
    """Write ``scaling.md`` into ``out_dir``; returns (path, table) where table is the
    Markdown exponent table."""
    table = format_table(fitted)
    lines = ["# sparseadv scaling report", "",
             "Cost of one adversarial training iteration (attack + weight step) as m, n and d "
             "grow. Exponents are least-squares slopes on logarithms with 95% t-intervals: "
             "`fit: grid` is one multivariate fit `log cost = a log m + b log n + c log d + k` "
             "over all points of the engine (`sparseadv.theory.fit_exponents`); "
             "`fit: slices` are per-axis fits on the one-factor slices "
             "(`sparseadv.theory.fit_power_law`), used when the multivariate fit is not "
             "identifiable. The dense engine costs Θ(m·n·d): exponent 1 in m and n. "
             "Work counters are deterministic; wall time on a shared machine is noisy.", "",
             "## Setup", ""]
    lines += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in env]
    lines += [f"- data: {source_note}", "", "## Exponents", "", table, "",
              "## Verdicts", "",
              "m-exponent below 1 with 95% confidence means the upper limit of the 95% interval "
              f"of the m-exponent is below 1 (by more than {VERDICT_TOL:g}). The verdict is "
              "read from the inner-product counts when the engine reports them, with time "
              "beside it.", "", format_verdicts(fitted), ""]
    notes = [f"- {e['engine']} / {e['quantity']}: {e['note']}" for e in fitted if e["note"]]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    lines += ["## Per-axis slice fits", "", format_slices(fitted), "", "## Plots", ""]
    if plots is None:
        lines.append("Plots skipped: matplotlib is not installed (`pip install "
                     "\"sparseadv[plot]\"`).")
    elif not plots:
        lines.append("No plots (--no-plots, or nothing to plot).")
    else:
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    lines += ["", "Raw measurements: `scaling.csv`.", ""]
    path = os.path.join(out_dir, "scaling.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path, table


# --------------------------------------------------------------------------- CLI

def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog or "python -m sparseadv.scaling",
        description="Measure (or read from asv) the cost of one adversarial iteration per "
                    "engine over an (m, n, d) grid, fit power-law exponents with 95%% "
                    "confidence intervals, and write scaling.md, scaling.csv and PNG plots.",
        epilog="Without --run or --from-asv: reads ./.asv/results if it holds asv results, "
               "otherwise runs the grid; any of --grid, --repeats, --seed, --steps, --eps, "
               "--lr, --threads means running (they are an error with --from-asv). "
               "--from-asv reads one asv class per engine (a *Scaling class, else "
               "EngineIteration, else another class with an (m, n, d) parameter). Default "
               "grid: about 20 s for dense on 2 cores; --grid large (m up to 2^20): "
               "several minutes for dense (estimate printed at start), plus the sparse "
               "engines.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", action="store_true", help="run the grid here (default when no "
                     "asv results exist)")
    src.add_argument("--from-asv", nargs="?", const=".asv/results", default=None,
                     metavar="RESULTS_DIR", help="read asv results (default dir: .asv/results)")
    p.add_argument("--engines", default=None,
                   help="comma-separated engine names (default: every engine in "
                        "sparseadv.engines.ENGINES)")
    p.add_argument("--grid", default=None, help="grid to run: default (the default) or large")
    p.add_argument("--out", default="scaling-report", help="output directory "
                   "(default: scaling-report)")
    p.add_argument("--repeats", type=argtypes.positive_int, default=None,
                   help="timed iterations per point after one warm-up (default 3)")
    p.add_argument("--seed", type=argtypes.nonneg_int, default=None,
                   help="data/network seed (default 0)")
    p.add_argument("--steps", type=argtypes.positive_int, default=None,
                   help="PGD attack steps (default 3)")
    p.add_argument("--eps", type=argtypes.eps, default=None,
                   help="l2 attack radius (default 0.05)")
    p.add_argument("--lr", type=argtypes.lr, default=None,
                   help="learning rate: a positive number or auto (default: auto, the NTK "
                        "step size the trainer uses, chosen in the warm-up iteration)")
    p.add_argument("--threads", type=argtypes.positive_int, default=None,
                   help="with --run: limit BLAS and OpenMP threads to this many while measuring "
                        "(threadpoolctl); default: as the environment sets them. On a busy "
                        "shared machine 1 is far more stable than 2")
    p.add_argument("--machine", default=None, help="with --from-asv: only this asv machine")
    p.add_argument("--commit", default=None, help="with --from-asv: commit hash prefix "
                   "(default: the newest results)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


#: Options that only apply when the grid is run, with their defaults (None: not set). Given
#: without --run or --from-asv they mean --run; with --from-asv they are an error.
RUN_ONLY = OrderedDict([("grid", "default"), ("repeats", 3), ("seed", 0), ("steps", 3),
                        ("eps", 0.05), ("lr", "auto"), ("threads", None)])


def _parse(argv, prog):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.run_options = ["--" + k for k in RUN_ONLY if getattr(args, k) is not None]
    if args.from_asv is not None and args.run_options:
        opts = args.run_options
        parser.error(f"{', '.join(opts)} only appl{'ies' if len(opts) == 1 else 'y'} when "
                     f"running the grid (--run), not with --from-asv")
    for k, default in RUN_ONLY.items():
        if getattr(args, k) is None:
            setattr(args, k, default)
    if args.grid not in GRIDS:
        parser.error(f"--grid must be one of {', '.join(GRIDS)}, got {args.grid!r}")
    if args.engines is not None:
        from .engines import ENGINES
        names = [e.strip() for e in args.engines.split(",") if e.strip()]
        if not names:
            parser.error("--engines must name at least one engine")
        if args.from_asv is None:
            unknown = [e for e in names if e not in ENGINES]
            if unknown:
                parser.error(f"unknown engine(s) {', '.join(unknown)}; available: "
                             f"{', '.join(sorted(ENGINES))}")
        if len(set(names)) != len(names):
            parser.error(f"--engines lists an engine twice: {args.engines!r}")
        args.engines = names
    if args.from_asv is None and (args.machine is not None or args.commit is not None):
        parser.error("--machine and --commit only apply with --from-asv")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} exists and is not a directory")
    return args


def main(argv=None, prog=None):
    """Entry point of ``python -m sparseadv.scaling`` and ``sparseadv bench``.

    Returns 0, or 1 when nothing could be fitted (the files are still written); argument and
    input errors exit with status 2 and a one-line message."""
    args = _parse(argv, prog)
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    if argv is not None:
        command = shlex.join([prog or "python -m sparseadv.scaling"] + list(argv))
    source = "run" if args.run else "asv" if args.from_asv is not None else None
    if source is None:
        results = ".asv/results"
        have = os.path.isdir(results) and bool(_result_files(results))
        source = "asv" if have and not args.run_options else "run"
        if have and source == "run":
            print(f"running the grid ({', '.join(args.run_options)} given: only a run uses "
                  f"them); {results} is not read (use --from-asv for it)", file=sys.stderr)
        if source == "asv":
            args.from_asv = results
            print(f"reading asv results from {results} (use --run to measure instead)",
                  file=sys.stderr)
    extra = []
    if source == "asv":
        try:
            rows, info = load_asv_results(args.from_asv, args.machine, args.commit)
        except ScalingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2)
        if args.engines is not None:
            rows = [r for r in rows if r["engine"] in args.engines]
            if not rows:
                print(f"error: no asv results for engine(s) {', '.join(args.engines)}",
                      file=sys.stderr)
                raise SystemExit(2)
        source_note = (f"asv results {info['file']} (commit {info['commit']}, environment "
                       f"{info['env']}, machine {info['machine']})")
        try:
            import asv
            extra.append(("asv", asv.__version__))
        except ImportError:
            pass
        classes = info.get("classes") or {}
        if classes:
            extra.append(("asv classes read (one per engine)",
                          ", ".join(f"{e}: {c}" for e, c in classes.items())))
        if info.get("ignored"):
            extra.append(("asv classes passed over (another grid or setting)",
                          ", ".join(f"{e}: {c}" for e, c in info["ignored"])))
        if info.get("threads"):
            extra.append(("asv thread counts (bench_dense.Threads)",
                          ", ".join(f"{k}={v:g}" for k, v in sorted(info["threads"].items()))))
        if info.get("env_vars"):
            extra.append(("asv env_vars", ", ".join(f"{k}={v}" for k, v in
                                                    sorted(info["env_vars"].items()))))
        if info.get("machine_info"):
            mi = info["machine_info"]
            extra.append(("asv machine", ", ".join(f"{k}={mi.get(k)}" for k in
                                                   ("machine", "cpu", "num_cpu", "os", "ram")
                                                   if k in mi)))
        seed = None
    else:
        from .engines import ENGINES
        engines = args.engines or list(ENGINES)
        points = grid_points(args.grid)
        est = estimate_dense_seconds(points, args.repeats, args.steps)
        print(f"running grid {args.grid!r}: {len(points)} points x {len(engines)} engine(s) "
              f"({', '.join(engines)}), {args.repeats} timed iterations after 1 warm-up; "
              f"dense alone roughly {est:.0f} s of arithmetic", file=sys.stderr)
        limiter = None
        if args.threads is not None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                print("error: --threads needs threadpoolctl (pip install threadpoolctl)",
                      file=sys.stderr)
                raise SystemExit(2)
            limiter = threadpool_limits(limits=args.threads)
            extra.append(("--threads", f"{args.threads} (BLAS and OpenMP pools limited by "
                                       f"threadpoolctl while measuring)"))
        try:
            rows = measure(engines, points, args.repeats, args.seed, args.steps, args.eps,
                           args.lr, progress=not args.quiet)
            if limiter is not None:
                extra.append(("threads while measuring", _pool_summary()))
        finally:
            if limiter is not None:
                limiter.restore_original_limits()
        source_note = (f"measured here, grid {args.grid!r}: {len(points)} points "
                       f"(m-, n-, d-slices through {GRIDS[args.grid]['center']}), "
                       f"PGD l2 eps={args.eps:g}, steps={args.steps}, lr={args.lr} "
                       f"(value per point in scaling.csv), "
                       f"1 warm-up + {args.repeats} timed iterations per point "
                       f"(time: median; counters: mean)")
        seed = args.seed
    env = environment(seed, command, extra)
    fitted = fit_rows(rows)
    os.makedirs(args.out, exist_ok=True)
    write_csv(rows, os.path.join(args.out, "scaling.csv"))
    plots = None if args.no_plots else plot(rows, args.out)
    if args.no_plots:
        plots = []
    path, table = write_report(rows, fitted, args.out, env, source_note, plots)
    print(table)
    print()
    print(format_verdicts(fitted))
    print(f"\nwrote {path}, {os.path.join(args.out, 'scaling.csv')}"
          + (f", {len(plots)} plot(s)" if plots else ""))
    if not fitted:
        print("error: nothing to fit: no engine has a time or counter measured at two or more "
              "sizes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
