"""argparse value types shared by the command-line front ends (``cli``, ``scaling``).

Each parses one option's text or raises ``argparse.ArgumentTypeError`` with what was expected;
argparse prefixes the option's name, so every message reads ``argument --m: expected ...``.
"""
import argparse
import math


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_float(text, low=None, strict=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if low is not None and (value < low or (strict and value == low)):
        rel = ">" if strict else ">="
        raise argparse.ArgumentTypeError(f"expected a number {rel} {low}, got {text!r}")
    return value


def eps(text):
    """An attack radius: a finite number >= 0."""
    return finite_float(text, low=0.0)


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
