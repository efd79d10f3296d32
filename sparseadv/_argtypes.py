"""argparse value types shared by the command-line front ends (``cli``, ``scaling``).

Each parses one option's text or raises ``argparse.ArgumentTypeError`` with what was expected;
argparse prefixes the option's name, so every message reads ``argument --m: expected ...``.
"""
import argparse
import math

from ._runs import EPS_MAX
from ._validation import INT64_MAX


def _int(text, low, expected):
    # Sizes, counts and seeds end up as int64 (array shapes, numpy seeds); larger never works.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"expected {expected} below 2**63, got {text[:40]!r}")
    return value


def positive_int(text):
    return _int(text, 1, "a positive integer")


def nonneg_int(text):
    return _int(text, 0, "an integer >= 0")


def finite_float(text, low=None, strict=False, high=None):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:40]!r}")
    if low is not None and (value < low or (strict and value == low)):
        rel = ">" if strict else ">="
        raise argparse.ArgumentTypeError(f"expected a number {rel} {low}, got {text!r}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"expected a number <= {high:g}, got {text!r}")
    return value


def eps(text):
    """An attack radius: a finite number in [0, EPS_MAX] (larger radii overflow the attack)."""
    return finite_float(text, low=0.0, high=EPS_MAX)


def step_size(text):
    """A PGD step length: a number in (0, EPS_MAX]."""
    return finite_float(text, low=0.0, strict=True, high=EPS_MAX)


def positive_float(text):
    return finite_float(text, low=0.0, strict=True)


def lr(text):
    """A learning rate: a positive number or "auto"."""
    if text == "auto":
        return "auto"
    return positive_float(text)


def norm(text):
    """An attack norm: "2" or "inf" (also l2, linf, infinity)."""
    key = text.lower().lstrip("l")
    if key == "2":
        return "2"
    if key in ("inf", "infinity"):
        return "inf"
    raise argparse.ArgumentTypeError(f"expected 2 or inf, got {text!r}")
