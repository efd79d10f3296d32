"""E5: adversarial training on real data (scikit-learn's bundled 8x8 digits, 0-4 vs 5-9).

Same start and learning rate for every engine (and for a standard-training baseline with
eps = 0); clean and robust accuracy on the held-out split under a stronger PGD; training time
per engine. Needs scikit-learn (extra ``digits``); without it the section says so.
"""
import time
from dataclasses import dataclass

import numpy as np

from .. import datasets
from ..attacks import PGD
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import AdversarialTrainer
from .e2_convergence import accuracy, robust_accuracy
from .report import md_table, progress_iter, write_csv


@dataclass
class Config:
    m: int = 4096
    eps: float = 0.1
    steps: int = 3
    iterations: int = 20
    eval_factor: float = 1.0
    eval_steps: int = 10
    test_size: float = 0.25
    subsample: int = 0        # 0: the whole training split (tests use a few hundred points)
    seed: int = 0


def run(cfg, out, engines=("dense",), progress=True):
    t_start = time.perf_counter()
    try:
        split = datasets.load_digits(test_size=cfg.test_size, seed=cfg.seed)
    except ImportError:
        return {"key": "e5", "title": "E5 real data: handwritten digits", "status": "not available",
                "markdown": "Not available: the digits data set needs scikit-learn. Install it "
                            "with `pip install 'sparseadv[digits]'` (or `pip install "
                            "scikit-learn`) and rerun.\n",
                "files": [], "seconds": time.perf_counter() - t_start, "metrics": None}
    X, y, Xt, yt = split
    if cfg.subsample:
        X, y = X[:cfg.subsample], y[:cfg.subsample]
    d = X.shape[1]
    net0 = ShiftedReLUNet(cfg.m, d, seed=cfg.seed)
    lr = auto_lr(net0, X)
    eps_eval = cfg.eval_factor * cfg.eps
    rows, nets = [], {}
    jobs = list(engines) + ["standard"]
    for engine in progress_iter(jobs, "E5 digits (engine)", progress):
        net = net0.copy()
        if engine == "standard":
            attack, eng = PGD(0.0, steps=1), "dense"
        else:
            attack, eng = PGD(cfg.eps, cfg.steps), engine
        t0 = time.perf_counter()
        h = AdversarialTrainer(net, attack, lr=lr, engine=eng).fit(
            X, y, iterations=cfg.iterations, progress=False)
        wall = time.perf_counter() - t0
        nets[engine] = net
        rows.append({"model": "standard (eps=0)" if engine == "standard" else "adversarial",
                     "engine": eng, "m": cfg.m, "n_train": X.shape[0], "n_test": Xt.shape[0],
                     "d": d, "iterations": cfg.iterations, "seconds": wall,
                     "final_robust_loss": float(h["loss"][-1]),
                     "fired_mean": float(h["fired_mean"][-1]),
                     "clean_test_acc": accuracy(net, Xt, yt),
                     "robust_test_acc": robust_accuracy(net, Xt, yt, eps_eval, cfg.eval_steps),
                     "clean_train_acc": accuracy(net, X, y)})
    dense_sec = next(r["seconds"] for r in rows if r["engine"] == "dense" and
                     r["model"] == "adversarial")
    for r in rows:
        r["speedup_vs_dense"] = dense_sec / r["seconds"] if r["model"] == "adversarial" else np.nan
    csv_path = write_csv(out, "e5_digits.csv", rows)
    table = md_table(["model", "engine", "train s", "speed-up vs dense", "clean test acc.",
                      f"robust test acc. (eps {eps_eval:g})", "fired / input"],
                     [[r["model"], r["engine"], f"{r['seconds']:.2f}",
                       "" if np.isnan(r["speedup_vs_dense"]) else f"{r['speedup_vs_dense']:.2f}",
                       f"{r['clean_test_acc']:.3f}", f"{r['robust_test_acc']:.3f}",
                       f"{r['fired_mean']:.1f}"] for r in rows])
    md = (f"Digits 0-4 (+1) vs 5-9 (-1), {X.shape[0]} training and {Xt.shape[0]} held-out "
          f"images, d = {d}, centred and scaled to unit norm; m = {cfg.m}, l2 PGD eps = "
          f"{cfg.eps}, {cfg.steps} steps, {cfg.iterations} iterations, lr = {lr:.4g} (auto, "
          f"shared). Robust accuracy: l2 PGD eps = {eps_eval:g}, {cfg.eval_steps} steps, on "
          f"the held-out split.\n\n{table}\n")
    adv = next(r for r in rows if r["model"] == "adversarial" and r["engine"] == "dense")
    std = next(r for r in rows if r["model"] != "adversarial")
    metrics = {"robust_adversarial": adv["robust_test_acc"], "robust_standard": std["robust_test_acc"],
               "clean_adversarial": adv["clean_test_acc"], "clean_standard": std["clean_test_acc"],
               "eps_eval": eps_eval, "m": cfg.m,
               "speedup": {r["engine"]: r["speedup_vs_dense"] for r in rows
                           if r["model"] == "adversarial"}}
    return {"key": "e5", "title": "E5 real data: handwritten digits", "status": "ok",
            "markdown": md, "files": [csv_path], "seconds": time.perf_counter() - t_start,
            "metrics": metrics}
