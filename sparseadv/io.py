"""Data files and training checkpoints for the command line.

Data files
----------
* ``.npz``: arrays ``X`` (n x d, real) and ``y`` (n,). Other arrays are ignored.
* ``.csv``: one example per row, the features first and the label in the **last** column;
  an optional header row (detected: the first row has a cell that is not a number). Separator
  ``,``; blank lines are skipped.

Labels are real numbers: +-1 for classification (accuracy is then ``sign(f) == y``), any real
value for regression. Rows are scaled to unit l2 norm by default, because the theory (and the
threshold ``b = sqrt(0.4 ln m)``) assumes unit-norm inputs; ``normalize=False`` keeps them.

Every problem with a file raises :class:`DataError` (a ``ValueError``) with a one-line message
naming the file and the problem.

Checkpoints
-----------
A checkpoint is one ``.npz`` file (no pickles) written atomically: the bytes go to a temporary
file in the same directory, are flushed and fsync'ed, and the temporary file is renamed over the
target with ``os.replace`` (atomic on POSIX and Windows), then the directory is fsync'ed. A crash
or an interruption during a save therefore leaves either the previous checkpoint or the new
one, never a truncated file.
"""
import csv
import json
import os
import tempfile

import numpy as np

__all__ = ["DataError", "load_data_file", "normalize_rows", "atomic_save_npz", "save_checkpoint",
           "load_checkpoint", "CHECKPOINT_NAME", "CHECKPOINT_VERSION"]

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 1


class DataError(ValueError):
    """A data or checkpoint file that cannot be used; the message is one line."""


# --------------------------------------------------------------------------- data files

def _finite_check(path, X, y):
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{path}: non-finite value ({X[i, j]}) in X at row {i + 1}, "
                        f"column {j + 1}")
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: non-finite label ({y[i]}) at row {i + 1}")


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path):
    try:
        with open(path, newline="") as fh:
            rows = [(k + 1, r) for k, r in enumerate(csv.reader(fh))]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (cannot decode it as text)") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    rows = [(line, [c.strip() for c in r]) for line, r in rows
            if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: empty file (no rows)")
    first_line, first = rows[0]
    if not all(_is_number(c) for c in first):
        rows = rows[1:]  # a header row
        if not rows:
            raise DataError(f"{path}: zero data rows (only a header)")
        ncol = len(first)
        header_line = first_line
    else:
        ncol = len(first)
        header_line = None
    if ncol < 2:
        raise DataError(f"{path}: needs at least 2 columns (features, then the label), "
                        f"got {ncol}")
    data = np.empty((len(rows), ncol))
    for k, (line, r) in enumerate(rows):
        if len(r) != ncol:
            ref = f"the header on line {header_line}" if header_line else f"line {first_line}"
            raise DataError(f"{path} line {line}: {len(r)} columns, expected {ncol} "
                            f"(as {ref})")
        for j, c in enumerate(r):
            try:
                data[k, j] = float(c)
            except ValueError:
                raise DataError(f"{path} line {line}, column {j + 1}: non-numeric cell "
                                f"{c[:40]!r}") from None
    return data[:, :-1], data[:, -1]


def _load_npz(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: a .npy array, not an .npz archive with arrays X and y")
    with archive:
        for key in ("X", "y"):
            if key not in archive.files:
                raise DataError(f"{path}: missing array {key!r} (found: "
                                f"{', '.join(archive.files) or 'none'})")
        try:
            X = archive["X"]
            y = archive["y"]
        except ValueError as exc:  # object arrays need pickles
            raise DataError(f"{path}: cannot read arrays without pickle ({exc})") from None
    if X.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise DataError(f"{path}: X and y must be real numbers, got dtypes {X.dtype} and {y.dtype}")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (n x d), got shape {X.shape}")
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D (n,), got shape {y.shape}")
    return X.astype(np.float64), y.astype(np.float64)


def normalize_rows(X, path="data"):
    """Rows scaled to unit l2 norm (a new array); a zero row is an error."""
    norms = np.linalg.norm(X, axis=1)
    zero = norms == 0
    if zero.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(zero)[0]) + 1} is all zeros and cannot "
                        f"be scaled to unit norm (drop it, or use --no-normalize)")
    return np.ascontiguousarray(X / norms[:, None])


