"""The adversarial trainer: attack with the current weights, then one gradient step.

One iteration (docs/design.md §2): X~ = attack(W, X, y); W <- W - lr grad_W L(W; X~, y), on
the whole training set (``batch_size=None``, the paper's iteration) or on one mini-batch drawn
from a seeded per-epoch permutation (docs/design.md §2, "Mini-batches"), for the squared or
the logistic loss (``sparseadv.losses``). The
trainer is engine-agnostic: the engine (dense, tree or certified, see ``sparseadv.engines``)
supplies the gradients, and every engine yields the same weights to round-off. ``step`` follows
the engine protocol of docs/design.md §6 (``sparseadv.engines.base``) call for call. Each iteration returns a
record with the robust loss before the step, the fired neurons per input, the engine's work
counters and the seconds spent per phase; ``fit`` stacks the records into a history.
"""
import time

import numpy as np

from ._batches import BatchOrder
from ._validation import check_bool, check_positive_int, check_real, check_seed, check_Xy
from .attacks import PGD
from .engines import make_engine
from .engines.base import COUNTER_NAMES, Batch
from .errors import DivergenceError, InputError, InputTypeError
from .losses import get_loss
from .network import ShiftedReLUNet
from .stepsize import auto_lr

RECORD_FIELDS = ("loss", "fired_mean", "fired_max") + COUNTER_NAMES + (
    "lr", "batch_size", "epoch", "seconds_attack", "seconds_forward", "seconds_backward",
    "seconds")


