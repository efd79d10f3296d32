"""The adversarial trainer: attack with the current weights, then one full-batch gradient step.

One iteration (docs/design.md §2): X~ = attack(W, X, y); W <- W - lr grad_W L(W; X~, y). The
trainer is engine-agnostic: the engine (dense, tree or certified, see ``sparseadv.engines``)
supplies the gradients, and every engine yields the same weights to round-off. ``step`` follows
the engine protocol of docs/design.md §6 (``sparseadv.engines.base``) call for call. Each iteration returns a
record with the robust loss before the step, the fired neurons per input, the engine's work
counters and the seconds spent per phase; ``fit`` stacks the records into a history.
"""
import time

import numpy as np

from ._validation import check_bool, check_positive_int, check_real, check_Xy
from .attacks import PGD
from .engines import make_engine
from .engines.base import COUNTER_NAMES
from .errors import DivergenceError
from .network import ShiftedReLUNet
from .stepsize import auto_lr

RECORD_FIELDS = ("loss", "fired_mean", "fired_max") + COUNTER_NAMES + (
    "lr", "seconds_attack", "seconds_forward", "seconds_backward", "seconds")


class AdversarialTrainer:
    """Full-batch adversarial training of a ``ShiftedReLUNet``.

    Parameters
    ----------
    net : ShiftedReLUNet
        Trained in place (``net.W`` is updated by every step).
    attack : PGD or FGSM
    lr : float > 0 or "auto"
        Learning rate. ``"auto"`` sets it once, at the first step, to ``stepsize.auto_lr``:
        ``SAFETY`` (1/64) x n / lambda_max of the NTK Gram matrix at the current weights and the
        clean training points (the rule and why: ``sparseadv.stepsize``).
        The chosen value is stored in ``self.lr_`` and in every record.
    engine : {"dense", "tree", "certified"} or an Engine instance
    **engine_options
        Passed to the engine (for example ``leaf_size`` for "tree", ``verify`` for "certified").
    """

    def __init__(self, net, attack, lr, engine="dense", **engine_options):
        if not isinstance(net, ShiftedReLUNet):
            raise TypeError(f"net must be a ShiftedReLUNet, got {type(net).__name__}")
        if not isinstance(attack, PGD):
            raise TypeError(f"attack must be a sparseadv PGD or FGSM attack, got {type(attack).__name__}")
        if isinstance(lr, str):
            if lr != "auto":
                raise ValueError(f"lr must be a positive float or 'auto', got {lr!r}")
            self.lr = "auto"
            self.lr_ = None
        else:
            self.lr = self.lr_ = check_real("lr", lr, low=0.0, low_inclusive=False)
        self.net = net
        self.attack = attack
        self.engine = make_engine(engine, net, **engine_options)
        self.iterations_ = 0

    def step(self, X, y):
        """One adversarial iteration on (X, y); returns its record (a dict)."""
        X, y = check_Xy(X, y, self.net.d)
        return self._step(X, y)

    # overflow is reported once, as a DivergenceError, not as numpy warnings on the way
    @np.errstate(over="ignore", invalid="ignore")
    def _step(self, X, y):
        """One iteration, all or nothing: until ``net.apply_step`` commits it, nothing but
        per-iteration engine state has changed, and an exception of any kind (KeyboardInterrupt
        included) leaves W, the engine, the attack's random stream and ``iterations_`` as they
        were (``apply_step`` rolls itself back; docs/design.md §6)."""
        net, engine, attack = self.net, self.engine, self.attack
        n = X.shape[0]
        t0 = time.perf_counter()
        if self.lr_ is None:
            self.lr_ = auto_lr(net, X)
        random_state = attack._random_state()
        try:
            threat = attack.threat_model
            final = threat.steps                # the pass index of the final points
            engine.begin_iteration(X, y, threat)
            t1 = time.perf_counter()
            Xt = attack.run(X, y, engine)
            t2 = time.perf_counter()
            f, fired = engine.forward(Xt, pass_index=final)
            resid = f - y
            loss = 0.5 * float(np.dot(resid, resid)) / n
            if not np.isfinite(loss):
                raise DivergenceError(
                    f"the robust loss is not finite: the weights have diverged (the learning "
                    f"rate lr={self.lr_:g} is likely too large) or b or the data are out of "
                    f"range; the last finite weights are kept")
            t3 = time.perf_counter()
            rows, G = engine.weight_gradient(Xt, resid * (net.scale / n), pass_index=final)
            # the commit: W and every engine bound to net move together, or neither does
            net.apply_step(rows, G, self.lr_)
        except BaseException:
            attack._set_random_state(random_state)
            raise
        self.iterations_ += 1
        t4 = time.perf_counter()
        record = {"loss": loss, "fired_mean": float(fired.mean()), "fired_max": int(fired.max())}
        record.update(engine.counters)
        record.update(lr=self.lr_, seconds_attack=t2 - t1, seconds_forward=t3 - t2,
                      seconds_backward=t4 - t3, seconds=t4 - t0)
        return record

    def fit(self, X, y, iterations, progress=True, callback=None, keep_best=False):
        """Run ``iterations`` steps; returns a history: a dict of arrays, one per record field.

        The best iterate of this call is stored in ``self.best_loss_`` and
        ``self.best_iteration_``: the minimum over t of the robust training loss L_A(W_t) (the
        quantity the convergence theorem bounds) and its 0-based iteration. ``keep_best=True``
        also stores its weights in ``self.best_W_`` (a copy of W per iteration). ``progress``
        shows a tqdm bar with the robust loss; ``callback(record)`` is called after every step
        (return True to stop)."""
        X, y = check_Xy(X, y, self.net.d)
        iterations = check_positive_int("iterations", iterations)
        keep_best = check_bool("keep_best", keep_best)
        records, best = [], (np.inf, -1)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=iterations, desc=f"adversarial training ({self.engine.name})",
                       unit="it", leave=True)
        try:
            for _ in range(iterations):
                W_t = self.net.W.copy() if keep_best else None
                rec = self._step(X, y)
                records.append(rec)
                if rec["loss"] < best[0]:
                    best = (rec["loss"], len(records) - 1)
                    if keep_best:
                        self.best_W_ = W_t
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", fired=f"{rec['fired_mean']:.1f}")
                    bar.update(1)
                if callback is not None and callback(rec):
                    break
        finally:
            if bar is not None:
                bar.close()
        self.best_loss_, self.best_iteration_ = float(best[0]), int(best[1])
        return {key: np.array([r[key] for r in records]) for key in RECORD_FIELDS}
