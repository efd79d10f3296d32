"""Robust accuracy and robust loss against eps for several trained networks (shared by E2, E5).

Every robust accuracy here comes from the margin ensemble of :mod:`sparseadv.robustness`
(margin PGD with restarts and two step sizes, plus the training attack); the squared-loss PGD
alone is shown next to it, and the ceiling (the best any classifier can reach) under both. The
gain of adversarial over standard training is read where the ceiling leaves headroom, with a
paired bootstrap interval over the evaluated points.
"""
from dataclasses import dataclass

import numpy as np

from .. import robustness
from .report import md_table, write_csv

MODELS = ("initial", "standard", "adversarial")
HEADROOM = 0.05      # ceiling - standard's robust accuracy that counts as room to gain
EVAL_FACTOR = 2.0    # the verdict's radius eps* = EVAL_FACTOR x the training eps
BOOTSTRAP = 2000     # resamples of the paired bootstrap


@dataclass
class EvalConfig:
    steps: int = 20          # margin PGD steps per trajectory
    restarts: int = 2        # random starts besides the clean one
    loss_steps: int = 10     # steps of the squared-loss PGD (ensemble member and L_A)
    max_points: int = 200    # points evaluated per split (a seeded subsample beyond this)


def subsample(X, y, k, seed):
    if k <= 0 or len(y) <= k:
        return X, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), k, replace=False))
    return X[idx], y[idx]


def curves(nets, splits, eps_grid, train_eps, ev, seed, norm=2):
    """rows (one per split, eps, model) and the per-point robust indicators for the gain."""
    from ..attacks import PGD
    rows, robust = [], {}
    for split, (X, y) in splits.items():
        X, y = subsample(X, y, ev.max_points, seed)
        for eps in eps_grid:
            ceiling = robustness.accuracy_ceiling(X, y, eps, norm)
            for name, net in nets.items():
                res = robustness.evaluate(
                    net, X, y, eps, norm=norm, steps=ev.steps, restarts=ev.restarts,
                    train_attack=PGD(eps, ev.loss_steps, norm=norm), seed=seed)
                robust[(split, eps, name)] = res.robust
                rows.append({"split": split, "eps": float(eps), "model": name,
                             "robust_acc": res.accuracy,
                             "robust_acc_margin_pgd": res.member_accuracy("margin"),
                             "robust_acc_squared_loss_pgd": res.member_accuracy("squared_loss"),
                             "robust_loss": robustness.robust_loss(
                                 net, X, y, PGD(eps, ev.loss_steps, norm=norm)),
                             "ceiling": ceiling, "n_points": len(y),
                             "train_eps": train_eps})
    return rows, robust