class AdversarialTrainer:
    """Adversarial training of a ``ShiftedReLUNet``, full batch or in mini-batches.

    Parameters
    ----------
    net : ShiftedReLUNet
        Trained in place (``net.W`` is updated by every step).
    attack : PGD or FGSM
        Its steps ascend the trainer's ``loss``.
    lr : float > 0 or "auto"
        Learning rate. ``"auto"`` sets it once, at the first step, to ``stepsize.auto_lr``:
        ``SAFETY`` (1/64) x n / lambda_max of the NTK Gram matrix at the current weights and all
        the clean training points (the rule and why: ``sparseadv.stepsize``; the squared loss's
        rule, conservative for the logistic loss, whose second derivative in f is at most 1/4).
        The chosen value is stored in ``self.lr_`` and in every record.
    engine : {"dense", "tree", "certified"} or an Engine instance
    loss : "squared" (the paper's, default) or "logistic" (labels must be -1 and +1)
    batch_size : None or int >= 1
        None: every iteration attacks and updates on all n points (the paper's iteration, bit
        for bit). An integer (at most n): one iteration attacks and updates on one batch; the
        batches of an epoch are consecutive slices of a permutation of 0 .. n - 1 drawn per
        epoch (the last one may be shorter), each used as its sorted row ids.
    shuffle : bool
        Draw the permutation from a generator seeded with ``seed`` (True) or take 0 .. n - 1
        in order (False).
    seed : None, int or numpy Generator
        Seed of the batch order; the same seed gives the same batches.
    **engine_options
        Passed to the engine (for example ``leaf_size`` for "tree", ``verify`` for "certified").
    """

    def __init__(self, net, attack, lr, engine="dense", loss="squared", batch_size=None,
                 shuffle=True, seed=None, **engine_options):
        if not isinstance(net, ShiftedReLUNet):
            raise InputTypeError(f"net must be a ShiftedReLUNet, got {type(net).__name__}")
        if not isinstance(attack, PGD):
            raise InputTypeError(f"attack must be a sparseadv PGD or FGSM attack, got "
                                 f"{type(attack).__name__}")
        if isinstance(lr, str):
            if lr != "auto":
                raise InputError(f"lr must be a positive float or 'auto', got {lr!r}")
            self.lr = "auto"
            self.lr_ = None
        else:
            self.lr = self.lr_ = check_real("lr", lr, low=0.0, low_inclusive=False)
        self.loss = get_loss(loss)
        self.batch_size = None if batch_size is None else check_positive_int("batch_size",
                                                                              batch_size)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_seed(seed)
        self.order = None if self.batch_size is None else BatchOrder(self.batch_size,
                                                                     self.shuffle, self.seed)
        self.net = net
        self.attack = attack
        self.engine = make_engine(engine, net, **engine_options)
        self.iterations_ = 0

    @property
    def epoch_(self):
        """The epoch (0-based) of the last iteration's batch: the iteration count in full
        batch."""
        return self.iterations_ - 1 if self.order is None else self.order.epoch

    def _check(self, X, y):
        X, y = check_Xy(X, y, self.net.d)
        self.loss.check_labels(y)
        if self.batch_size is not None and self.batch_size > X.shape[0]:
            raise InputError(f"batch_size must be at most the number of points n = "
                             f"{X.shape[0]}, got {self.batch_size}")
        return X, y

    def batches_per_epoch(self, n):
        """Iterations in one pass over n points."""
        return 1 if self.batch_size is None else -(-n // self.batch_size)

    def step(self, X, y):
        """One adversarial iteration on (X, y) (the next batch of it with ``batch_size``);
        returns its record (a dict)."""
        X, y = self._check(X, y)
        return self._step(X, y)

    # overflow is reported once, as a DivergenceError, not as numpy warnings on the way
    @np.errstate(over="ignore", invalid="ignore")
    def _step(self, X, y):
        """One iteration, all or nothing: until ``net.apply_step`` commits it, nothing but
        per-iteration engine state has changed, and an exception of any kind (KeyboardInterrupt
        included) leaves W, the engine, the attack's random stream, the batch order and
        ``iterations_`` as they were (``apply_step`` rolls itself back; docs/design.md §6)."""
        net, engine, attack, loss = self.net, self.engine, self.attack, self.loss
        t0 = time.perf_counter()
        if self.lr_ is None:
            self.lr_ = auto_lr(net, X)
        random_state = attack._random_state()
        order_state = None if self.order is None else self.order.snapshot()
        done, applied = self.iterations_, net.steps_applied_
        try:
            batch = None
            if self.order is not None:
                index = self.order.next(X.shape[0])
                batch = Batch(X, index)
                X, y = X[index], y[index]
            n = X.shape[0]
            threat = attack.threat_model
            final = threat.steps                # the pass index of the final points
            if batch is None:
                engine.begin_iteration(X, y, threat)
            else:
                engine.begin_iteration(X, y, threat, batch=batch)
            t1 = time.perf_counter()
            Xt = attack.run(X, y, engine, loss)
            t2 = time.perf_counter()
            f, fired = engine.forward(Xt, pass_index=final)
            value = loss.mean(f, y)
            if not np.isfinite(value):
                raise DivergenceError(
                    f"the robust loss is not finite: the weights have diverged (the learning "
                    f"rate lr={self.lr_:g} is likely too large) or b or the data are out of "
                    f"range; the last finite weights are kept")
            t3 = time.perf_counter()
            coef = loss.derivative(f, y) * (net.scale / n)
            rows, G = engine.weight_gradient(Xt, coef, pass_index=final)
            # the commit: W and every engine bound to net move together, or neither does
            # G is the engine's work buffer: it may hold the previous rows afterwards
            net.apply_step(rows, G, self.lr_, consume=True)
            self.iterations_ = done + 1
        except BaseException:
            if net.steps_applied_ != applied:
                # interrupted after the commit, before its bookkeeping: the step stands
                self.iterations_ = done + 1
            else:
                attack._set_random_state(random_state)
                if order_state is not None:
                    self.order.restore(order_state)
            raise
        t4 = time.perf_counter()
        record = {"loss": value, "fired_mean": float(fired.mean()),
                  "fired_max": int(fired.max())}
        record.update(engine.counters)
        record.update(lr=self.lr_, batch_size=n, epoch=self.epoch_, seconds_attack=t2 - t1,
                      seconds_forward=t3 - t2, seconds_backward=t4 - t3, seconds=t4 - t0)
        return record

    def fit(self, X, y, iterations=None, epochs=None, progress=True, callback=None,
            keep_best=False):
        """Run ``iterations`` steps, or ``epochs`` passes over the data (epochs times
        ``batches_per_epoch(n)`` steps); returns a history: a dict of arrays, one per record
        field.

        The best iterate of this call is stored in ``self.best_loss_`` and
        ``self.best_iteration_``: the minimum over t of the robust training loss L_A(W_t) (the
        quantity the convergence theorem bounds; with mini-batches, of the batch's robust loss,
        a noisy estimate of it) and its 0-based iteration. ``keep_best=True`` also stores its
        weights in ``self.best_W_`` (a copy of W per iteration). ``progress`` shows a tqdm bar
        with the robust loss; ``callback(record)`` is called after every step (return True to
        stop)."""
        X, y = self._check(X, y)
        if (iterations is None) == (epochs is None):
            raise InputError(f"give exactly one of iterations and epochs, got "
                             f"iterations={iterations!r}, epochs={epochs!r}")
        if iterations is None:
            iterations = check_positive_int("epochs", epochs) * self.batches_per_epoch(
                X.shape[0])
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
