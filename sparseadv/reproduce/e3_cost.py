"""E3: per-iteration cost against m, n and d for each engine.

A thin caller of ``sparseadv.analysis`` (the pipeline of ``sparseadv bench``): the one-factor
grid through (m0, n0, d0) (``grid``), measured by ``measure`` (sphere data, one auto learning
rate per point shared by the engines, ``warmup`` untimed + ``repeats`` timed iterations,
medians), fitted by ``fit`` and judged by the one sublinearity rule of ``verdict``. The speed-up
of an engine is dense's median over its median at the same point, measured in the same run.
"""
import time
from dataclasses import dataclass, field

from ..analysis import fit, grid, measure, plots, tables, verdict

AXES = grid.AXES
PLOTS = {"seconds": "e3_time.png", "inner_products": "e3_inner_products.png"}


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

    def grid(self):
        return grid.make_grid((self.m0, self.n0, self.d0), self.ms, self.ns, self.ds)


def _speed_rows(rows):
    """Rows of the m-slice with the speed-up over dense and the fraction of dense's work."""
    dense = {(r["m"], r["n"], r["d"]): r["seconds"] for r in rows if r["engine"] == "dense"}
    sizes = fit.sizes_of(rows)
    m_slice = {sizes[i] for i in grid.slice_indices(sizes, "m")}
    out = []
    for r in rows:
        key = (r["m"], r["n"], r["d"])
        if key in m_slice:
            speed = dense[key] / r["seconds"] if key in dense else float("nan")
            out.append((r, speed, r["inner_products"] / r["dense_inner_products"]))
    return out


def run(cfg, out, engines=("dense",), progress=True, client=None):
    t_start = time.perf_counter()
    points = grid.grid_points(cfg.grid())
    rows = measure.measure(list(engines), points, steps=cfg.steps, eps=cfg.eps, lr="auto",
                           warmup=cfg.warmup, repeats=cfg.repeats, seed=cfg.seed,
                           progress=progress, desc="E3 cost (sizes)", client=client)
    csv_path = tables.write_csv(out, "e3_cost.csv", rows, measure.ROW_FIELDS)
    fitted = fit.fit_rows(rows)
    pngs = plots.plot_slices(rows, out, PLOTS, "E3 cost") or []
    speed = _speed_rows(rows)
    t_speed = tables.md_table(
        ["m", "engine", "median ms / iteration", "inner products / iteration",
         "fraction of dense inner products", "speed-up vs dense"],
        [[r["m"], r["engine"], f"{r['seconds'] * 1e3:.1f}", f"{r['inner_products']:.3g}",
          f"{frac:.3f}", f"{s:.2f}"] for r, s, frac in speed])
    md = (f"Sweeps around m = {cfg.m0}, n = {cfg.n0}, d = {cfg.d0}: m ∈ {list(cfg.ms)}, "
          f"n ∈ {list(cfg.ns)}, d ∈ {list(cfg.ds)}; sphere data, l2 PGD eps = {cfg.eps}, "
          f"{cfg.steps} steps; {cfg.warmup} warm-up + {cfg.repeats} measured iterations per "
          f"engine and size (medians); the pipeline of `sparseadv bench` "
          f"(`sparseadv.analysis`). Wall times on a shared machine are noisy; the "
          f"inner-product counts are deterministic and alone decide the verdict.\n\n"
          f"{tables.format_table(fitted)}\n\n{tables.format_verdicts(fitted)}\n\n"
          f"Speed-up table (sweep over m; ratios measured in the same run):\n\n{t_speed}\n")
    fits = {}
    for e in fitted:
        key = {"seconds": "seconds_median"}.get(e["quantity"], e["quantity"])
        for axis in AXES:
            if e["fits"].get(axis) is not None:
                fits.setdefault(e["engine"], {}).setdefault(axis, {})[key] = \
                    fit.fit_dict(e["fits"][axis])
    top = max(cfg.ms)
    metrics = {"engines": list(engines), "fits": fits, "m0": cfg.m0, "n0": cfg.n0,
               "d0": cfg.d0, "ms": list(cfg.ms), "ns": list(cfg.ns), "ds": list(cfg.ds),
               "verdicts": {e: {"status": s, "reason": why}
                            for e, (s, why) in tables.verdicts(fitted).items()},
               "rule": {"margin": verdict.MARGIN, "min_pairs": verdict.MIN_PAIRS,
                        "max_rise": verdict.MAX_RISE},
               "speedup_at_max_m": {r["engine"]: s for r, s, _ in speed if r["m"] == top},
               "ip_fraction_at_max_m": {r["engine"]: f for r, _, f in speed if r["m"] == top}}
    return {"key": "e3", "title": "E3 cost: per-iteration time and work against m, n, d",
            "status": "ok", "markdown": md, "files": [csv_path] + pngs,
            "seconds": time.perf_counter() - t_start, "metrics": metrics, "rows": rows}
