"""asv benchmarks: the partition tree against blocked brute force (half-space reporting).

Data: ``common.hsr_problem`` (``sparseadv.analysis.grid``): m Gaussian rows N(0, I_d),
d in {2, 3, 4, 8, 16, 64}, plus "sub4": weights near a 4-dimensional subspace of R^64;
1024 unit-norm queries uniform on the sphere, threshold b = sqrt(0.4 ln m).
Sizes are bundled as (m, d) tuples. The default grid keeps m <= 2**15 so the suite is fast;
``SPARSEADV_BENCH_GRID=large`` adds m up to 2**18.
"""
import os

import numpy as np

from .common import Benchmark, hsr_problem

try:
    from sparseadv.hsr import BruteForceHSR, PartitionTree
except ImportError:  # pragma: no cover - asv discovers benchmarks before the build
    PartitionTree = BruteForceHSR = None

N_QUERIES = 1024
# PartitionTree's rebuild thresholds that never trigger (they must be finite): Update times
# updates alone.
NO_REBUILD = 1e300
_DIMS = (2, 3, 4, 8, 16, 64, "sub4")


def _grid():
    ms = [2 ** 12, 2 ** 15]
    if os.environ.get("SPARSEADV_BENCH_GRID", "").lower() == "large":
        ms += [2 ** 17, 2 ** 18]
    return [(m, d) for m in ms for d in _DIMS]


SIZES = _grid()


def _make(kind, W):
    return PartitionTree(W) if kind == "tree" else BruteForceHSR(W)


class Build(Benchmark):
    """Construction time (the tree sorts; brute force only copies W)."""
    params = (SIZES, ["tree", "brute"])
    param_names = ["m_d", "structure"]

    def setup(self, m_d, kind):
        if PartitionTree is None:
            raise NotImplementedError("sparseadv is not built")
        self.W = hsr_problem(*m_d, n=1)[0]

    def time_build(self, m_d, kind):
        _make(kind, self.W)

    def peakmem_build(self, m_d, kind):
        _make(kind, self.W)


class QueryBatch(Benchmark):
    """1024 queries at b = sqrt(0.4 ln m); track_ is the fraction of the m*n inner
    products evaluated (1.0 for brute force)."""
    params = (SIZES, ["tree", "brute"])
    param_names = ["m_d", "structure"]

    def setup(self, m_d, kind):
        if PartitionTree is None:
            raise NotImplementedError("sparseadv is not built")
        W, self.X, self.b = hsr_problem(*m_d, n=N_QUERIES)
        self.s = _make(kind, W)
        self.m = W.shape[0]

    def time_query_batch(self, m_d, kind):
        self.s.query_batch(self.X, self.b)

    def track_inner_product_fraction(self, m_d, kind):
        self.s.reset_stats()
        self.s.query_batch(self.X, self.b)
        return self.s.stats["inner_products"] / (self.m * self.X.shape[0])
    track_inner_product_fraction.unit = "fraction"

    def track_nodes_per_query(self, m_d, kind):
        self.s.reset_stats()
        self.s.query_batch(self.X, self.b)
        return self.s.stats["nodes_visited"] / self.X.shape[0]
    track_nodes_per_query.unit = "nodes"


class Update(Benchmark):
    """Move 1% of the rows by small noise (the tree widens the radii on their root paths).

    Updates only: the tree is built with its rebuild policy switched off
    (``rebuild_fraction`` and ``rebuild_factor`` = NO_REBUILD), since with the defaults the
    repeated 1% update would trigger a full rebuild every ~100 calls inside the timed region
    (``rebuild_fraction = 1``). A rebuild re-sorts the tree from the current W, like the
    construction that ``Build.time_build`` times. ``track_rebuilds`` checks that none happens
    in 200 updates (0)."""
    params = (SIZES, ["tree", "brute"])
    param_names = ["m_d", "structure"]

    def setup(self, m_d, kind):
        if PartitionTree is None:
            raise NotImplementedError("sparseadv is not built")
        W = hsr_problem(*m_d, n=1)[0]
        rng = np.random.default_rng(1)
        if kind == "tree":
            try:
                self.s = PartitionTree(W, rebuild_fraction=NO_REBUILD,
                                       rebuild_factor=NO_REBUILD)
            except TypeError:           # a commit whose tree has no rebuild policy
                self.s = PartitionTree(W)
        else:
            self.s = BruteForceHSR(W)
        k = max(1, W.shape[0] // 100)
        self.rows = rng.choice(W.shape[0], size=k, replace=False)
        self.vals = W[self.rows] + 0.01 * rng.standard_normal((k, W.shape[1]))

    def time_update(self, m_d, kind):
        self.s.update(self.rows, self.vals)

    def track_rebuilds(self, m_d, kind):
        for _ in range(200):
            self.s.update(self.rows, self.vals)
        return getattr(self.s, "n_rebuilds", 0)
    track_rebuilds.unit = "rebuilds"


class SingleQuery(Benchmark):
    """One query at a time (the tree path, no fallback)."""
    params = ([s for s in SIZES if s[1] in (2, 3, 16, "sub4")], ["tree", "brute"])
    param_names = ["m_d", "structure"]

    def setup(self, m_d, kind):
        if PartitionTree is None:
            raise NotImplementedError("sparseadv is not built")
        W, X, self.b = hsr_problem(*m_d, n=16)
        self.X = X
        self.s = _make(kind, W)

    def time_query(self, m_d, kind):
        for x in self.X:
            self.s.query(x, self.b)
