"""sparseadv: sublinear-time adversarial training of wide two-layer shifted-ReLU networks.

Public API: ``ShiftedReLUNet`` (the network), ``PGD`` / ``FGSM`` (attacks),
``AdversarialTrainer`` (dense, tree and certified engines), ``PartitionTree`` /
``BruteForceHSR`` (half-space reporting), ``datasets`` and ``theory``.
"""
import os as _os

# OpenMP threads that spin after a parallel region steal the cores OpenBLAS needs for the very
# next dgemm (measured 10x slower dense passes with the default policy). Must be set before the
# compiled core loads libgomp; a value the user set explicitly is respected.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import datasets, theory  # noqa: E402
from .attacks import FGSM, PGD  # noqa: E402
from .hsr import BruteForceHSR, PartitionTree  # noqa: E402
from .network import ShiftedReLUNet
from .trainer import AdversarialTrainer

__version__ = "0.1.0"

__all__ = ["ShiftedReLUNet", "PGD", "FGSM", "AdversarialTrainer", "PartitionTree",
           "BruteForceHSR", "datasets", "theory",
           "__version__"]
