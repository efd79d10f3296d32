"""The tree engine: the paper's algorithm, with a partition tree over the weight rows.

Every attack step and the weight step query the ``PartitionTree`` (sparseadv.hsr) with each
(perturbed) point for its fired neurons, as CSR over points; the pairs are turned neuron-major
(``_core.csr_transpose``) and forward, input gradient and weight gradient run over them only
(``_core.nm_forward`` / ``_core.nm_weight_grad``; the weight gradient reuses the forward pass's
fired mask); after the weight step the rows that changed are updated in the tree (which
rebuilds itself when its bounds have grown loose, see ``PartitionTree``).

Work counted per iteration: ``inner_products`` = the tree's evaluated dot products (leaf scans)
plus one per reported pair in each forward kernel (the output needs <w_r, x> - b, which a
wholesale node report does not compute); ``candidate_pairs`` = pairs the tree reported, summed
over the K + 1 queries of the iteration; ``nodes_visited`` from the tree; ``fired_pairs`` at
the final points, as every engine counts them.

The engine assumes ``net.W`` changes only through the trainer that owns it; after changing
``net.W`` by hand call ``engine.resync()``.
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
        self._pairs = None

    def resync(self):
        """Rebuild the tree from ``net.W`` (after the weights were changed outside training)."""
        self.tree = PartitionTree(self.net.W, **self.tree_options)

    def _query(self, Xt):
        before = self.tree.stats
        indptr, indices = self.tree.query_batch(Xt, self.net.b)
        after = self.tree.stats
        self._add("inner_products", after["inner_products"] - before["inner_products"])
        self._add("nodes_visited", after["nodes_visited"] - before["nodes_visited"])
        self._add("candidate_pairs", len(indices))
        return indptr, indices

    def _pairs_neuron_major(self, Xt):
        """Query the tree, then turn its point-major answer neuron-major (a stable counting
        sort, O(pairs)): the kernels then fix a weight row and gather points, which stay in
        cache, instead of gathering weight rows per point (DESIGN.md §3: 15-30 vs 3-4 GFLOP/s;
        measured here at d = 3, m = 2^18: 40 ns per pair point-major)."""
        indptr, indices = self._query(Xt)
        cptr, cidx = _core.csr_transpose(indptr, indices, self.net.m)
        return cptr, cidx

    def input_gradient(self, Xt, y):
        net = self.net
        cptr, cidx = self._pairs_neuron_major(Xt)
        f = np.empty(Xt.shape[0])
        H = np.empty_like(Xt)
        ev, _ = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f, H, None,
                                 None, False)
        self._add("inner_products", ev)
        H *= (f - y)[:, None]
        return H, f

    def forward(self, Xt):
        net = self.net
        cptr, cidx = self._pairs_neuron_major(Xt)
        f = np.empty(Xt.shape[0])
        fired = np.empty(Xt.shape[0], dtype=np.int64)
        mask = np.empty(len(cidx), dtype=np.uint8)
        ev, nf = _core.nm_forward(Xt, net.W, net.a, net.b, net.scale, cptr, cidx, f, None,
                                  fired, mask, False)
        self._add("inner_products", ev)
        self._add("fired_pairs", nf)
        self._pairs = (Xt.copy(), cptr, cidx, mask)
        return f, fired

    def weight_gradient(self, Xt, coef):
        net = self.net
        if self._pairs is not None and np.array_equal(Xt, self._pairs[0]):
            _, cptr, cidx, mask = self._pairs      # the forward pass's fired mask: no products
        else:
            cptr, cidx = self._pairs_neuron_major(Xt)
            mask = None
        rows = np.flatnonzero(np.diff(cptr)).astype(np.int64)
        G = np.empty((len(rows), net.d))
        ev, _ = _core.nm_weight_grad(Xt, net.W, net.a, net.b, coef, cptr, cidx, rows, G, mask,
                                     False)
        self._add("inner_products", ev)
        return rows, G

    def end_iteration(self, rows):
        if len(rows):
            self.tree.update(rows, self.net.W[rows])
        self._pairs = None