def paired_gain(a, b, seed):
    """mean(a) - mean(b) for paired 0/1 indicators, with a 95% paired bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a - b
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def headroom_gain(rows, robust, split, train_eps, seed):
    """The gain of adversarial over standard training at eps* = ``EVAL_FACTOR`` x the training
    eps (fixed before any run), when the ceiling there exceeds standard's robust accuracy by
    ``HEADROOM``; None when it does not (no room to gain) or eps* was not evaluated."""
    target = EVAL_FACTOR * train_eps
    std = {r["eps"]: r for r in rows if r["split"] == split and r["model"] == "standard"}
    e = next((e for e in std if abs(e - target) <= 1e-9 * max(target, 1.0)), None)
    if e is None or std[e]["ceiling"] - std[e]["robust_acc"] < HEADROOM:
        return None
    adv = next(r for r in rows if r["split"] == split and r["model"] == "adversarial"
               and r["eps"] == e)
    gain, lo, hi = paired_gain(robust[(split, e, "adversarial")],
                               robust[(split, e, "standard")], seed)
    return {"eps": e, "adversarial": adv["robust_acc"], "standard": std[e]["robust_acc"],
            "ceiling": std[e]["ceiling"], "gain": gain, "ci_low": lo, "ci_high": hi,
            "n_points": std[e]["n_points"]}


def gain_at_eps_star(nets, X, y, train_eps, ev, seed, split="held-out points"):
    """``headroom_gain`` of one more (standard, adversarial) pair of trained networks on the
    points (X, y), evaluated at eps* alone (the verdict's spread over training seeds)."""
    pair = {k: nets[k] for k in ("standard", "adversarial")}
    rows, robust = curves(pair, {split: (X, y)}, [EVAL_FACTOR * train_eps], train_eps, ev, seed)
    return headroom_gain(rows, robust, split, train_eps, seed)


def section(out, prefix, title, nets, splits, eps_grid, train_eps, ev, seed):
    """Run the curves, write ``<prefix>_robustness.csv`` and a PNG; markdown and metrics."""
    rows, robust = curves(nets, splits, eps_grid, train_eps, ev, seed)
    csv_path = write_csv(out, f"{prefix}_robustness.csv", rows)
    from .plotting import plot_robustness
    pngs = plot_robustness(out, f"{prefix}_robustness.png", title, rows, list(splits))
    table = md_table(
        ["split", "eps", "ceiling"] + [f"{m}: ensemble / sq.-loss PGD / L_A" for m in nets],
        [[split, f"{e:g}", f"{_get(rows, split, e, next(iter(nets)))['ceiling']:.3f}"]
         + [_cell(_get(rows, split, e, m)) for m in nets]
         for split in splits for e in eps_grid])
    gains = {s: headroom_gain(rows, robust, s, train_eps, seed) for s in splits}
    md = (f"Robust accuracy (margin ensemble: margin PGD, {ev.steps} steps, clean start + "
          f"{ev.restarts} random starts, step sizes 2.5·eps/{ev.steps} and eps/4, plus the "
          f"squared-loss PGD of training with {ev.loss_steps} steps), the squared-loss PGD "
          f"alone, and the robust loss L_A (squared-loss PGD, {ev.loss_steps} steps), against "
          f"the l2 radius eps; training eps {train_eps:g}; at most {ev.max_points} points per "
          f"split. The ceiling is the best robust accuracy any classifier can reach on the same "
          f"points (maximum matching of opposite-label pairs within 2·eps).\n\n{table}\n\n"
          + "".join(_gain_line(s, g) for s, g in gains.items()))
    return md, [csv_path] + pngs, gains, rows


def _get(rows, split, eps, model):
    return next(r for r in rows if r["split"] == split and r["eps"] == eps and r["model"] == model)


def _cell(r):
    return (f"{r['robust_acc']:.3f} / {r['robust_acc_squared_loss_pgd']:.3f} / "
            f"{r['robust_loss']:.3f}")


def _gain_line(split, g):
    if g is None:
        return (f"- {split}: at eps* = {EVAL_FACTOR:g} x the training eps the ceiling leaves less "
                f"than {HEADROOM:.0%} headroom above standard training: no gain can be measured\n")
    return (f"- {split}: at eps* = {g['eps']:g} ({EVAL_FACTOR:g} x the training eps; ceiling "
            f"{g['ceiling']:.3f}) adversarial {g['adversarial']:.3f} vs "
            f"standard {g['standard']:.3f}: gain {g['gain']:+.3f} [{g['ci_low']:+.3f}, "
            f"{g['ci_high']:+.3f}] (95% paired bootstrap over {g['n_points']} points)\n")


def seeds_line(split, gains):
    """One markdown line: the held-out gain at eps* of each training seed (the first is the
    main run's), with its interval."""
    if len(gains) < 2:
        return ""
    cells = ["no headroom" if g is None else
             f"{g['gain']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]" for g in gains]
    return (f"- {split}, over {len(gains)} training seeds (start and data; the first is the "
            f"run above), gain at eps*: " + "; ".join(cells) + "\n")
