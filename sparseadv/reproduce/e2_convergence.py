"""E2: training in the theory's regime (m >= n^2); engines agree; robustness against eps.

For each width m (n fixed, so that m >= n^2): one start, lr="auto" (computed once, shared),
``iterations`` adversarial iterations (dense) and as many of standard training (no adversary) from
the same start; at the widths m <= ``seeds_max_m`` the same is repeated for ``seeds - 1`` more
seeds (another start, another draw of the data) and the ratio of the two minima is reported over
the seeds (the convergence verdict uses its range). Recorded: the robust training loss L_A(W_t) of
both against t (for the standard network L_A is evaluated every ``eval_every`` iterations with the
training attack), min over t and the last iterate, the fraction of iterations at which L_A fell;
the lazy-regime diagnostics at the last iterate (||W_t - W_0||_F / ||W_0||_F, the theorem's K =
sqrt(m) max_r ||w_r(t) - w_r(0)||, the fraction of the (point, neuron) activation states at
initialisation that flipped); fired neurons per input over training, on the attacked points (every
iteration) and the clean points (every ``eval_every``). Every sparse engine runs the first
``exact_iterations`` from the same start and is compared with dense. At m = ``eval_m`` the initial,
standard and adversarial networks are evaluated against eps on the training points and on held-out
points of the same distribution (:mod:`.robust_eval`).
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets, robustness, theory
from ..attacks import PGD
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import AdversarialTrainer
from . import robust_eval
from .report import fit_dict, fmt_fit, md_table, progress_iter, write_csv


@dataclass
class Config:
    ms: list = field(default_factory=lambda: [1024, 4096, 16384, 65536])
    n: int = 32
    n_test: int = 128
    d: int = 8
    margin: float = 0.1
    eps: float = 0.1
    steps: int = 3
    iterations: int = 200
    eval_every: int = 10
    exact_iterations: int = 10
    eval_m: int = 4096
    eval: robust_eval.EvalConfig = field(default_factory=robust_eval.EvalConfig)
    seed: int = 0
    seeds: int = 3           # training seeds (start and data) at the widths m <= seeds_max_m
    seeds_max_m: int = 4096
    long_iterations: int = 400   # one longer adversarial run at the smallest m (0: none)


def accuracy(net, X, y):
    return float(np.mean(~robustness.flipped(y * net.forward(X), y)))


def eps_grid(X, y, train_eps, norm=2):
    """0, the training eps, twice it (the verdict's eps*), and 1/2, 1 and 5/4 of half the
    data's separation (past it the ceiling drops below 1), skipping any of the last three
    within a tenth of half the separation of a radius already in the grid."""
    half = robustness.min_opposite_distance(X, y, norm) / 2
    grid = [0.0, train_eps, 2 * train_eps]
    for f in (0.5, 1.0, 1.25):
        e = round(f * half, 4)
        if min(abs(e - g) for g in grid) > 0.1 * half:
            grid.append(e)
    return sorted(grid)


def lazy_diagnostics(W0, W, X, b):
    dW = W - W0
    S0, S = X @ W0.T > b, X @ W.T > b
    return {"rel_dW": float(np.linalg.norm(dW) / np.linalg.norm(W0)),
            "K": float(np.sqrt(W.shape[0]) * np.linalg.norm(dW, axis=1).max()),
            "flip_frac": float(np.count_nonzero(S0 != S) / max(np.count_nonzero(S0), 1))}


def _train(cfg, net, X, y, eps, lr, iterations, every):
    """Train (dense); every ``every`` iterations, before the step, L_A(W_t) with the training
    attack (standard training's records hold the clean loss) and the clean fired counts."""
    attack = PGD(eps, cfg.steps) if eps > 0 else PGD(0.0, 1)
    tr = AdversarialTrainer(net, attack, lr=lr, engine="dense")
    evals = {"iteration": [], "robust_loss": [], "clean_fired": []}
    records = []
    for it in range(iterations):
        if it % every == 0:
            evals["iteration"].append(it)
            evals["robust_loss"].append(net.loss(PGD(cfg.eps, cfg.steps).perturb(net, X, y), y))
            evals["clean_fired"].append(float(net.fired_counts(X).mean()))
        records.append(tr.step(X, y))
    return {k: np.array([r[k] for r in records]) for k in ("loss", "fired_mean")}, evals


def _pair(cfg, net0, X, y):
    """lr = auto at net0's start, then adversarial and standard training from copies of it."""
    lr = auto_lr(net0, X)
    res = {}
    for model, eps in (("adversarial", cfg.eps), ("standard", 0.0)):
        net = net0.copy()
        h, ev = _train(cfg, net, X, y, eps, lr, cfg.iterations, cfg.eval_every)
        res[model] = (net, h, ev)
    return lr, res


def _data(cfg, seed):
    """The training and held-out points of one seed."""
    X, y = datasets.separated(cfg.n + cfg.n_test, cfg.d, margin=cfg.margin, seed=seed + 1)
    return X[:cfg.n], y[:cfg.n], X[cfg.n:], y[cfg.n:]


def _over_seeds(cfg, m, ratio0, frac0):
    """min_t L_A adv. / min_t L_A std. and the fraction of falling iterations over ``cfg.seeds``
    seeds (the first is the main run's) at m <= ``cfg.seeds_max_m``; {} at wider m. At
    m = ``cfg.eval_m`` also the held-out gain at eps* of each further seed ("gains")."""
    if cfg.seeds < 2 or m > cfg.seeds_max_m:
        return {}
    ratios, fracs, gains = [float(ratio0)], [frac0], []
    for k in range(1, cfg.seeds):
        s = cfg.seed + 1000 * k
        X, y, Xh, yh = _data(cfg, s)
        _, res = _pair(cfg, ShiftedReLUNet(m, cfg.d, seed=s), X, y)
        La = res["adversarial"][1]["loss"]
        ratios.append(float(La.min() / min(res["standard"][2]["robust_loss"])))
        fracs.append(float(np.mean(np.diff(La) < 0)))
        if m == cfg.eval_m:
            gains.append(robust_eval.gain_at_eps_star(
                {model: res[model][0] for model in res}, Xh, yh, cfg.eps, cfg.eval, s + 2))
    out = {"ratio_seeds": ratios, "decrease_seeds": fracs}
    return dict(out, gains=gains) if m == cfg.eval_m else out


def floor_diagnostics(L):
    """How a robust-loss curve L_A(W_t) behaves once it stops falling: the fraction of
    iterations at which it fell, the first iteration at which it did not (None if it always
    fell), the median and largest rise relative to the loss before it, min_t and its t, the
    last value and last / min."""
    L = np.asarray(L, float)
    dL = np.diff(L)
    up = np.flatnonzero(dL >= 0)
    rel = dL[up] / np.abs(L[up]) if up.size else np.zeros(0)
    return {"iterations": int(L.size), "fell": float(np.mean(dL < 0)) if dL.size else 1.0,
            "first_rise": int(up[0]) + 1 if up.size else None,
            "median_rise": float(np.median(rel)) if rel.size else 0.0,
            "max_rise": float(rel.max()) if rel.size else 0.0,
            "min": float(L.min()), "argmin": int(np.argmin(L)), "last": float(L[-1]),
            "last_over_min": float(L[-1] / L.min())}


def _long_run(cfg, net0, X, y, lr):
    """``cfg.long_iterations`` adversarial iterations from net0 at lr (past the report's
    horizon): where the training attack's robust loss reaches its floor."""
    tr = AdversarialTrainer(net0.copy(), PGD(cfg.eps, cfg.steps), lr=lr, engine="dense")
    L = tr.fit(X, y, cfg.long_iterations, progress=False)["loss"]
    return {"m": net0.m, "lr": lr, **floor_diagnostics(L)}


def _seeds_cell(r, key, fmt):
    v = r.get(key)
    return f"{fmt(min(v))}…{fmt(max(v))} ({len(v)})" if v else "—"


def run(cfg, out, engines=("dense",), progress=True):
    t_start = time.perf_counter()
    X, y, Xh, yh = _data(cfg, cfg.seed)
    curves, per_m, diag, fired, diffs = [], [], [], [], {}
    nets_eval, long_run, seed_gains = None, None, []
    for m in progress_iter(cfg.ms, "E2 training (m)", progress):
        net0 = ShiftedReLUNet(m, cfg.d, seed=cfg.seed)
        lr, res = _pair(cfg, net0, X, y)
        adv_net, ha, eva = res["adversarial"]
        std_net, hs, evs = res["standard"]
        La = ha["loss"]
        Ls = np.array(evs["robust_loss"])
        for it, loss in enumerate(La):
            curves.append({"m": m, "model": "adversarial", "iteration": it,
                           "robust_loss": float(loss),
                           "fired_attacked": float(ha["fired_mean"][it])})
        for it, loss in zip(evs["iteration"], Ls):
            curves.append({"m": m, "model": "standard", "iteration": it,
                           "robust_loss": float(loss)})
        dg = {"m": m, **lazy_diagnostics(net0.W, adv_net.W, X, net0.b)}
        diag.append(dg)
        fr = {"m": m, "max_attacked": float(ha["fired_mean"].max()),
              "mean_attacked": float(ha["fired_mean"].mean()),
              "max_clean": float(max(eva["clean_fired"])),
              "mQb": float(theory.expected_fired(m)), "m45": float(theory.fired_bound(m))}
        fired.append(fr)
        dL = np.diff(La)
        seeds = _over_seeds(cfg, m, La.min() / Ls.min(), float(np.mean(dL < 0)))
        seed_gains = seeds.pop("gains", seed_gains)
        per_m.append({"m": m, "n": cfg.n, "lr": lr, "min_adv": float(La.min()),
                      "argmin_adv": int(np.argmin(La)), "last_adv": float(La[-1]),
                      "min_std": float(Ls.min()), "last_std": float(Ls[-1]),
                      "ratio_min": float(La.min() / Ls.min()),
                      "decrease_frac": float(np.mean(dL < 0)),
                      **seeds,
                      "clean_acc_adv": accuracy(adv_net, X, y),
                      "clean_acc_std": accuracy(std_net, X, y), **dg})
        _exactness(cfg, net0, X, y, lr, engines, diffs)
        if m == cfg.ms[0] and cfg.long_iterations > 0:
            long_run = _long_run(cfg, net0, X, y, lr)
        if m == cfg.eval_m or (nets_eval is None and m == cfg.ms[-1]):
            nets_eval = (m, {"initial": net0, "standard": std_net, "adversarial": adv_net})

    csv_c = write_csv(out, "e2_loss_curves.csv", curves)
    csv_m = write_csv(out, "e2_training.csv", per_m)
    csv_f = write_csv(out, "e2_fired.csv", fired)
    from .plotting import plot_e2
    pngs = plot_e2(out, curves, cfg.ms, diag, fired)

    m_eval, nets = nets_eval
    grid = eps_grid(X, y, cfg.eps)
    md_rob, files_rob, gains, _ = robust_eval.section(
        out, "e2", f"E2 separated data, m = {m_eval}", nets,
        {"training points": (X, y), "held-out points": (Xh, yh)}, grid, cfg.eps, cfg.eval,
        cfg.seed + 2)

    gains_seeds = [gains.get("held-out points")] + (seed_gains if m_eval == cfg.eval_m else [])
    ms = np.array(cfg.ms, float)
    fits = {}
    for kind in ("attacked", "clean"):
        vals = np.array([f[f"max_{kind}"] for f in fired])
        if len(ms) >= 2 and np.all(vals > 0):
            fits[kind] = fit_dict(theory.fit_power_law(ms, vals))
    t_train = md_table(
        ["m", "m ≥ n²", "lr", "min_t L_A adv. (t)", "last L_A adv.", "min_t L_A std.",
         "last L_A std.", "adv/std (min)", "adv/std over seeds (n)", "L_A fell (fraction of t)",
         "L_A fell over seeds", "‖ΔW‖/‖W_0‖", "√m·max_r‖Δw_r‖", "patterns flipped"],
        [[r["m"], "yes" if r["m"] >= r["n"] ** 2 else "no", f"{r['lr']:.3g}",
          f"{r['min_adv']:.4f} ({r['argmin_adv']})", f"{r['last_adv']:.4f}",
          f"{r['min_std']:.4f}", f"{r['last_std']:.4f}", f"{r['ratio_min']:.3f}",
          _seeds_cell(r, "ratio_seeds", "{:.3f}".format), f"{r['decrease_frac']:.2f}",
          _seeds_cell(r, "decrease_seeds", "{:.2f}".format), f"{r['rel_dW']:.4f}", f"{r['K']:.3f}",
          f"{r['flip_frac']:.4f}"] for r in per_m])
    t_fired = md_table(
        ["m", "m·Q(b)", "m^{4/5}", "attacked: mean over t", "attacked: max over t",
         "clean: max over t"],
        [[f["m"], f"{f['mQb']:.1f}", f"{f['m45']:.0f}", f"{f['mean_attacked']:.1f}",
          f"{f['max_attacked']:.1f}", f"{f['max_clean']:.1f}"] for f in fired])
    t_exact = md_table(["engine", "max rel. diff of loss history vs dense",
                        "max ‖W − W_dense‖_F / ‖W_dense‖_F"],
                       [[e, f"{d['loss_rel']:.2e}", f"{d['w_rel']:.2e}"]
                        for e, d in diffs.items()]) if diffs else "Only the dense engine ran."
    md = (f"n = {cfg.n} training points (separated data, margin {cfg.margin}) in d = {cfg.d}, "
          f"{cfg.n_test} held-out points of the same distribution; l2 PGD eps = {cfg.eps}, "
          f"{cfg.steps} steps; {cfg.iterations} iterations of adversarial and of standard "
          f"training (no adversary) from the same start, lr = auto (computed once per m, "
          f"shared). L_A of the standard network every {cfg.eval_every} iterations. Over "
          f"seeds: {cfg.seeds} seeds (start and data) at m ≤ {cfg.seeds_max_m}, range "
          f"(number of seeds).\n\n"
          f"{t_train}\n\nFired neurons per input over training (b = sqrt(0.4 ln m)):\n\n"
          f"{t_fired}\n\nExponents of the max over training against m: "
          + "; ".join(f"{k} points {fmt_fit(v)}" for k, v in fits.items())
          + _long_markdown(cfg, long_run)
          + f"\n\nEngines against dense over the first {cfg.exact_iterations} iterations "
          f"(every m):\n\n{t_exact}\n\n### Robustness against eps (m = {m_eval})\n\n{md_rob}"
          + robust_eval.seeds_line("held-out points", gains_seeds))
    metrics = {"ms": list(cfg.ms), "n": cfg.n, "d": cfg.d, "eps": cfg.eps,
               "iterations": cfg.iterations, "seeds": cfg.seeds, "engines": ["dense"] + list(diffs),
               "diffs": diffs, "per_m": per_m, "fired": fired, "fired_fits": fits,
               "long_run": long_run,
               "gains_seeds": {"held-out points": gains_seeds},
               "gains": gains, "eval_m": m_eval, "eps_grid": grid,
               "half_separation": robustness.min_opposite_distance(X, y) / 2}
    return {"key": "e2", "title": "E2 training in the theory's regime; engines agree; robustness",
            "status": "ok", "markdown": md, "files": [csv_c, csv_m, csv_f] + pngs + files_rob,
            "seconds": time.perf_counter() - t_start, "metrics": metrics}


def _long_markdown(cfg, r):
    if r is None:
        return ""
    first = "never" if r["first_rise"] is None else f"t = {r['first_rise']}"
    return (f"\n\nPast the report's horizon (not part of the verdicts): {r['iterations']} "
            f"adversarial iterations at m = {r['m']}, the same start and lr. L_A fell at "
            f"{r['fell']:.2f} of iterations; it first failed to fall at {first}; the rises are "
            f"{r['median_rise']:.2%} (median) and at most {r['max_rise']:.2%} of the loss; "
            f"min_t L_A {r['min']:.4f} (t = {r['argmin']}), last {r['last']:.4f} (last / min "
            f"{r['last_over_min']:.4f}). Once the attacked residuals reach 0, where the training "
            f"attack's loss is not smooth in W (docs/design.md §2, step size), a constant rate oscillates "
            f"there while the loss still falls on the whole.")


def _exactness(cfg, net0, X, y, lr, engines, diffs):
    sparse = [e for e in engines if e != "dense"]
    if not sparse:
        return
    ref = {}
    for e in ["dense"] + sparse:
        net = net0.copy()
        h = AdversarialTrainer(net, PGD(cfg.eps, cfg.steps), lr=lr, engine=e).fit(
            X, y, cfg.exact_iterations, progress=False)
        ref[e] = (h["loss"], net.W)
    Ld, Wd = ref["dense"]
    for e in sparse:
        L, W = ref[e]
        d = diffs.setdefault(e, {"loss_rel": 0.0, "w_rel": 0.0})
        d["loss_rel"] = max(d["loss_rel"], float(np.max(np.abs(L - Ld) / np.abs(Ld))))
        d["w_rel"] = max(d["w_rel"], float(np.linalg.norm(W - Wd) / np.linalg.norm(Wd)))