def load_data_file(path, normalize=True):
    """Read ``(X, y)`` from a ``.npz`` or ``.csv`` file (see the module docstring).

    Returns float64 C-contiguous ``X`` (n x d, unit-norm rows unless ``normalize=False``) and
    ``y`` (n,). Raises :class:`DataError` with a one-line message on any problem."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".csv"):
        raise DataError(f"{path}: unknown data file type {ext or '(no extension)'!r}; "
                        f"use .npz (arrays X, y) or .csv (label in the last column)")
    if not os.path.exists(path):
        raise DataError(f"{path}: data file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    X, y = _load_npz(path) if ext == ".npz" else _load_csv(path)
    if X.shape[0] == 0:
        raise DataError(f"{path}: zero rows")
    if X.shape[1] == 0:
        raise DataError(f"{path}: zero feature columns")
    if y.shape[0] != X.shape[0]:
        raise DataError(f"{path}: labels of wrong length: y has {y.shape[0]} entries, "
                        f"X has {X.shape[0]} rows")
    _finite_check(path, X, y)
    if normalize:
        X = normalize_rows(X, path)
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


# --------------------------------------------------------------------------- atomic writes

def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; os.replace is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save_npz(path, arrays):
    """Write ``arrays`` (a dict) to ``path`` as an uncompressed .npz, atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


# --------------------------------------------------------------------------- checkpoints

def _json_array(obj):
    return np.array(json.dumps(obj, sort_keys=True))


def save_checkpoint(directory, *, W, a, b, iteration, lr, attack, rng_state, data, config,
                    history):
    """Save a training state into ``directory/checkpoint.npz`` atomically.

    ``attack``, ``rng_state`` (or None), ``data`` and ``config`` are JSON-serialisable dicts;
    ``history`` is a dict of 1-D arrays (the trainer's record fields)."""
    arrays = {
        "version": np.array(CHECKPOINT_VERSION),
        "W": np.asarray(W, dtype=np.float64),
        "a": np.asarray(a, dtype=np.float64),
        "b": np.array(float(b)),
        "iteration": np.array(int(iteration), dtype=np.int64),
        "lr": np.array(np.nan if lr is None else float(lr)),
        "attack": _json_array(attack),
        "rng_state": _json_array(rng_state),
        "data": _json_array(data),
        "config": _json_array(config),
    }
    for key, value in history.items():
        arrays["history_" + key] = np.asarray(value)
    return atomic_save_npz(os.path.join(directory, CHECKPOINT_NAME), arrays)


def load_checkpoint(directory):
    """Read a checkpoint written by :func:`save_checkpoint`; returns a dict."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CHECKPOINT_NAME) if os.path.isdir(directory) else directory
    if not os.path.exists(path):
        raise DataError(f"{directory}: no checkpoint to resume from ({CHECKPOINT_NAME} not found)")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise DataError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in ("version", "W", "a", "b", "iteration", "lr", "attack", "rng_state",
                           "data", "config") if k not in raw]
    if missing:
        raise DataError(f"{path}: not a sparseadv checkpoint (missing {', '.join(missing)})")
    if int(raw["version"]) != CHECKPOINT_VERSION:
        raise DataError(f"{path}: checkpoint version {int(raw['version'])}, this sparseadv "
                        f"reads version {CHECKPOINT_VERSION}")
    lr = float(raw["lr"])
    return {
        "path": path,
        "W": np.ascontiguousarray(raw["W"]),
        "a": raw["a"],
        "b": float(raw["b"]),
        "iteration": int(raw["iteration"]),
        "lr": None if np.isnan(lr) else lr,
        "attack": json.loads(str(raw["attack"])),
        "rng_state": json.loads(str(raw["rng_state"])),
        "data": json.loads(str(raw["data"])),
        "config": json.loads(str(raw["config"])),
        "history": {k[len("history_"):]: raw[k] for k in raw if k.startswith("history_")},
    }
