"""E2: every engine trains to the same weights as dense; robust against standard training.

For each m: one starting network and one learning rate (auto, computed once at the start and
passed as a float to every engine); the robust training loss per iteration of each registered
engine, the maximum relative difference of its loss history and of its final W against dense;
then the robust accuracy on the training points under a stronger PGD (eps_eval = factor x eps,
more steps) of the adversarially trained network against one trained without an adversary
(PGD with eps = 0), from the same start.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets
from ..attacks import PGD
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import AdversarialTrainer
from .report import md_table, progress_iter, write_csv


@dataclass
class Config:
    ms: list = field(default_factory=lambda: [1024, 8192])
    n: int = 128
    d: int = 16
    margin: float = 0.1
    eps: float = 0.05
    steps: int = 3
    iterations: int = 30
    eval_factor: float = 2.0
    eval_steps: int = 10
    seed: int = 0


def accuracy(net, X, y):
    return float(np.mean(np.where(net.forward(X) >= 0, 1.0, -1.0) == y))


def robust_accuracy(net, X, y, eps, steps):
    return accuracy(net, PGD(eps, steps).perturb(net, X, y), y)


def run(cfg, out, engines=("dense",), progress=True):
    t_start = time.perf_counter()
    curves, rows = [], []
    jobs = [(m, e) for m in cfg.ms for e in list(engines) + ["standard"]]
    bar = progress_iter(jobs, "E2 convergence (m, engine)", progress)
    state = {}
    eps_eval = cfg.eval_factor * cfg.eps
    for m, engine in bar:
        if m not in state:
            X, y = datasets.separated(cfg.n, cfg.d, margin=cfg.margin, seed=cfg.seed + 1)
            net0 = ShiftedReLUNet(m, cfg.d, seed=cfg.seed)
            state[m] = {"X": X, "y": y, "net0": net0, "lr": auto_lr(net0, X), "W": {},
                        "loss": {}, "nets": {}, "seconds": {}}
        st = state[m]
        net = st["net0"].copy()
        if engine == "standard":
            attack, eng = PGD(0.0, steps=1), "dense"   # eps = 0: no adversary
        else:
            attack, eng = PGD(cfg.eps, cfg.steps), engine
        trainer = AdversarialTrainer(net, attack, lr=st["lr"], engine=eng)
        h = trainer.fit(st["X"], st["y"], iterations=cfg.iterations, progress=False)
        st["loss"][engine] = h["loss"]
        st["W"][engine] = net.W.copy()
        st["nets"][engine] = net
        st["seconds"][engine] = float(np.sum(h["seconds"]))
        for it, loss in enumerate(h["loss"], 1):
            curves.append({"m": m, "engine": engine, "iteration": it, "loss": float(loss),
                           "fired_mean": float(h["fired_mean"][it - 1]),
                           "inner_products": int(h["inner_products"][it - 1])})

    diffs = {}
    for m in cfg.ms:
        st = state[m]
        X, y = st["X"], st["y"]
        Ld, Wd = st["loss"]["dense"], st["W"]["dense"]
        for engine in engines:
            L, W = st["loss"][engine], st["W"][engine]
            loss_rel = float(np.max(np.abs(L - Ld) / np.maximum(np.abs(Ld), 1e-300)))
            w_rel = float(np.linalg.norm(W - Wd) / np.linalg.norm(Wd))
            diffs.setdefault(engine, {"loss_rel": 0.0, "w_rel": 0.0})
            diffs[engine]["loss_rel"] = max(diffs[engine]["loss_rel"], loss_rel)
            diffs[engine]["w_rel"] = max(diffs[engine]["w_rel"], w_rel)
            rows.append({"m": m, "engine": engine, "kind": "adversarial",
                         "final_loss": float(L[-1]), "loss_max_rel_diff_vs_dense": loss_rel,
                         "W_rel_diff_vs_dense": w_rel, "seconds": st["seconds"][engine]})
        acc = {}
        for label, net in (("init", st["net0"]), ("adversarial", st["nets"]["dense"]),
                           ("standard", st["nets"]["standard"])):
            acc[label] = {"clean": accuracy(net, X, y),
                          "robust_train_eps": robust_accuracy(net, X, y, cfg.eps, cfg.eval_steps),
                          "robust_eval_eps": robust_accuracy(net, X, y, eps_eval, cfg.eval_steps)}
        st["acc"] = acc
        rows.append({"m": m, "engine": "dense", "kind": "standard (eps=0)",
                     "final_loss": float(st["loss"]["standard"][-1]),
                     "seconds": st["seconds"]["standard"]})

    csv_curves = write_csv(out, "e2_loss_curves.csv", curves)
    csv_diffs = write_csv(out, "e2_engines.csv", rows)
    acc_rows = [{"m": m, "model": label, **state[m]["acc"][label]}
                for m in cfg.ms for label in ("init", "standard", "adversarial")]
    csv_acc = write_csv(out, "e2_robust_accuracy.csv", acc_rows)

    from .plotting import plot_e2
    pngs = plot_e2(out, curves, cfg.ms, list(engines) + ["standard"])

    t1 = md_table(["engine", "max rel. diff of loss history vs dense",
                   "max ‖W − W_dense‖_F / ‖W_dense‖_F"],
                  [[e, f"{diffs[e]['loss_rel']:.2e}", f"{diffs[e]['w_rel']:.2e}"]
                   for e in engines])
    t2 = md_table(["m", "model", "clean acc.", f"robust acc. (eps {cfg.eps:g})",
                   f"robust acc. (eps {eps_eval:g})"],
                  [[r["m"], r["model"], f"{r['clean']:.3f}", f"{r['robust_train_eps']:.3f}",
                    f"{r['robust_eval_eps']:.3f}"] for r in acc_rows])
    lrs = ", ".join(f"m={m}: {state[m]['lr']:.4g}" for m in cfg.ms)
    md = (f"Same start (seed {cfg.seed}), same learning rate (auto at the start, "
          f"{lrs}), n = {cfg.n} "
          f"separated points (margin {cfg.margin}) in d = {cfg.d}, l2 PGD eps = {cfg.eps}, "
          f"{cfg.steps} steps, {cfg.iterations} iterations, engines: {', '.join(engines)}.\n\n"
          f"{t1}\n\nRobust accuracy on the training points under l2 PGD with "
          f"{cfg.eval_steps} steps; 'standard' is trained from the same start without an "
          f"adversary (PGD eps = 0).\n\n{t2}\n")
    metrics = {"ms": list(cfg.ms), "engines": list(engines), "diffs": diffs,
               "eps": cfg.eps, "eps_eval": eps_eval, "n": cfg.n, "d": cfg.d,
               "robust": {m: {"adversarial": state[m]["acc"]["adversarial"]["robust_eval_eps"],
                              "standard": state[m]["acc"]["standard"]["robust_eval_eps"]}
                          for m in cfg.ms}}
    return {"key": "e2", "title": "E2 convergence: engines agree; robust vs standard training",
            "status": "ok", "markdown": md, "files": [csv_curves, csv_diffs, csv_acc] + pngs,
            "seconds": time.perf_counter() - t_start, "metrics": metrics}
