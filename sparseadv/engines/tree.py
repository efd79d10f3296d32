"""The tree engine: the paper's algorithm, with a partition tree over the weight rows.

Every attack step and the weight step query the ``PartitionTree`` (sparseadv.hsr) with each
(perturbed) point for its fired neurons; the query and the forward pass are one traversal
(``PartitionTree.forward_batch``): the tree's walk lists the nodes that may hold a fired
row, the scan tests the blocks of 8 rows in them and evaluates the rows of the blocks that
may fire with the sequential dot product that defines "fired" (docs/design.md §3), whose
scores go straight into f and H (8 lanes by tree position), and the attack passes write no
pairs at all. The passes of one iteration stay in the threat's ball around the clean points,
so the walk is done once per point per iteration: the anchored walk (``PartitionTree.anchor``,
the node bounds widened by the ball's radius) serves every pass, whose blocks are still
tested at the pass's own points. The final pass also returns its fired pairs (CSR over
points), and the weight gradient scatters them into the rows' gradients without evaluating
any pair again (``_core.pm_weight_grad(all_fired=True)`` over buffers the engine keeps zero).
After the weight step the rows that changed are updated in the tree (which rebuilds itself
when its bounds have grown loose, see ``PartitionTree``), which ends the anchor's validity.

Work counted per iteration: ``inner_products`` = the dot products the tree evaluated (the rows
of the blocks not pruned; at high d, where the tree's policy sends points to the GEMM path,
the kernel's products over that answer); ``candidate_pairs`` = pairs the tree reported (=
fired pairs of that pass), summed over the K + 1 passes of the iteration; ``nodes_visited``
from the tree (nodes of the walks and blocks tested); ``fired_pairs`` at the final points,
as every engine counts them.

The tree follows ``net.W`` through the protocol (docs/design.md §6): ``weights_changed(rows)``
updates those rows in the tree; ``weights_reset()`` (new weights, or a rolled-back step) marks it
stale and the next query rebuilds it from ``net.W``. After changing ``net.W`` in place by hand,
call ``engine.resync()``. The weight gradient of pass k reuses the pairs the forward pass of
pass k found (same points, by the protocol); at any other points it queries the tree again.
"""
import numpy as np

from .. import _core
from ..errors import InputError
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
        self._anchored = False          # the anchor belonged to the old tree

    def begin_iteration(self, X, y, threat, batch=None):
        super().begin_iteration(X, y, threat, batch)
        self._forward_pairs = None
        # the passes of this iteration stay within the threat's ball around X: one anchored
        # walk per point serves them all (PartitionTree.anchor), set up at the first pass
        self._clean = X
        self._anchored = False

    def _anchor_for(self, Xt):
        """The anchor of this iteration's clean points (None when there is none: no
        iteration begun, another batch shape). Its radius is the threat's ball in l2 with a
        relative margin of 1e-9 (the projection's rounding); a point outside it is walked
        as usual."""
        clean = getattr(self, "_clean", None)
        if clean is None or clean.shape != Xt.shape:
            return None
        if not self._anchored:
            t = self.threat
            rho = t.eps * (1.0 if t.norm == 2 else float(np.sqrt(clean.shape[1])))
            self._anchor = self.tree.anchor(clean, rho * (1.0 + 1e-9),
                                            reuse=getattr(self, "_anchor", None))
            self._anchored = True
        return self._anchor

    def _counted(self, before):
        after = self.tree.stats
        for key in ("inner_products", "nodes_visited"):
            self._add(key, after[key] - before[key])
        return after["brute_force_queries"] > before["brute_force_queries"]

    def _query(self, Xt):
        """The fired pairs at Xt (CSR over points), for a weight gradient at points no
        forward pass of this iteration has seen."""
        if self._stale:
            self.resync()
        before = self.tree.stats
        indptr, indices = self.tree.query_batch(Xt, self.net.b, sort=False, out=self._buffer())
        self._last_nnz = len(indices)
        self._counted(before)
        self._add("candidate_pairs", len(indices))
        return indptr, indices

    def _buffer(self):
        # one buffer for the pairs of every pass that keeps them (they are used before the
        # next such pass), sized from the last answer
        return self._work("pairs", self._last_nnz + self._last_nnz // 4 + 1024, np.int64)

    def _pass(self, Xt, H, pairs):
        """f (and H when given) at Xt by the fused query and forward; with ``pairs`` also the
        fired pairs in the tree's deterministic traversal order, left in the tree's buffers
        (indices None: ``_pm_weight_grad_kept``) where it can keep them."""
        if self._stale:
            self.resync()
        net = self.net
        n = Xt.shape[0]
        f = np.empty(n)
        fired = np.empty(n, dtype=np.int64)
        anchor = self._anchor_for(Xt)
        before = self.tree.stats
        indptr, indices = self.tree.forward_batch(Xt, net.b, net.a, net.scale, f, H, fired,
                                                  pairs, self._buffer() if pairs else None,
                                                  anchor, keep=pairs)
        brute = self._counted(before)
        self._add("candidate_pairs", int(fired.sum()))
        if pairs:
            self._last_nnz = int(indptr[-1])
        return f, fired, indptr, indices, brute

    def input_direction(self, Xt, pass_index=None):
        H = np.empty(Xt.shape)
        f = self._pass(Xt, H, False)[0]
        return H, f

    def forward(self, Xt, pass_index=None):
        f, fired, indptr, indices, brute = self._pass(Xt, None, True)
        self._add("fired_pairs", int(fired.sum()))
        # on the tree path every pair listed fired (none is re-evaluated by the gradient);
        # on the GEMM path the kernels' own arithmetic decides, so the gradient re-tests
        self._forward_pairs = (None if pass_index is None
                               else (pass_index, indptr, indices, not brute))
        return f, fired

    def weight_gradient(self, Xt, coef, pass_index=None):
        net = self.net
        if (pass_index is not None and self._forward_pairs is not None
                and self._forward_pairs[0] == pass_index):
            _, indptr, indices, all_fired = self._forward_pairs
            if indices is None:         # kept in the tree's buffers: no CSR copy
                try:
                    return _core._pm_weight_grad_kept(self.tree._tree, Xt, net.a, coef,
                                                     self._grad_scratch(),
                                                     self._work("grad", net.m * net.d))[:2]
                except InputError:      # (the tree was queried or changed since)
                    indptr, indices = self._query(Xt)
                    all_fired = False
        else:
            indptr, indices = self._query(Xt)
            all_fired = False
        # the pairs come from the tree: no re-validation before the transpose. Pairs that all
        # fire are scattered into full-size buffers kept zero between iterations (no m x d
        # allocation, zeroing or page faults per step) and the rows gathered into a work
        # buffer the trainer consumes.
        scratch = out = None
        if all_fired:
            scratch = self._grad_scratch()
            out = self._work("grad", net.m * net.d)
        rows, G, ev, _ = _core.pm_weight_grad(Xt, net.W, net.a, net.b, coef, indptr, indices,
                                              False, all_fired=all_fired, scratch=scratch,
                                              out=out)
        self._add("inner_products", ev)
        return rows, G

    def _grad_scratch(self):
        """(G (m, 4 at d = 3 else d) float64, mark (m,) uint8), zero: ``pm_weight_grad``
        leaves them zero again."""
        m, d = self.net.m, self.net.d
        gs = 4 if d == 3 else d
        sc = getattr(self, "_gscratch", None)
        if sc is None or sc[0].shape != (m, gs):
            sc = self._gscratch = (np.zeros((m, gs)), np.zeros(m, dtype=np.uint8))
        return sc

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
