"""Beyond one machine: neuron-sharded exact training and distributed sweeps on Dask.

* ``ShardedTrainer``: the ``AdversarialTrainer`` API with the m neurons split over k Dask
  workers (``trainer``; the worker side is ``shard``), equal to the single process to
  round-off; checkpoints in the command line's format (``checkpoint``).
* ``map_grid``: every point of a benchmark grid as a task, at most one per worker at a time
  (``sweep``).
* ``Cluster``: a client for a scheduler address or a new ``LocalCluster`` (``cluster``).

Needs the optional extra ``distributed`` (``pip install 'sparseadv[distributed]'``); this
package imports without it and says so, with an ``InputError``, when a cluster is needed.
The names load on first use, so the command line's ``cli_support`` imports nothing heavy.
See docs/distributed.md and docs/design.md §8.
"""
import importlib

_WHERE = {"ShardedTrainer": "trainer", "SHARDED_RECORD_FIELDS": "trainer",
          "split_rows": "trainer", "ShardError": "faults", "GridTaskError": "faults",
          "Cluster": "cluster", "require_distributed": "cluster", "map_grid": "sweep",
          "GridTask": "sweep"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
