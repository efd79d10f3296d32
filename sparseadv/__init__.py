"""sparseadv: sublinear-time adversarial training of wide two-layer shifted-ReLU networks.

Public API: ``ShiftedReLUNet`` (the network), ``PGD`` / ``FGSM`` (attacks),
``AdversarialTrainer`` (dense, tree and certified engines), ``datasets`` and ``theory``.
"""
from . import datasets, theory
from .attacks import FGSM, PGD
from .network import ShiftedReLUNet
from .trainer import AdversarialTrainer

__version__ = "0.1.0"

__all__ = ["ShiftedReLUNet", "PGD", "FGSM", "AdversarialTrainer", "datasets", "theory",
           "__version__"]
