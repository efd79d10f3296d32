"""E5: real data: scikit-learn's bundled 8x8 digits (0-4 vs 5-9) and breast-cancer data (both
ship inside scikit-learn: no download).

Per data set: one start and one learning rate (auto) for every engine and for a standard-training
baseline (no adversary); training time per engine; then the initial, standard and adversarial
networks against eps on training and held-out points, with the ceiling (:mod:`.robust_eval`).
Needs scikit-learn (extra ``digits``); without it the section says so.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets
from ..attacks import PGD
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import AdversarialTrainer
from . import robust_eval
from .e2_convergence import accuracy, eps_grid
from .report import md_table, progress_iter, write_csv

TITLE = "E5 real data: handwritten digits and breast cancer"


@dataclass
class Config:
    m: int = 4096
    eps: float = 0.1
    steps: int = 3
    iterations: int = 40
    test_size: float = 0.25
    subsample: int = 0        # 0: the whole training split (tests use a few hundred points)
    data: tuple = ("digits", "breast_cancer")
    eval: robust_eval.EvalConfig = field(default_factory=robust_eval.EvalConfig)
    seed: int = 0
    seeds: int = 3            # training seeds (start and split) for the gain at eps*


def load_breast_cancer(test_size=0.25, seed=0):
    """scikit-learn's breast-cancer data (569 x 30, bundled): +1 benign, -1 malignant; a seeded
    stratified split; features standardised by the training split's mean and deviation, then
    each row scaled to unit l2 norm (as ``datasets.load_digits``)."""
    from sklearn.datasets import load_breast_cancer as _load
    Z, t = _load(return_X_y=True)
    rng = np.random.default_rng(seed)
    test = rng.permutation(np.concatenate(
        [rng.permutation(np.flatnonzero(t == c))[:int(round(test_size * np.sum(t == c)))]
         for c in (0, 1)]))
    train = rng.permutation(np.setdiff1d(np.arange(len(t)), test))
    mu, sd = Z[train].mean(axis=0), Z[train].std(axis=0)

    def prep(idx):
        A = (Z[idx] - mu) / np.where(sd > 0, sd, 1.0)
        return np.ascontiguousarray(A / np.linalg.norm(A, axis=1, keepdims=True))
    lab = np.where(t == 1, 1.0, -1.0)
    return prep(train), lab[train], prep(test), lab[test]


LABELS = {"digits": "digits (0-4 vs 5-9)", "breast_cancer": "breast cancer (benign vs malignant)"}


def _split(cfg, key, seed):
    loader = datasets.load_digits if key == "digits" else load_breast_cancer
    X, y, Xt, yt = loader(test_size=cfg.test_size, seed=seed)
    if cfg.subsample:
        X, y = X[:cfg.subsample], y[:cfg.subsample]
    return X, y, Xt, yt


def _seed_gains(cfg, key):
    """The held-out gain at eps* of ``cfg.seeds - 1`` further seeds (another start and
    split; dense standard and adversarial training as in the main run)."""
    gains = []
    for k in range(1, cfg.seeds):
        s = cfg.seed + 1000 * k
        X, y, Xt, yt = _split(cfg, key, s)
        net0 = ShiftedReLUNet(cfg.m, X.shape[1], seed=s)
        lr, nets = auto_lr(net0, X), {}
        for model, attack in (("standard", PGD(0.0, steps=1)),
                              ("adversarial", PGD(cfg.eps, cfg.steps))):
            nets[model] = net0.copy()
            AdversarialTrainer(nets[model], attack, lr=lr).fit(X, y, cfg.iterations,
                                                                progress=False)
        gains.append(robust_eval.gain_at_eps_star(nets, Xt, yt, cfg.eps, cfg.eval, s + 2))
    return gains


def _one(cfg, key, out, engines, progress):
    label = LABELS[key]
    X, y, Xt, yt = _split(cfg, key, cfg.seed)
    d = X.shape[1]
    net0 = ShiftedReLUNet(cfg.m, d, seed=cfg.seed)
    lr = auto_lr(net0, X)
    rows, nets = [], {"initial": net0}
    for engine in progress_iter(list(engines) + ["standard"], f"E5 {key} (engine)", progress):
        net = net0.copy()
        if engine == "standard":
            attack, eng = PGD(0.0, steps=1), "dense"
        else:
            attack, eng = PGD(cfg.eps, cfg.steps), engine
        t0 = time.perf_counter()
        tr = AdversarialTrainer(net, attack, lr=lr, engine=eng)
        h = tr.fit(X, y, iterations=cfg.iterations, progress=False)
        wall = time.perf_counter() - t0
        model = "standard" if engine == "standard" else "adversarial"
        if eng == "dense":
            nets[model] = net
        rows.append({"data": key, "model": model, "engine": eng, "m": cfg.m,
                     "n_train": X.shape[0], "n_test": Xt.shape[0], "d": d,
                     "iterations": cfg.iterations, "lr": lr, "seconds": wall,
                     "last_train_loss": float(h["loss"][-1]), "min_train_loss": tr.best_loss_,
                     "fired_mean": float(h["fired_mean"][-1]),
                     "clean_test_acc": accuracy(net, Xt, yt),
                     "clean_train_acc": accuracy(net, X, y)})
    dense_sec = next(r["seconds"] for r in rows if r["engine"] == "dense" and
                     r["model"] == "adversarial")
    for r in rows:
        r["speedup_vs_dense"] = dense_sec / r["seconds"] if r["model"] == "adversarial" else np.nan
    table = md_table(["model", "engine", "train s", "speed-up vs dense", "last / min L (train)",
                      "clean train acc.", "clean test acc.", "fired / input"],
                     [[r["model"], r["engine"], f"{r['seconds']:.2f}",
                       "" if np.isnan(r["speedup_vs_dense"]) else f"{r['speedup_vs_dense']:.2f}",
                       f"{r['last_train_loss']:.4f} / {r['min_train_loss']:.4f}",
                       f"{r['clean_train_acc']:.3f}", f"{r['clean_test_acc']:.3f}",
                       f"{r['fired_mean']:.1f}"] for r in rows])
    nets = {k: nets[k] for k in robust_eval.MODELS}
    grid = eps_grid(X, y, cfg.eps)
    md_rob, files, gains, _ = robust_eval.section(
        out, f"e5_{key}", f"E5 {key}", nets, {"training points": (X, y),
                                             "held-out points": (Xt, yt)},
        grid, cfg.eps, cfg.eval, cfg.seed + 2)
    gains_seeds = [gains.get("held-out points")] + _seed_gains(cfg, key)
    md_rob += robust_eval.seeds_line("held-out points", gains_seeds)
    md = (f"#### {label}\n\n{X.shape[0]} training and {Xt.shape[0]} held-out points, d = {d}, "
          f"unit-norm rows; m = {cfg.m}, l2 PGD eps = {cfg.eps}, {cfg.steps} steps, "
          f"{cfg.iterations} iterations, lr = {lr:.4g} (auto, shared; 'standard' has no "
          f"adversary).\n\n{table}\n\n{md_rob}")
    return md, rows, files, gains, gains_seeds


def run(cfg, out, engines=("dense",), progress=True):
    t_start = time.perf_counter()
    try:
        parts = [_one(cfg, key, out, engines, progress) for key in cfg.data]
    except ImportError:
        return {"key": "e5", "title": TITLE, "status": "not available",
                "markdown": "Not available: the real data sets need scikit-learn. Install it "
                            "with `pip install 'sparseadv[digits]'` (or `pip install "
                            "scikit-learn`) and rerun.\n",
                "files": [], "seconds": time.perf_counter() - t_start, "metrics": None}
    rows = [r for p in parts for r in p[1]]
    csv_path = write_csv(out, "e5_real_data.csv", rows)
    metrics = {"data": list(cfg.data), "m": cfg.m, "eps": cfg.eps,
               "gains": {key: p[3] for key, p in zip(cfg.data, parts)},
               "gains_seeds": {key: {"held-out points": p[4]} for key, p in zip(cfg.data, parts)},
               "speedup": {key: {r["engine"]: r["speedup_vs_dense"] for r in p[1]
                                 if r["model"] == "adversarial"}
                           for key, p in zip(cfg.data, parts)}}
    return {"key": "e5", "title": TITLE, "status": "ok",
            "markdown": "\n\n".join(p[0] for p in parts),
            "files": [csv_path] + [f for p in parts for f in p[2]],
            "seconds": time.perf_counter() - t_start, "metrics": metrics}
