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

Every problem with a data file raises :class:`~sparseadv.errors.DataFileError` (an
``InputError``, so a ``ValueError``; ``io.DataError`` is its old name) with a one-line message
naming the file and the problem, before anything large is allocated: an ``.npz`` member whose
header declares more than the available memory is refused before it is read.

Checkpoints
-----------
A checkpoint is one ``.npz`` file (no pickles) written atomically: the bytes go to a temporary
file in the same directory, are flushed and fsync'ed, and the temporary file is renamed over the
target with ``os.replace`` (atomic on POSIX and Windows), then the directory is fsync'ed. A crash
or an interruption during a save therefore leaves either the previous checkpoint or the new
one, never a truncated file. A killed writer can leave its temporary file (``.NAME.<pid>.*.tmp``);
:func:`remove_stale_temporaries` deletes those. :func:`load_checkpoint` checks every field and
raises :class:`~sparseadv.errors.CheckpointError` naming the file for a damaged or tampered one.
"""
import csv
import hashlib
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ._validation import check_allocation
from .errors import CheckpointError, DataFileError, InputError, SparseAdvError

__all__ = ["DataError", "load_data_file", "normalize_rows", "atomic_save_npz", "save_checkpoint",
           "load_checkpoint", "data_fingerprint", "remove_stale_temporaries", "CHECKPOINT_NAME",
           "CHECKPOINT_VERSION"]

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 1

# The old name of DataFileError (a ValueError), kept for callers that catch io.DataError.
DataError = DataFileError

# Everything a damaged zip archive can raise while it is opened or a member is read.
_ZIP_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
               NotImplementedError, RuntimeError)


def _first_line(exc):
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- data files

def _finite_check(path, X, y):
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataFileError(f"{path}: non-finite value ({X[i, j]}) in X at row {i + 1}, "
                            f"column {j + 1}")
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFileError(f"{path}: non-finite label ({y[i]}) at row {i + 1}")


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path):
    # The rows are parsed into Python lists first: several times the file's size in memory.
    try:
        check_allocation("file", 8 * os.path.getsize(path))
    except InputError:
        raise DataFileError(f"{path}: a CSV file of {os.path.getsize(path):,} bytes is too large "
                            f"to parse in the memory available; convert it to .npz") from None
    # utf-8-sig: a byte-order mark (Excel writes one) would otherwise turn the first cell into
    # "\ufeff1.0", which is not a number, so the first data row would be taken for a header.
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(k + 1, r) for k, r in enumerate(csv.reader(fh))]
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not a UTF-8 text CSV file (cannot decode it as text)") \
            from None
    except csv.Error as exc:
        raise DataFileError(f"{path}: malformed CSV: {exc}") from None
    rows = [(line, [c.strip() for c in r]) for line, r in rows
            if r and any(c.strip() for c in r)]
    if not rows:
        raise DataFileError(f"{path}: empty file (no rows)")
    first_line, first = rows[0]
    if not all(_is_number(c) for c in first):
        rows = rows[1:]  # a header row
        if not rows:
            raise DataFileError(f"{path}: zero data rows (only a header)")
        ncol = len(first)
        header_line = first_line
    else:
        ncol = len(first)
        header_line = None
    if ncol < 2:
        raise DataFileError(f"{path}: needs at least 2 columns (features, then the label), "
                            f"got {ncol}")
    data = np.empty((len(rows), ncol))
    for k, (line, r) in enumerate(rows):
        if len(r) != ncol:
            ref = f"the header on line {header_line}" if header_line else f"line {first_line}"
            raise DataFileError(f"{path} line {line}: {len(r)} columns, expected {ncol} "
                                f"(as {ref})")
        for j, c in enumerate(r):
            try:
                data[k, j] = float(c)
            except ValueError:
                raise DataFileError(f"{path} line {line}, column {j + 1}: non-numeric cell "
                                    f"{c[:40]!r}") from None
    return data[:, :-1], data[:, -1]


def _member_header(path, archive, key, error):
    """(shape, dtype) of ``key`` read from its .npy header, without reading the data."""
    with archive.zip.open(key + ".npy") as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise error(f"{path}: array {key!r} has .npy format version {version}, "
                        f"expected 1.0 or 2.0")
    return shape, dtype


def _read_npz(path, keys=None, error=DataFileError, unreadable="not a readable .npz file"):
    """Read the arrays ``keys`` (None: all) of the .npz at ``path`` (those present), refusing
    with ``error`` a damaged archive, object arrays, and, before loading it, any array whose
    header asks for more memory than there is. Returns ``(dict key -> array, member names)``."""
    try:
        archive = np.load(path, allow_pickle=False)
    except _ZIP_ERRORS as exc:
        raise error(f"{path}: {unreadable} ({_first_line(exc)})") from None
    if not hasattr(archive, "files"):
        raise error(f"{path}: a .npy array, not an .npz archive")
    with archive:
        out = {}
        try:
            for key in archive.files if keys is None else keys:
                if key not in archive.files:
                    continue
                shape, dtype = _member_header(path, archive, key, error)
                if dtype.hasobject:
                    raise error(f"{path}: array {key!r} holds Python objects (pickles), "
                                f"which sparseadv does not load")
                count = int(np.prod(shape, dtype=object)) if shape else 1
                try:  # the array as stored, plus its float64 copy
                    check_allocation(f"array {key!r}", count * (dtype.itemsize + 8))
                except InputError:
                    raise error(f"{path}: array {key!r} declares shape {shape} of {dtype}, "
                                f"{count * dtype.itemsize:,} bytes: more than the memory "
                                f"available to load it") from None
                out[key] = archive[key]
        except _ZIP_ERRORS as exc:
            if isinstance(exc, SparseAdvError):
                raise
            raise error(f"{path}: {unreadable}: damaged, cannot read its arrays "
                        f"({_first_line(exc)})") from None
        return out, list(archive.files)


def _load_npz(path):
    arrays, files = _read_npz(path, ("X", "y"))
    for key in ("X", "y"):
        if key not in arrays:
            raise DataFileError(f"{path}: missing array {key!r} (found: "
                                f"{', '.join(files) or 'none'})")
    X, y = arrays["X"], arrays["y"]
    if X.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise DataFileError(f"{path}: X and y must be real numbers, got dtypes {X.dtype} and "
                            f"{y.dtype}")
    if X.ndim != 2:
        raise DataFileError(f"{path}: X must be 2-D (n x d), got shape {X.shape}")
    if y.ndim != 1:
        raise DataFileError(f"{path}: y must be 1-D (n,), got shape {y.shape}")
    return X.astype(np.float64), y.astype(np.float64)


# Plain row norms are exact to round-off for norms in this range (their squares neither
# overflow nor become subnormal); rows outside it are scaled by their largest entry first.
_SAFE_NORMS = (1e-150, 1e150)


def normalize_rows(X, path="data"):
    """Rows of ``X`` scaled to unit l2 norm (a new float64 C-contiguous array).

    Works for any finite row that is not all zeros, whatever its scale (``1e300`` or ``1e-300``
    entries included): such rows are divided by their largest absolute entry before the norm is
    taken, so the norm neither overflows nor underflows. A row that is all zeros, or holds NaN
    or inf, raises DataFileError naming ``path`` and the row."""
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise InputError(f"{path}: X must be a 2-D array of real numbers, got "
                         f"{'dtype ' + str(X.dtype) if X.ndim == 2 else 'shape ' + str(X.shape)}")
    X = np.asarray(X, dtype=np.float64)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        raise DataFileError(f"{path}: row {int(np.flatnonzero(~finite)[0]) + 1} holds NaN or "
                            f"inf and cannot be scaled to unit norm")
    scale = np.abs(X).max(axis=1) if X.shape[1] else np.zeros(X.shape[0])
    zero = scale == 0
    if zero.any():
        raise DataFileError(f"{path}: row {int(np.flatnonzero(zero)[0]) + 1} is all zeros and "
                            f"cannot be scaled to unit norm (drop it, or use --no-normalize)")
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        norms = np.linalg.norm(X, axis=1)
        out = X / norms[:, None]
    extreme = ~((norms >= _SAFE_NORMS[0]) & (norms <= _SAFE_NORMS[1]))
    if extreme.any():
        Z = X[extreme] / scale[extreme, None]
        out[extreme] = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    return np.ascontiguousarray(out)


def data_fingerprint(X, y):
    """A short content hash of a data set (shapes, dtypes and bytes of X and y), stored in a
    checkpoint so that resume can tell that the data changed."""
    h = hashlib.sha256()
    for arr in (X, y):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def load_data_file(path, normalize=True):
    """Read ``(X, y)`` from a ``.npz`` or ``.csv`` file (see the module docstring).

    Returns float64 C-contiguous ``X`` (n x d, unit-norm rows unless ``normalize=False``) and
    ``y`` (n,). Raises DataFileError with a one-line message on any problem."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".csv"):
        raise DataFileError(f"{path}: unknown data file type {ext or '(no extension)'!r}; "
                        f"use .npz (arrays X, y) or .csv (label in the last column)")
    if not os.path.exists(path):
        raise DataFileError(f"{path}: data file not found")
    if os.path.isdir(path):
        raise DataFileError(f"{path}: is a directory, not a data file")
    if os.path.getsize(path) == 0:
        raise DataFileError(f"{path}: empty file")
    X, y = _load_npz(path) if ext == ".npz" else _load_csv(path)
    if X.shape[0] == 0:
        raise DataFileError(f"{path}: zero rows")
    if X.shape[1] == 0:
        raise DataFileError(f"{path}: zero feature columns")
    if y.shape[0] != X.shape[0]:
        raise DataFileError(f"{path}: labels of wrong length: y has {y.shape[0]} entries, "
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


# Temporary files of atomic_save_npz: ".NAME.<pid>.<random>.tmp" next to NAME.
def _tmp_prefix(path):
    return "." + os.path.basename(path) + "."


def atomic_save_npz(path, arrays):
    """Write ``arrays`` (a dict) to ``path`` as an uncompressed .npz, atomically.

    The bytes go to a temporary file unique to this process and call (pid and a random part),
    which a kill during the write can leave behind; :func:`remove_stale_temporaries` removes
    those on the next start."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=".tmp",
                               dir=directory)
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


def remove_stale_temporaries(directory, names):
    """Delete the temporary files that :func:`atomic_save_npz` left in ``directory`` for the
    files ``names`` (a killed writer leaves one). Call it only while no other process writes
    there (the command line holds the directory's lock); returns the paths removed."""
    removed = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    prefixes = tuple(_tmp_prefix(name) for name in names)
    for entry in entries:
        if entry.startswith(prefixes) and entry.endswith(".tmp"):
            full = os.path.join(directory, entry)
            try:
                if os.path.isfile(full) and not os.path.islink(full):
                    os.unlink(full)
                    removed.append(full)
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------- checkpoints

def _json_array(obj):
    return np.array(json.dumps(obj, sort_keys=True))


def save_checkpoint(directory, *, W, a, b, iteration, lr, attack, rng_state, data, config,
                    history, batch_order=None):
    """Save a training state into ``directory/checkpoint.npz`` atomically.

    ``attack``, ``rng_state`` (or None), ``data``, ``config`` and ``batch_order`` (the
    trainer's ``order.state()``, None in full batch) are JSON-serialisable dicts;
    ``history`` is a dict of 1-D arrays (the trainer's record fields), each of length
    ``iteration``."""
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
        "batch_order": _json_array(batch_order),
    }
    for key, value in history.items():
        arrays["history_" + key] = np.asarray(value)
    return atomic_save_npz(os.path.join(directory, CHECKPOINT_NAME), arrays)


_CHECKPOINT_KEYS = ("version", "W", "a", "b", "iteration", "lr", "attack", "rng_state", "data",
                    "config")


def _scalar(path, raw, key, kinds):
    arr = raw[key]
    if arr.ndim != 0 or arr.dtype.kind not in kinds:
        raise CheckpointError(f"{path}: {key!r} must be a scalar of kind {kinds!r}, got "
                              f"shape {arr.shape} dtype {arr.dtype}")
    return arr[()]


def _json_field(path, raw, key, want=dict):
    text = _scalar(path, raw, key, "U")
    try:
        value = json.loads(str(text))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {key!r} is not valid JSON ({exc})") from None
    if want is not None and not isinstance(value, want):
        raise CheckpointError(f"{path}: {key!r} must be a JSON object, got "
                              f"{type(value).__name__}")
    return value


def _check_weights(path, raw):
    W, a = raw["W"], raw["a"]
    if W.ndim != 2 or W.dtype.kind != "f" or 0 in W.shape:
        raise CheckpointError(f"{path}: W must be a non-empty 2-D float array (m, d), got "
                              f"shape {W.shape} dtype {W.dtype}")
    if a.ndim != 1 or a.dtype.kind != "f" or a.shape[0] != W.shape[0]:
        raise CheckpointError(f"{path}: a must be a float vector of length m = {W.shape[0]}, "
                              f"got shape {a.shape} dtype {a.dtype}")
    b = float(_scalar(path, raw, "b", "f"))
    for key, arr in (("W", W), ("a", a), ("b", np.array(b))):
        if not np.isfinite(arr).all():
            raise CheckpointError(f"{path}: {key} holds NaN or inf")
    return b


def load_checkpoint(directory):
    """Read and check a checkpoint written by :func:`save_checkpoint`; returns a dict.

    Raises CheckpointError (an InputError) naming the file for a missing, damaged or
    tampered file: weights of the wrong shape or not finite, an iteration that is negative or
    does not match the history's length, fields that are not what save_checkpoint writes."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CHECKPOINT_NAME) if os.path.isdir(directory) else directory
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: no checkpoint to resume from "
                              f"({CHECKPOINT_NAME} not found)")
    raw, _ = _read_npz(path, error=CheckpointError, unreadable="unreadable checkpoint")
    missing = [k for k in _CHECKPOINT_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: not a sparseadv checkpoint (missing "
                              f"{', '.join(missing)})")
    version = _scalar(path, raw, "version", "iu")
    if int(version) != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {int(version)}, this sparseadv "
                              f"reads version {CHECKPOINT_VERSION}")
    b = _check_weights(path, raw)
    iteration = int(_scalar(path, raw, "iteration", "iu"))
    history = {k[len("history_"):]: raw[k] for k in raw if k.startswith("history_")}
    if iteration < 0:
        raise CheckpointError(f"{path}: iteration must be >= 0, got {iteration}")
    for key, arr in history.items():
        if arr.ndim != 1 or arr.shape[0] != iteration:
            raise CheckpointError(f"{path}: history {key!r} has shape {arr.shape}, but the "
                                  f"checkpoint is at iteration {iteration}")
    lr = float(_scalar(path, raw, "lr", "f"))
    if not (np.isnan(lr) or (np.isfinite(lr) and lr > 0)):
        raise CheckpointError(f"{path}: lr must be a positive finite number, got {lr}")
    return {
        "path": path,
        "W": np.ascontiguousarray(raw["W"], dtype=np.float64),
        "a": np.ascontiguousarray(raw["a"], dtype=np.float64),
        "b": b,
        "iteration": iteration,
        "lr": None if np.isnan(lr) else lr,
        "attack": _json_field(path, raw, "attack"),
        "rng_state": _json_field(path, raw, "rng_state", want=(dict, type(None))),
        "data": _json_field(path, raw, "data"),
        "config": _json_field(path, raw, "config"),
        # absent in checkpoints of full-batch runs written before mini-batches existed
        "batch_order": (_json_field(path, raw, "batch_order", want=(dict, type(None)))
                        if "batch_order" in raw else None),
        "history": history,
    }
