"""sparseadv: sublinear-time adversarial training of wide two-layer shifted-ReLU networks.

Public API: ``ShiftedReLUNet`` (the network), ``PGD`` / ``FGSM`` (attacks),
``AdversarialTrainer`` (dense, tree and certified engines), ``PartitionTree`` /
``BruteForceHSR`` (half-space reporting), ``robustness`` (evaluation attacks, robust accuracy,
the ceiling), ``datasets`` and ``theory``.
"""
import os as _os

# OpenMP threads that spin after a parallel region steal the cores BLAS needs next. With an
# earlier kernel layout (pooled OpenBLAS calls between OpenMP regions) that made dense passes
# 10x slower; with the current kernels the default policy costs 2-8% per step
# (benchmarks/omp_wait_table.py). Must be set before the compiled core loads libgomp; a value
# the user set explicitly is respected.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import datasets, robustness, theory  # noqa: E402
from .attacks import FGSM, PGD  # noqa: E402
from .hsr import BruteForceHSR, PartitionTree  # noqa: E402
from .network import ShiftedReLUNet
from .trainer import AdversarialTrainer

__version__ = "0.1.0"

__all__ = ["ShiftedReLUNet", "PGD", "FGSM", "AdversarialTrainer", "PartitionTree",
           "BruteForceHSR", "datasets", "robustness", "theory",
           "__version__"]
