"""PNG plots of the experiments (matplotlib, Agg backend, imported lazily).

Every function returns the list of files written, empty when matplotlib is not installed (the
report then says so). Axes are labelled with units, sizes that double are on log2 axes, and
reference slopes are drawn as dashed grey lines.
"""
import os

import numpy as np

MISSING_NOTE = "matplotlib is not installed (pip install 'sparseadv[plot]'): no plots"


def _plt():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save(fig, out, name):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def _ref_slope(ax, x, y0, slope, label):
    x = np.asarray(x, dtype=float)
    ax.plot(x, y0 * (x / x[0]) ** slope, ls="--", color="0.6", lw=1, label=label)


def plot_e1(out, rows, series, labels):
    plt = _plt()
    if plt is None or not rows:
        return []
    m = np.array([r["m"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for s, mk in zip(series, "osD^"):
        ax.plot(m, [r[s] for r in rows], marker=mk, label=labels[s])
    _fired_against_theory(ax, m, [r["expected_mQb"] for r in rows],
                          [r["bound_m45"] for r in rows], rows[0]["clean_init"],
                          "E1: neurons fired per input vs width", 8)
    return [_save(fig, out, "e1_sparsity.png")]


def _fired_against_theory(ax, m, mqb, m45, first, title, fontsize):
    """The theory curves m·Q(b) and m^{4/5}, a slope-1 reference from ``first``, log axes."""
    ax.plot(m, mqb, color="k", lw=1.5, label="m·Q(b) (theory)")
    ax.plot(m, m45, color="k", ls=":", label="m^{4/5} (bound)")
    _ref_slope(ax, m, first, 1.0, "slope 1 (∝ m) reference")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width m (neurons)")
    ax.set_ylabel("fired neurons per input (count)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=fontsize)


def plot_e2(out, curves, ms, diag, fired):
    """Robust training loss L_A(W_t) against t (adversarial and standard training, each m);
    lazy-regime diagnostics against m; fired neurons per input over training."""
    plt = _plt()
    if plt is None or not curves:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for m, col in zip(ms, plt.cm.viridis(np.linspace(0, 0.9, len(ms)))):
        for model, ls in (("adversarial", "-"), ("standard", "--")):
            pts = [c for c in curves if c["m"] == m and c["model"] == model]
            ax.plot([c["iteration"] for c in pts], [c["robust_loss"] for c in pts], ls=ls,
                    color=col, label=f"m={m} {model}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("robust training loss L_A(W_t)")
    ax.set_title("E2: L_A(W_t) (solid adversarial, dashed standard)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    mm = np.array([r["m"] for r in diag], float)
    for key, label in (("rel_dW", "‖W_t − W_0‖_F / ‖W_0‖_F"),
                       ("K", "√m · max_r ‖w_r(t) − w_r(0)‖"),
                       ("flip_frac", "fraction of activation patterns flipped")):
        ax.plot(mm, [r[key] for r in diag], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width m (neurons)")
    ax.set_ylabel("at the last iterate (dimensionless)")
    ax.set_title("E2: distance from initialisation (adversarial)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[2]
    for kind, mk in (("attacked", "o"), ("clean", "s")):
        ax.plot(mm, [f[f"max_{kind}"] for f in fired], marker=mk,
                label=f"{kind} points: max over iterations")
    _fired_against_theory(ax, mm, [f["mQb"] for f in fired], [f["m45"] for f in fired],
                          fired[0]["max_attacked"], "E2: fired per input over training", 7)
    return [_save(fig, out, "e2_training.png")]


def plot_robustness(out, name, title, rows, splits):
    """Robust accuracy (ensemble solid, squared-loss PGD dashed) and L_A against eps, per split,
    with the ceiling."""
    plt = _plt()
    if plt is None or not rows:
        return []
    fig, axes = plt.subplots(2, len(splits), figsize=(5.5 * len(splits), 8), squeeze=False)
    colors = {"initial": "0.5", "standard": "tab:blue", "adversarial": "tab:red"}
    for j, split in enumerate(splits):
        rs = [r for r in rows if r["split"] == split]
        models = list(dict.fromkeys(r["model"] for r in rs))
        eps = sorted({r["eps"] for r in rs})
        ax, ax2 = axes[0][j], axes[1][j]
        first = [next(r for r in rs if r["eps"] == e) for e in eps]
        ax.plot(eps, [r["ceiling"] for r in first], color="k", lw=2,
                label="ceiling (any classifier)")
        for mdl in models:
            pts = [r for r in rs if r["model"] == mdl]
            c = colors.get(mdl)
            ax.plot(eps, [r["robust_acc"] for r in pts], marker="o", color=c,
                    label=f"{mdl}: margin ensemble")
            ax.plot(eps, [r["robust_acc_squared_loss_pgd"] for r in pts], ls="--", color=c,
                    label=f"{mdl}: squared-loss PGD only")
            ax2.plot(eps, [r["robust_loss"] for r in pts], marker="o", color=c, label=mdl)
        ax.set_xlabel("l2 radius eps")
        ax.set_ylabel("robust accuracy (fraction)")
        ax.set_title(f"{title}: {split}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax2.set_yscale("log")
        ax2.set_xlabel("l2 radius eps")
        ax2.set_ylabel("robust loss L_A (½ MSE at attacked points)")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=7)
    return [_save(fig, out, name)]


def plot_e3(out, rows, engines):
    plt = _plt()
    if plt is None or not rows:
        return []
    paths = []
    for q, ylabel, name in (("seconds_median", "median time per iteration (s)", "e3_time.png"),
                            ("inner_products", "inner products per iteration (count)",
                             "e3_inner_products.png")):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, axis in zip(axes, ("m", "n", "d")):
            for e in engines:
                sel = [r for r in rows if r["engine"] == e and r["axis"] == axis]
                if sel:
                    ax.plot([r[axis] for r in sel], [r[q] for r in sel], marker="o", label=e)
            sel = [r for r in rows if r["axis"] == axis and r["engine"] == engines[0]]
            if sel:
                _ref_slope(ax, [r[axis] for r in sel], sel[0][q], 1.0, "slope 1 reference")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            unit = {"m": "width m (neurons)", "n": "points n", "d": "dimension d"}[axis]
            ax.set_xlabel(unit)
            ax.set_ylabel(ylabel)
            ax.set_title(f"E3: cost vs {axis}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        paths.append(_save(fig, out, name))
    return paths


def plot_e4(out, gauss, sub, sweep, fit_m):
    plt = _plt()
    if plt is None or not gauss:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot([r["d"] for r in gauss], [r["fraction_evaluated"] for r in gauss], marker="o",
            label="Gaussian weights")
    for r in sub:
        ax.scatter([r["d"]], [r["fraction_evaluated"]], marker="*", s=120, color="C3",
                   label="near a low-dim subspace", zorder=3)
    ax.axhline(1.0, ls="--", color="0.6", lw=1, label="brute force (all m)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dimension d")
    ax.set_ylabel("fraction of the m inner products evaluated")
    ax.set_title(f"E4: tree work vs d (m = {gauss[0]['m']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot([r["d"] for r in gauss], [r["tree_seconds"] * 1e3 for r in gauss], marker="o",
            label="tree query_batch")
    ax.plot([r["d"] for r in gauss], [r["brute_seconds"] * 1e3 for r in gauss], marker="s",
            label="brute force query_batch")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("time per query batch (ms)")
    ax.set_title("E4: query time vs d")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[2]
    if sweep:
        m = np.array([r["m"] for r in sweep], dtype=float)
        ip = np.array([r["tree_inner_products"] / r["queries"] for r in sweep])
        ax.plot(m, ip, marker="o", label=f"tree (d = {sweep[0]['d']})")
        ax.plot(m, m, color="k", ls=":", label="brute force (m per query)")
        if fit_m:
            ax.plot(m, np.exp(fit_m["intercept"]) * m ** fit_m["exponent"], ls="--",
                    color="C1", label=f"fit: m^{fit_m['exponent']:.2f}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set_xlabel("number of weight vectors m")
    ax.set_ylabel("inner products per query (count)")
    ax.set_title("E4: tree work vs m at low d")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out, "e4_hsr.png")]
