"""Input validation shared by every public entry point.

Every check names the argument and what was expected, and returns a *new* float64 C-contiguous
array when a conversion is needed, so the caller's arrays are never modified in place (the
kernels only ever write into arrays sparseadv allocated itself).
"""
import numbers
import os

import numpy as np

from .errors import InputError, InputTypeError


def check_bool(name, value):
    """A Python or numpy bool, returned as bool (0/1 and strings are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


# Sizes and counts become numpy int64 (array shapes, loop bounds in C); a larger one can never work.
INT64_MAX = 2 ** 63 - 1


def _short(value):
    """repr of value, cut short (a 400-digit integer is not a readable message)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:20] + "..." + text[-8:]


def check_positive_int(name, value):
    """A positive Python/numpy integer that fits in int64 (bool rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be a positive integer, got {_short(value)}")
    if value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value}")
    if value > INT64_MAX:
        raise InputError(f"{name} must be a positive integer <= 2**63 - 1, got {_short(value)}")
    return int(value)


def check_real(name, value, *, low=None, low_inclusive=True, high=None, allow_none=False):
    """A finite real scalar (Python, numpy or 0-d array), optionally bounded below and above.

    A Python int too large for a float (``10**400``) is a wrong value, not an OverflowError."""
    if value is None and allow_none:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a real number, got {_short(value)}")
    try:
        value = float(value)
    except (OverflowError, ValueError):
        raise InputError(f"{name} must be a finite real number representable as a float64, "
                         f"got {_short(value)}") from None
    if not np.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if low is not None:
        if low_inclusive and value < low:
            raise InputError(f"{name} must be >= {low}, got {value}")
        if not low_inclusive and value <= low:
            raise InputError(f"{name} must be > {low}, got {value}")
    if high is not None and value > high:
        raise InputError(f"{name} must be <= {high:g}, got {value:g}")
    return value


def _as_float_array(name, X, *, allow_int=False):
    if isinstance(X, np.ndarray):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise InputTypeError(f"{name} must be an array of real numbers: {exc}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise InputTypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    if not (kind == "f" or (allow_int and kind in "iu")):
        expected = "a float or integer dtype" if allow_int else "a floating dtype (float32 or float64)"
        raise InputTypeError(f"{name} must have {expected}, got dtype {arr.dtype}")
    return arr


def _finite_float64(name, arr):
    """``arr`` as C-contiguous float64, refusing NaN and infinite values."""
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} must contain only finite values (found NaN or inf)")
    return arr


def check_matrix(name, X, *, ncols=None, ncols_name="d"):
    """A non-empty 2-D finite real float matrix, returned as float64 C-contiguous.

    float32 and non-contiguous inputs are converted (a copy); a float64 C-contiguous input is
    returned as it is, so callers that keep the array copy it explicitly (see
    ``ShiftedReLUNet.from_arrays``)."""
    arr = _as_float_array(name, X)
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must have at least 1 row and 1 column, got shape {arr.shape}")
    if ncols is not None and arr.shape[1] != ncols:
        raise InputError(f"{name} must have {ncols} columns ({ncols_name}), got {arr.shape[1]}")
    return _finite_float64(name, arr)


def check_vector(name, v, *, length=None, length_name="n", allow_int=False):
    """A non-empty 1-D finite real vector, returned as float64 C-contiguous."""
    arr = _as_float_array(name, v, allow_int=allow_int)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} must be non-empty")
    if length is not None and arr.shape[0] != length:
        raise InputError(f"{name} must have length {length} ({length_name}), got {arr.shape[0]}")
    return _finite_float64(name, arr)


def check_Xy(X, y, d):
    """Validate a data set for a network of input dimension d."""
    X = check_matrix("X", X, ncols=d)
    y = check_vector("y", y, length=X.shape[0], length_name="the number of rows of X",
                     allow_int=True)
    return X, y


def check_seed(seed, name="seed"):
    """None, a non-negative integer, or a numpy Generator (returned as given, int as int).

    A wrong type (bool, float, str) is an InputTypeError, a negative integer an InputError;
    both name the argument (``name``)."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    expected = "None, a non-negative integer or a numpy Generator"
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"{name} must be {expected}, got {_short(seed)}")
    if seed < 0:
        raise InputError(f"{name} must be {expected}, got {seed}")
    return int(seed)


def available_memory():
    """Bytes of memory this process can still allocate: MemAvailable from /proc/meminfo where
    there is one, else the physical pages the OS reports free; None when neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_allocation(name, nbytes, what="the arrays it needs"):
    """Refuse, before allocating, a size that cannot fit in memory.

    ``name`` is the argument (or arguments) that decide the size, ``nbytes`` the bytes asked for
    (any non-negative integer, even one far beyond 2**64). Raises InputError naming both, e.g.
    ``m, d asks for 8,796,093,022,208 bytes for the weights (16,000,000,000 available); choose
    a smaller m, d``. Nothing is allocated here: call it before the allocation."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise InputError(f"{name} gives a negative size ({nbytes:,} bytes) for {what}")
    avail = available_memory()
    if nbytes > 2 ** 62 or (avail is not None and nbytes > avail):
        have = "available memory unknown" if avail is None else f"{avail:,} available"
        raise InputError(f"{name} asks for {nbytes:,} bytes for {what} ({have}); "
                         f"choose a smaller {name}")
    return nbytes
