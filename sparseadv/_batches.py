"""The batch order of mini-batch training: a seeded permutation per epoch, sliced into batches.

Epoch e draws a permutation of 0 .. n - 1 from one generator (seeded once; ``shuffle=False``:
0 .. n - 1 in order); its consecutive slices of ``batch_size`` rows are the batches (the last
one may be shorter), each handed out as sorted row ids (the set is what defines the iteration;
sorted ids keep every engine's lists ordered). ``state()`` is JSON: the generator's state at
the start of the current epoch and the position in it, from which ``set_state`` redraws the
same permutation, so a resumed run sees the same batches as an uninterrupted one.
"""
import numpy as np

from .errors import CheckpointError, InputError


class BatchOrder:
    def __init__(self, batch_size, shuffle, seed):
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._perm = None           # the current epoch's permutation
        self._epoch_state = None    # the generator's state before it was drawn
        self.position = 0           # rows of the permutation already handed out
        self.epoch = -1             # the current epoch (0-based); -1 before the first batch

    def _new_epoch(self, n):
        self._epoch_state = self._rng.bit_generator.state
        self._perm = self._rng.permutation(n) if self.shuffle else np.arange(n, dtype=np.int64)
        self.position = 0
        self.epoch += 1

    def next(self, n):
        """The sorted row ids of the next batch of a training set of n points."""
        if self._perm is not None and len(self._perm) != n:
            raise InputError(f"X has {n} rows, but this trainer's batch order was drawn for "
                             f"{len(self._perm)} points: train on the same data, or make a "
                             f"new trainer")
        if self._perm is None or self.position >= n:
            self._new_epoch(n)
        stop = min(self.position + self.batch_size, n)
        index = np.sort(self._perm[self.position:stop])
        self.position = stop
        return index

    def snapshot(self):
        return (self._perm, self._epoch_state, self.position, self.epoch,
                self._rng.bit_generator.state)

    def restore(self, snap):
        self._perm, self._epoch_state, self.position, self.epoch, state = snap
        self._rng.bit_generator.state = state

    def state(self):
        """JSON-serialisable state (None fields before the first batch)."""
        return {"epoch": self.epoch, "position": self.position,
                "n": None if self._perm is None else len(self._perm),
                "epoch_rng_state": self._epoch_state,
                "rng_state": self._rng.bit_generator.state}

    def set_state(self, state, source="batch state"):
        """Continue from ``state()``; CheckpointError naming ``source`` when it is unusable."""
        try:
            epoch, position, n = int(state["epoch"]), int(state["position"]), state["n"]
            if n is None:
                self._rng.bit_generator.state = state["rng_state"]
                self._perm, self.position, self.epoch = None, 0, -1
                return
            n = int(n)
            if not (epoch >= 0 and 0 <= position <= n):
                raise ValueError(f"epoch {epoch}, position {position} of {n}")
            self._rng.bit_generator.state = state["epoch_rng_state"]
            self.epoch = epoch - 1
            self._new_epoch(n)
            self.position = position
            if self._rng.bit_generator.state != state["rng_state"]:
                raise ValueError("the generator state does not follow the epoch's start")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{source}: unusable batch order "
                                  f"({type(exc).__name__}: {exc})") from None
