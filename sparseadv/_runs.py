"""Run directories of ``sparseadv train``: the exclusive lock on ``--out``, the checks of a
checkpoint's configuration before a resume trusts it, and the SIGINT/SIGTERM flag of the loop.

Two runs writing into one directory would interleave their files (one run's checkpoint with
the other's weights), so a run holds an exclusive, non-blocking ``flock`` on ``--out``'s lock
file from before it touches the directory until it exits; the operating system releases it
when the process ends, however it ends, so a lock is never left stale.
"""
import math
import numbers
import os
import signal

from .errors import CheckpointError, InputError

LOCK_NAME = ".sparseadv.lock"

# The largest attack radius (and PGD step) the command line accepts: the attacked points of
# unit-norm data then have norms below ~1e150, whose squares (inner products, losses) stay far
# from the float64 overflow at ~1.8e308. Larger radii overflow the PGD step (eps >= ~7e307
# makes it infinite) or the loss and cannot give a meaningful robust loss.
EPS_MAX = 1e150


class RunLock:
    """``with RunLock(directory):`` holds the directory's exclusive lock, or raises InputError
    at once (one line: which directory, and what to do) when another run holds it.

    Where ``fcntl`` does not exist (Windows) the run goes unlocked."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"{self.directory}: another sparseadv train is writing into this "
                             f"directory (it holds {self.path}); wait for it to finish or "
                             f"choose another --out") from None
        # The holder's pid, for a person looking at the file (the lock itself is the flock).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (deleting it would race)
            self._fd = None
        return False


def _int(low):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            return f"an integer >= {low}"
        return None
    return check


def _real(low, high, strict=False, none=False, auto=False):
    def check(value):
        if (none and value is None) or (auto and value == "auto"):
            return None
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and math.isfinite(value) and low <= value <= high and not (strict and value == low)
        return None if ok else f"a number in {'(' if strict else '['}{low}, {high:g}]" + \
            (" or null" if none else "") + (' or "auto"' if auto else "")
    return check


def _int_or_none(low):
    check = _int(low)
    return lambda value: None if value is None else (
        None if check(value) is None else f"{check(value)} or null")


def _choice(*allowed):
    return lambda value: None if value in allowed else f"one of {allowed}"


def _instance(kind, name):
    return lambda value: None if isinstance(value, kind) else name


CONFIG_CHECKS = {
    "data": _instance(str, "a string"), "n": _int(1), "d": _int(1), "m": _int(1),
    "eps": _real(0.0, EPS_MAX), "steps": _int(1),
    "step_size": _real(0.0, EPS_MAX, strict=True, none=True), "norm": _choice("2", "inf"),
    "engine": _instance(str, "a string"), "iterations": _int(1),
    "lr": _real(0.0, math.inf, strict=True, auto=True), "seed": _int(0),
    "random_start": _instance(bool, "true or false"),
    "normalize": _instance(bool, "true or false"), "checkpoint_every": _int(0),
    "out": _instance(str, "a string"),
    "loss": _choice("squared", "logistic"), "batch_size": _int_or_none(1),
    "epochs": _int_or_none(1),
}
# Keys added after the first checkpoints: absent means what those runs did.
OPTIONAL_DEFAULTS = {"loss": "squared", "batch_size": None, "epochs": None}


def check_config(path, config):
    """Refuse, with a CheckpointError naming ``path`` and the key, a checkpoint configuration
    that lacks a key of ``CONFIG_CHECKS`` or holds a value the command line would not accept."""
    config = dict(OPTIONAL_DEFAULTS, **config)
    missing = [key for key in CONFIG_CHECKS if key not in config]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint's config lacks {', '.join(missing)}; "
                              f"it was not written by sparseadv train, or was edited")
    for key, check in CONFIG_CHECKS.items():
        expected = check(config[key])
        if expected is not None:
            raise CheckpointError(f"{path}: the checkpoint's config has {key}="
                                  f"{config[key]!r}, expected {expected}")
    return config


class StopFlag:
    """SIGINT/SIGTERM: the first one asks the loop to stop after the current iteration; a
    second one interrupts at once (the last checkpoint on disk stays intact)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
