"""``python -m sparseadv.scaling``: the same command as ``sparseadv bench`` (see
``sparseadv.analysis.bench``)."""
import sys

from .analysis.bench import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
