"""One measurement pipeline for the cost of an adversarial iteration.

* ``grid``: the one-factor (m, n, d) grids and the seeded problem at each point;
* ``measure``: run engines on grid points (median time, work counters);
* ``fit``: power-law exponents with 95% intervals (``sparseadv.theory`` fits);
* ``verdict``: the one sublinearity rule (work counts decide, with a margin and a grid check);
* ``tables``, ``plots``, ``environment``: CSV, Markdown, PNG and the machine description;
* ``asv_results``: the asv results reader;
* ``bench``: the ``sparseadv bench`` command; ``estimate``: run-time estimates;
* ``contenders``, ``oracle``, ``torch_peer``, ``timing``: what ``tools/engine_compare.py`` and
  the other table scripts run (engines with options, the oracle, the PyTorch peer).

Used by ``sparseadv bench``, by E3 of ``sparseadv reproduce`` and by the asv suite.
Submodules are imported on demand (nothing heavy here).
"""
