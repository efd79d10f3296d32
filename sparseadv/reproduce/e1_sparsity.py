"""E1: fired neurons per input at initialisation against the width m (claim: o(m), at most
m^{4/5}).

For each m: a fresh network (b = sqrt(0.4 ln m)), unit-norm points; the mean number of neurons
with <w_r, x> > b per input at initialisation, on clean and on PGD points, set against the
expectation m Q(b) and the bound m^{4/5}; the exponent of a log-log fit with its 95% interval.
The counts over hundreds of training iterations are E2's (training in the theory's regime).
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets, theory
from ..attacks import PGD
from ..network import ShiftedReLUNet
from .report import fit_dict, fmt_fit, md_table, progress_iter, write_csv

SERIES = ("clean_init", "adv_init")
LABELS = {"clean_init": "clean points, initialisation",
          "adv_init": "PGD points, initialisation"}


@dataclass
class Config:
    ms: list = field(default_factory=lambda: [2 ** k for k in range(10, 17)])
    n: int = 256
    d: int = 16
    eps: float = 0.05
    steps: int = 3
    seed: int = 0


def run(cfg, out, engines=("dense",), progress=True):
    # ``engines`` is part of every experiment's interface; fired counts do not depend on the
    # engine, so E1 counts them with the dense pass
    rows = []
    t_start = time.perf_counter()
    for m in progress_iter(cfg.ms, "E1 sparsity (m)", progress):
        t0 = time.perf_counter()
        X, y = datasets.separated(cfg.n, cfg.d, seed=cfg.seed + 1)
        net = ShiftedReLUNet(m, cfg.d, seed=cfg.seed)
        row = {"m": m, "n": cfg.n, "d": cfg.d, "b": net.b,
               "expected_mQb": theory.expected_fired(m),
               "expected_adv_norm": theory.expected_fired(m, norm=1.0 + cfg.eps),
               "bound_m45": theory.fired_bound(m)}
        clean = net.fired_counts(X)
        row["clean_init"] = float(clean.mean())
        row["clean_init_max"] = int(clean.max())
        Xa = PGD(cfg.eps, cfg.steps).perturb(net, X, y)
        row["adv_init"] = float(net.fired_counts(Xa).mean())
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    csv_path = write_csv(out, "e1_sparsity.csv", rows)

    ms = np.array([r["m"] for r in rows], dtype=float)
    fits, ratios = {}, {}
    for s in SERIES:
        vals = np.array([r[s] for r in rows])
        ratios[s] = float(np.max(vals / ms ** 0.8))
        if len(ms) >= 2 and np.all(vals > 0):
            fits[s] = fit_dict(theory.fit_power_law(ms, vals))
    theory_fit = fit_dict(theory.fit_power_law(ms, theory.expected_fired(ms.astype(np.int64)))) \
        if len(ms) >= 2 else None

    from .plotting import plot_e1
    pngs = plot_e1(out, rows, SERIES, LABELS)

    table = md_table(
        ["m", "b", "m·Q(b)", "m^{4/5}"] + [LABELS[s] for s in SERIES],
        [[r["m"], f"{r['b']:.3f}", f"{r['expected_mQb']:.1f}", f"{r['bound_m45']:.0f}"]
         + [f"{r[s]:.1f}" for s in SERIES] for r in rows])
    fit_lines = "\n".join(f"- {LABELS[s]}: exponent {fmt_fit(fits[s])}; max over m of "
                          f"fired / m^{{4/5}} = {ratios[s]:.3f}" for s in SERIES if s in fits)
    md = (f"Mean number of fired neurons per input (⟨w_r, x⟩ > b, b = sqrt(0.4 ln m)) for "
          f"n = {cfg.n} unit-norm points in d = {cfg.d} (separated data) at initialisation, on "
          f"clean and on PGD points (l2, eps = {cfg.eps}, {cfg.steps} steps); over training: "
          f"E2.\n\n{table}\n\n"
          f"Fitted exponents of fired ∝ m^α (95% t-interval):\n\n{fit_lines}\n"
          + (f"- theory m·Q(b) over the same m: exponent {theory_fit['exponent']:.3f} "
             f"(it tends to 4/5 from below as m grows, since m·Q(b) ≈ m^{{4/5}}/sqrt(0.8π ln m))\n"
             if theory_fit else ""))
    return {"key": "e1", "title": "E1 sparsity: fired neurons per input", "status": "ok",
            "markdown": md, "files": [csv_path] + pngs,
            "seconds": time.perf_counter() - t_start,
            "metrics": {"ms": [int(m) for m in ms], "d": cfg.d, "n": cfg.n,
                        "eps": cfg.eps,
                        "fits": fits, "ratio_to_bound": ratios,
                        "theory_exponent": theory_fit["exponent"] if theory_fit else None}}
