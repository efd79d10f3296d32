"""Errors of distributed runs."""
from ..errors import SparseAdvError

__all__ = ["ShardError", "GridTaskError"]


class ShardError(SparseAdvError, RuntimeError):
    """A shard failed (its worker died, or its engine raised) during an iteration.

    Attributes: ``shard`` (index), ``worker`` (address), ``phase`` (what it was doing),
    ``iteration`` (the last iteration completed on every shard; 0 before the first) and
    ``applied`` (always False: a failed iteration's weight step is applied on no shard)."""

    def __init__(self, message, *, shard, worker, phase, iteration, cause=None):
        super().__init__(message)
        self.shard, self.worker, self.phase = shard, worker, phase
        self.iteration = iteration
        self.applied = False
        self.cause = cause


class GridTaskError(SparseAdvError, RuntimeError):
    """A grid point of a distributed sweep failed; ``index`` is its position in the grid."""

    def __init__(self, message, *, index):
        super().__init__(message)
        self.index = index
