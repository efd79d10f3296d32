"""``sparseadv reproduce``: the experiments behind the paper's claims, and the report.

* E1 :mod:`~sparseadv.reproduce.e1_sparsity`: fired neurons per input at initialisation
  against the width m.
* E2 :mod:`~sparseadv.reproduce.e2_convergence`: training in the theory's regime (m >= n^2):
  robust training loss against t, lazy-regime diagnostics, fired neurons over training; every
  engine from the same start (exactness); robustness against eps (:mod:`.robust_eval`).
* E3 :mod:`~sparseadv.reproduce.e3_cost`: per-iteration time and inner products against m, n, d.
* E4 :mod:`~sparseadv.reproduce.e4_hsr`: the partition tree (half-space reporting) against d.
* E5 :mod:`~sparseadv.reproduce.e5_real_data`: adversarial training on the digits and the
  breast-cancer data sets (bundled with scikit-learn), robustness against eps.

Each experiment module has a ``Config`` dataclass (sizes, seeds) and ``run(cfg, out, engines,
progress)`` returning a result dict (markdown, files, metrics); :func:`run` runs them with the
``quick``, ``full`` or ``tiny`` (tests) presets and writes ``REPORT.md`` whose claims table is
computed from the metrics by the ``verdict_*`` functions of :mod:`~sparseadv.reproduce.verdicts`.
"""
from .report import CONFIGS, make_configs, run

__all__ = ["run", "make_configs", "CONFIGS"]
