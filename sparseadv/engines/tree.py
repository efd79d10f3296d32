"""The tree engine: the paper's algorithm, with a partition tree over the weight rows.

Every attack step and the weight step query the ``PartitionTree`` (sparseadv.hsr) with each
(perturbed) point for its fired neurons, as CSR over points; forward, input gradient and weight
gradient then run over those pairs only (``_core.pm_forward`` / ``_core.pm_weight_grad``); after
the weight step the rows that changed are updated in the tree (which rebuilds itself when its
bounds have grown loose, see ``PartitionTree``).

Point-major kernels are used although they gather weight rows: turning the tree's answer
neuron-major (a counting sort over m) cost more than the gathers it saves (docs/benchmarks.md).

Work counted per iteration: ``inner_products`` = the tree's evaluated dot products (leaf scans)
plus one per reported pair in each kernel (the output needs <w_r, x> - b, which a wholesale
node report does not compute); ``candidate_pairs`` = pairs the tree reported, summed over the
K + 1 queries of the iteration; ``nodes_visited`` from the tree; ``fired_pairs`` at the final
points, as every engine counts them.

The tree follows ``net.W`` through the protocol (docs/design.md §6): ``weights_changed(rows)``
updates those rows in the tree; ``weights_reset()`` (new weights, or a rolled-back step) marks it
stale and the next query rebuilds it from ``net.W``. After changing ``net.W`` in place by hand,
call ``engine.resync()``. The weight gradient of pass k reuses the pairs the forward pass of
pass k found (same points, by the protocol); at any other points it queries the tree again.
"""
import numpy as np

from .. import _core
from ..hsr import PartitionTree
from .base import Engine


class TreeEngine(Engine):
    """Parameters: ``leaf_size`` and any further ``PartitionTree`` option (rebuild policy)."""

    name = "tree"

    def __init__(self, net, leaf_size=32, **tree_options):
        super().__init__(net)
        self.tree_options = dict(leaf_size=leaf_size, **tree_options)
        self.tree = PartitionTree(net.W, **self.tree_options)
        self._stale = False         # the tree no longer matches net.W: rebuild before use
        self._forward_pairs = None  # (pass index, indptr, indices) of the last forward pass
        self._last_nnz = 0

    def resync(self):
        """Rebuild the tree from ``net.W`` (after the weights were changed outside training)."""
        self.tree = PartitionTree(self.net.W, **self.tree_options)
        self._stale = False

    def begin_iteration(self, X, y, threat, batch=None):
        super().begin_iteration(X, y, threat, batch)
        self._forward_pairs = None

    def _query(self, Xt):
        if self._stale:
            self.resync()
        before = self.tree.stats
        # unsorted answers: the point-major kernels take any order, and the order the tree
        # traverses in is deterministic, so results stay reproducible bit for bit
        # one buffer for every query (an answer is used before the next query is made),
        # sized from the last answer
        out = self._work("pairs", self._last_nnz + self._last_nnz // 4 + 1024, np.int64)
        indptr, indices = self.tree.query_batch(Xt, self.net.b, sort=False, out=out)
        self._last_nnz = len(indices)
        after = self.tree.stats
        self._add("inner_products", after["inner_products"] - before["inner_products"])
        self._add("nodes_visited", after["nodes_visited"] - before["nodes_visited"])
        self._add("candidate_pairs", len(indices))
        return indptr, indices

    def input_direction(self, Xt, pass_index=None):
        net = self.net
        indptr, indices = self._query(Xt)
        f = np.empty(Xt.shape[0])
        H = np.empty_like(Xt)
        ev, _ = _core.pm_forward(Xt, net.W, net.a, net.b, net.scale, indptr, indices, f, H,
                                 None, False)
        self._add("inner_products", ev)
        return H, f

    def forward(self, Xt, pass_index=None):
        net = self.net
        indptr, indices = self._query(Xt)
        f = np.empty(Xt.shape[0])
        fired = np.empty(Xt.shape[0], dtype=np.int64)
        ev, nf = _core.pm_forward(Xt, net.W, net.a, net.b, net.scale, indptr, indices, f, None,
                                  fired, False)
        self._add("inner_products", ev)
        self._add("fired_pairs", nf)
        self._forward_pairs = None if pass_index is None else (pass_index, indptr, indices)
        return f, fired

    def weight_gradient(self, Xt, coef, pass_index=None):
        net = self.net
        if (pass_index is not None and self._forward_pairs is not None
                and self._forward_pairs[0] == pass_index):
            _, indptr, indices = self._forward_pairs
        else:
            indptr, indices = self._query(Xt)
        # the pairs come from the tree: no re-validation before the transpose
        rows, G, ev, _ = _core.pm_weight_grad(Xt, net.W, net.a, net.b, coef, indptr, indices,
                                              False)
        self._add("inner_products", ev)
        return rows, G

    def weights_changed(self, rows):
        self._forward_pairs = None
        if self._stale:
            return                                  # rebuilt from net.W at the next query
        self._stale = True                          # until the update below has completed
        self.tree.update_from(rows, self.net.W)     # no m x d gather, no duplicate search
        self._stale = False

    def weights_reset(self):
        self._forward_pairs = None
        self._stale = True
