"""The command line's distributed options (``--scheduler``, ``--local-cluster``, ``--shards``).

``sparseadv train`` calls three functions here and nothing else of this package:
``add_arguments(parser)``, ``make_trainer(args, ...)`` (an ``AdversarialTrainer`` unless a
cluster option was given, else a ``ShardedTrainer`` that owns the cluster it needed), and
``sync(trainer, net)`` before every checkpoint (the gathered weights are copied into the
client's ``net``, so the single-process checkpoint code writes the same file either way).
``close(trainer)`` releases the shards and the cluster. Bad values raise ``InputError``
(one line, exit status 2 on the command line).
"""
import contextlib

from .. import _argtypes as argtypes
from ..errors import InputError

__all__ = ["add_arguments", "add_cluster_arguments", "cluster_from_args", "sweep_cluster", "sweep_note",
           "make_trainer", "sync", "close"]


def add_cluster_arguments(parser):
    """``--scheduler ADDRESS`` / ``--local-cluster N`` (mutually exclusive) on ``parser``."""
    group = parser.add_argument_group(
        "distributed (needs the 'distributed' extra: pip install 'sparseadv[distributed]')")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running Dask scheduler, e.g. tcp://HOST:8786")
    where.add_argument("--local-cluster", type=argtypes.positive_int, metavar="N",
                       help="start a local Dask cluster of N single-threaded worker processes "
                            "(closed at the end)")
    return group


def add_arguments(parser):
    """The ``train`` options: the cluster options and ``--shards K``."""
    group = add_cluster_arguments(parser)
    group.add_argument("--shards", type=argtypes.positive_int, metavar="K",
                       help="split the neurons into K shards, one per Dask worker (needs "
                            "--scheduler or --local-cluster; the checkpoint is the same as a "
                            "single process's, so either can resume the other)")


def cluster_from_args(args, min_workers=1, timeout=None):
    """A ``Cluster`` for ``--scheduler``/``--local-cluster``, or None when neither is given.
    ``timeout`` (seconds to reach the scheduler): by default Dask's own setting
    ``distributed.comm.timeouts.connect`` (environment: DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)."""
    scheduler = getattr(args, "scheduler", None)
    local = getattr(args, "local_cluster", None)
    if scheduler is None and local is None:
        return None
    from .cluster import Cluster, connect_timeout
    if timeout is None:
        timeout = connect_timeout()
    return Cluster(scheduler=scheduler, local_cluster=local, timeout=timeout,
                   min_workers=min_workers)


@contextlib.contextmanager
def sweep_cluster(args):
    """The client of ``--scheduler``/``--local-cluster`` (closed afterwards), or None."""
    cluster = cluster_from_args(args)
    if cluster is None:
        yield None
        return
    with cluster:
        yield cluster.client


def sweep_note(cluster):
    """The (option, text) line a report gives for a sweep run on ``cluster``."""
    from .cluster import worker_addresses
    where = "a local cluster" if cluster.local is not None else "the scheduler given"
    n = len(worker_addresses(cluster.client))
    return ("--scheduler / --local-cluster",
            f"every grid point a task on {where} of {n} Dask worker{'s' * (n != 1)}, at most "
            f"one per worker at a time (sparseadv.distributed.map_grid); the times are the "
            f"workers' (--threads limits only this process)")


def make_trainer(args, net, attack, lr, engine):
    """The trainer ``sparseadv train`` uses: single-process unless a cluster is given."""
    shards = getattr(args, "shards", None)
    distributed = getattr(args, "scheduler", None) is not None or \
        getattr(args, "local_cluster", None) is not None
    if not distributed:
        if shards is not None:
            raise InputError("--shards needs a cluster: give --scheduler ADDRESS or "
                             "--local-cluster N")
        from ..trainer import AdversarialTrainer
        return AdversarialTrainer(net, attack, lr=lr, engine=engine)
    shards = 1 if shards is None else shards
    if shards > net.m:
        raise InputError(f"--shards {shards} is more than the --m {net.m} neurons (every shard "
                         f"needs at least one)")
    cluster = cluster_from_args(args, min_workers=shards)
    try:
        from .trainer import ShardedTrainer
        trainer = ShardedTrainer(net, attack, lr, engine=engine, shards=shards,
                                 client=cluster.client)
    except BaseException:
        cluster.close()
        raise
    trainer.owned_cluster = cluster
    return trainer


def sync(trainer, net):
    """Copy a sharded trainer's weights into ``net.W`` (in place); no-op for a single process."""
    if hasattr(trainer, "gather"):
        net.W[...] = trainer.gather().W


def close(trainer):
    """Release a sharded trainer's shards and the cluster it started; no-op otherwise."""
    if hasattr(trainer, "gather"):
        trainer.close()
        cluster = getattr(trainer, "owned_cluster", None)
        if cluster is not None:
            cluster.close()
