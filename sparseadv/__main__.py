"""``python -m sparseadv ...``: the same command line as the ``sparseadv`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
