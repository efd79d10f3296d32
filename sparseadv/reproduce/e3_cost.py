"""E3: per-iteration cost against m, n and d for each engine.

Three one-dimensional sweeps around a base size (m0, n0, d0). At each size: one network, one
data set and one learning rate (auto, computed once and shared); each engine runs ``warmup``
untimed iterations and ``repeats`` measured ones from that start; the median wall time and the
median of the work counters (inner products, fired pairs) per iteration are recorded. The
speed-up of an engine is dense's median over its median at the same size, measured in the same
run. Exponents come from log-log fits (``theory.fit_power_law``) along each sweep.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets, theory
from ..attacks import PGD
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import AdversarialTrainer
from .report import fit_dict, fmt_fit, md_table, progress_iter, write_csv

AXES = ("m", "n", "d")


@dataclass
class Config:
    m0: int = 8192
    n0: int = 128
    d0: int = 16
    ms: list = field(default_factory=lambda: [2048, 4096, 8192, 16384, 32768, 65536])
    ns: list = field(default_factory=lambda: [32, 64, 128, 256])
    ds: list = field(default_factory=lambda: [4, 8, 16, 32, 64])
    eps: float = 0.05
    steps: int = 3
    warmup: int = 1
    repeats: int = 3
    seed: int = 0


def _points(cfg):
    pts = []
    for m in cfg.ms:
        pts.append(("m", m, cfg.n0, cfg.d0))
    for n in cfg.ns:
        pts.append(("n", cfg.m0, n, cfg.d0))
    for d in cfg.ds:
        pts.append(("d", cfg.m0, cfg.n0, d))
    return pts


def run(cfg, out, engines=("dense",), progress=True):
    t_start = time.perf_counter()
    rows = []
    for axis, m, n, d in progress_iter(_points(cfg), "E3 cost (sizes)", progress):
        X, y = datasets.separated(n, d, seed=cfg.seed + 1)
        net0 = ShiftedReLUNet(m, d, seed=cfg.seed)
        lr = auto_lr(net0, X)
        dense_sec = None
        for engine in engines:
            net = net0.copy()
            tr = AdversarialTrainer(net, PGD(cfg.eps, cfg.steps), lr=lr, engine=engine)
            h = tr.fit(X, y, iterations=cfg.warmup + cfg.repeats, progress=False)
            sl = slice(cfg.warmup, None)
            sec = float(np.median(h["seconds"][sl]))
            if engine == "dense":
                dense_sec = sec
            rows.append({"axis": axis, "m": m, "n": n, "d": d, "engine": engine,
                         "seconds_median": sec,
                         "seconds_min": float(np.min(h["seconds"][sl])),
                         "inner_products": float(np.median(h["inner_products"][sl])),
                         "fired_pairs": float(np.median(h["fired_pairs"][sl])),
                         "candidate_pairs": float(np.median(h["candidate_pairs"][sl])),
                         "dense_inner_products": theory.dense_inner_products(m, n, cfg.steps),
                         "mnd": m * n * d})
        for r in rows[-len(engines):]:
            r["speedup_vs_dense"] = (dense_sec / r["seconds_median"]) if dense_sec else np.nan
    csv_path = write_csv(out, "e3_cost.csv", rows)

    fits = {}
    for engine in engines:
        for axis in AXES:
            sel = [r for r in rows if r["engine"] == engine and r["axis"] == axis]
            if len(sel) < 2:
                continue
            x = np.array([r[axis] for r in sel], dtype=float)
            for q in ("seconds_median", "inner_products"):
                v = np.array([r[q] for r in sel], dtype=float)
                if np.all(v > 0):
                    fits.setdefault(engine, {}).setdefault(axis, {})[q] = \
                        fit_dict(theory.fit_power_law(x, v))

    from .plotting import plot_e3
    pngs = plot_e3(out, rows, engines)

    fit_rows = []
    for engine in engines:
        for axis in AXES:
            f = fits.get(engine, {}).get(axis, {})
            fit_rows.append([engine, axis, fmt_fit(f.get("seconds_median")),
                             fmt_fit(f.get("inner_products"))])
    t_fit = md_table(["engine", "size", "time exponent [95% CI]",
                      "inner-product exponent [95% CI]"], fit_rows)
    speed_rows = []
    for r in rows:
        if r["axis"] == "m":
            speed_rows.append([r["m"], r["engine"], f"{r['seconds_median'] * 1e3:.1f}",
                               f"{r['inner_products']:.3g}",
                               f"{r['inner_products'] / r['dense_inner_products']:.3f}",
                               f"{r['speedup_vs_dense']:.2f}"])
    t_speed = md_table(["m", "engine", "median ms / iteration", "inner products / iteration",
                        "fraction of dense inner products", "speed-up vs dense"], speed_rows)
    md = (f"Sweeps around m = {cfg.m0}, n = {cfg.n0}, d = {cfg.d0}: m ∈ {list(cfg.ms)}, "
          f"n ∈ {list(cfg.ns)}, d ∈ {list(cfg.ds)}; l2 PGD eps = {cfg.eps}, {cfg.steps} "
          f"steps; {cfg.warmup} warm-up + {cfg.repeats} measured iterations per engine and "
          f"size (median). Wall times on a shared machine are noisy; the inner-product counts "
          f"are deterministic.\n\n{t_fit}\n\nSpeed-up table (sweep over m; ratios measured "
          f"in the same run):\n\n{t_speed}\n")
    metrics = {"engines": list(engines), "fits": fits, "m0": cfg.m0, "n0": cfg.n0,
               "d0": cfg.d0, "ms": list(cfg.ms), "ns": list(cfg.ns), "ds": list(cfg.ds),
               "speedup_at_max_m": {r["engine"]: r["speedup_vs_dense"] for r in rows
                                    if r["axis"] == "m" and r["m"] == max(cfg.ms)},
               "ip_fraction_at_max_m": {r["engine"]: r["inner_products"] /
                                        r["dense_inner_products"] for r in rows
                                        if r["axis"] == "m" and r["m"] == max(cfg.ms)}}
    return {"key": "e3", "title": "E3 cost: per-iteration time and work against m, n, d",
            "status": "ok", "markdown": md, "files": [csv_path] + pngs,
            "seconds": time.perf_counter() - t_start, "metrics": metrics}
