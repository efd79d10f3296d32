"""``fit`` with checkpoints, and resuming a sharded run (``ShardedTrainer`` methods).

A checkpoint is the command line's format, written by the same writer
(``sparseadv.io.save_checkpoint``: one .npz, atomic): the gathered W, a, b, the iteration, lr,
the attack's parameters and random state, the data's size and a SHA-256 of X and y, a config
and the history of the record fields every trainer has (``trainer.RECORD_FIELDS``). A run
resumes from it on a fresh cluster, with any number of shards, or in a single process, and
``sparseadv train --resume`` reads the command line's own checkpoints the same way.
"""
import hashlib
import os

import numpy as np

from .. import io
from .._validation import check_positive_int, check_Xy
from ..errors import CheckpointError, InputTypeError
from ..network import ShiftedReLUNet
from ..trainer import RECORD_FIELDS

__all__ = ["CheckpointMixin", "attack_spec", "data_digest"]


def attack_spec(attack):
    """The attack's parameters as the command line records them."""
    norm = "inf" if attack.norm == np.inf else "2"
    return dict(eps=attack.eps, steps=attack.steps, step_size=attack.step_size, norm=norm,
                random_start=attack.random_start, seed=attack.seed, kind=type(attack).__name__)


def data_digest(X, y):
    h = hashlib.sha256()
    for arr in (X, y):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


class CheckpointMixin:
    """``fit``, ``save_checkpoint`` and ``from_checkpoint`` of ``ShardedTrainer``."""

    def fit(self, X, y, iterations, progress=True, callback=None, checkpoint=None,
            checkpoint_every=10):
        """Run ``iterations`` steps; returns a history: a dict of arrays, one per record field.

        ``progress`` shows a tqdm bar; ``callback(record)`` is called after every step (return
        True to stop early). With ``checkpoint`` (a directory), the gathered weights are saved
        there every ``checkpoint_every`` iterations and at the end (atomic; see the module
        docstring)."""
        from .trainer import SHARDED_RECORD_FIELDS
        X, y = check_Xy(X, y, self.d)
        iterations = check_positive_int("iterations", iterations)
        every = check_positive_int("checkpoint_every", checkpoint_every)
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise InputTypeError(f"checkpoint must be a directory path, got {checkpoint!r}")
        records = []
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=iterations, unit="it", leave=True,
                       desc=f"adversarial training ({self.engine_name}, "
                            f"{len(self.bounds)} shards)")
        try:
            for it in range(iterations):
                rec = self._step(X, y)
                records.append(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", fired=f"{rec['fired_mean']:.1f}")
                    bar.update(1)
                stop = callback is not None and callback(rec)
                if checkpoint is not None and (stop or it + 1 == iterations
                                               or self.iterations_ % every == 0):
                    self.save_checkpoint(checkpoint, X, y)
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        return {key: np.array([r[key] for r in records]) for key in SHARDED_RECORD_FIELDS}

    def save_checkpoint(self, directory, X, y):
        """Write ``directory/checkpoint.npz`` (gathers W); returns its path."""
        net = self.gather()
        attack = self.attack
        history = {k: np.array([r[k] for r in self._records]) for k in RECORD_FIELDS}
        return io.save_checkpoint(
            directory, W=net.W, a=net.a, b=net.b, iteration=self.iterations_, lr=self.lr_,
            attack=attack_spec(attack),
            rng_state=attack._rng.bit_generator.state if attack.random_start else None,
            data=dict(n=int(X.shape[0]), d=int(X.shape[1]), sha256=data_digest(X, y)),
            config=dict(m=self.m, d=self.d, engine=self.engine_name,
                        shards=[hi - lo for lo, hi in self.bounds],
                        lr="auto" if self.lr == "auto" else self.lr),
            history=history)

    def _check_data(self, X, y):
        if self._expect_data is not None and data_digest(X, y) != self._expect_data:
            raise CheckpointError("X, y differ from the training points the checkpoint was "
                                  "written with (SHA-256 of X and y)")

    @classmethod
    def from_checkpoint(cls, path, attack, engine="dense", shards=2, client=None, **options):
        """A trainer that continues the run saved in ``path`` (a directory or .npz file,
        written by ``fit(checkpoint=...)`` or ``sparseadv train``): its weights, iteration,
        lr and history, and the attack's random state. ``attack`` must have the checkpoint's
        parameters (CheckpointError otherwise); any ``shards`` and ``engine`` may be used."""
        try:
            ckpt = io.load_checkpoint(path)
        except io.DataError as exc:
            raise CheckpointError(str(exc)) from None
        saved, given = ckpt["attack"], attack_spec(attack)
        for key in ("eps", "steps", "step_size", "norm", "random_start"):
            if saved.get(key) != given[key]:
                raise CheckpointError(f"attack: {key}={given[key]!r} but the checkpoint "
                                      f"{ckpt['path']} was written with {saved.get(key)!r}")
        if ckpt["rng_state"] is not None:
            attack._rng.bit_generator.state = ckpt["rng_state"]
        net = ShiftedReLUNet.from_arrays(ckpt["W"], ckpt["a"], ckpt["b"])
        lr = ckpt["lr"] if ckpt["lr"] is not None else "auto"
        trainer = cls(net, attack, lr, engine=engine, shards=shards, client=client, **options)
        trainer.iterations_ = ckpt["iteration"]
        trainer._expect_data = ckpt["data"].get("sha256")
        history = ckpt["history"]
        if all(k in history for k in RECORD_FIELDS):
            trainer._records = [{k: history[k][i].item() for k in RECORD_FIELDS}
                                for i in range(len(history["loss"]))]
        return trainer
