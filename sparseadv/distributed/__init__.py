"""Beyond one machine: neuron-sharded exact training and distributed sweeps on Dask.

* ``ShardedTrainer``: the ``AdversarialTrainer`` API with the m neurons split over k Dask
  workers (``trainer``; the worker side is ``shard``), equal to the single process to
  round-off; checkpoints in the command line's format (``checkpoint``).
* ``map_grid``: every point of a benchmark grid as a task, at most one per worker at a time
  (``sweep``).
* ``Cluster``: a client for a scheduler address or a new ``LocalCluster`` (``cluster``).

Needs the optional extra ``distributed`` (``pip install 'sparseadv[distributed]'``); this
package imports without it and says so, with an ``InputError``, when a cluster is needed.
See docs/distributed.md and docs/design.md §8.
"""
from .cluster import Cluster, require_distributed
from .faults import GridTaskError, ShardError
from .sweep import map_grid
from .trainer import SHARDED_RECORD_FIELDS, ShardedTrainer, split_rows

__all__ = ["ShardedTrainer", "SHARDED_RECORD_FIELDS", "split_rows", "ShardError",
           "GridTaskError", "Cluster", "require_distributed", "map_grid"]
