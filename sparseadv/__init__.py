"""sparseadv: sublinear-time adversarial training of wide two-layer shifted-ReLU networks."""
__version__ = "0.1.0"
