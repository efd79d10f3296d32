"""The project's own exception classes: one convention for every module.

A wrong *type* raises ``InputTypeError`` (a ``TypeError``), a wrong *value* ``InputError`` (a
``ValueError``); each message names the argument and what was expected. Both, and the other
classes here, derive from ``SparseAdvError``, so the command line can catch exactly the errors
that mean "bad usage or bad data" (plus ``OSError``) and let a bug in the library show its
traceback. Subclassing the built-ins keeps ``except ValueError`` in user code working.
"""


class SparseAdvError(Exception):
    """Base class of every error sparseadv raises on purpose."""


class InputError(SparseAdvError, ValueError):
    """An argument has the right type but a value that cannot work."""


class InputTypeError(SparseAdvError, TypeError):
    """An argument has the wrong type."""


class DataFileError(InputError):
    """A data file cannot be read as a data set (message: file, line or array, what is wrong)."""


class CheckpointError(InputError):
    """A checkpoint is missing, damaged, tampered with or does not match the run."""


class DivergenceError(SparseAdvError, FloatingPointError):
    """Training produced non-finite weights or outputs; the last finite weights are kept."""


__all__ = ["SparseAdvError", "InputError", "InputTypeError", "DataFileError",
           "CheckpointError", "DivergenceError"]
