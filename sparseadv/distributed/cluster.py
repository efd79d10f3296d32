"""Connecting to a Dask cluster, or starting a local one, with one-line errors.

``distributed`` is an optional dependency (the ``distributed`` extra); it is imported only
here, when a cluster is actually needed, so ``import sparseadv.distributed`` works without it.
Every failure to get a usable cluster is an ``InputError`` with a one-line message, and
anything this module started (a client, a local cluster) is closed again before it raises.
"""
import asyncio
import logging

from ..errors import InputError

__all__ = ["require_distributed", "Cluster", "worker_addresses", "connect_timeout"]

INSTALL_HINT = "pip install 'sparseadv[distributed]'"


def require_distributed():
    """The ``distributed`` module, or an InputError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"the Dask scheduler is not installed (package 'distributed'); "
                         f"install it with: {INSTALL_HINT}") from None
    return distributed


async def _probe(address, timeout):
    from distributed.comm import connect
    comm = await connect(address, timeout=timeout)
    await comm.close()


def _check_reachable(address, timeout):
    """Refuse an address nothing answers on before a Client exists (a Client that fails to
    connect lingers and complains when collected)."""
    try:
        asyncio.run(_probe(address, timeout))
    except ValueError as exc:
        raise InputError(f"scheduler address {address!r} is not a Dask address ({exc}); "
                         f"expected for example tcp://HOST:8786") from None
    except OSError:
        raise InputError(f"no Dask scheduler answered at {address!r} within {timeout:g} s "
                         f"(is it running, and is the address right?)") from None
    except Exception as exc:  # noqa: BLE001 - a server that speaks another protocol
        raise InputError(f"{address!r} did not answer as a Dask scheduler "
                         f"({type(exc).__name__})") from None


def connect_timeout():
    """Dask's connect timeout in seconds (``distributed.comm.timeouts.connect``)."""
    require_distributed()
    import dask
    from dask.utils import parse_timedelta
    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))


def worker_addresses(client):
    """The addresses of the cluster's workers, sorted (the shard order follows it)."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


class Cluster:
    """A Dask client for ``scheduler`` (an address) or for a new ``LocalCluster`` of
    ``local_cluster`` single-threaded worker processes; a context manager that closes what it
    started (the local cluster and the client; never a remote scheduler).

    ``min_workers``: refuse (InputError) a cluster with fewer workers. Workers of a local
    cluster advertise one ``timing`` resource each (see ``sweep.map_grid``)."""

    def __init__(self, scheduler=None, local_cluster=None, timeout=10.0, min_workers=1,
                 quiet=True):
        if (scheduler is None) == (local_cluster is None):
            raise InputError("give exactly one of scheduler (an address) and local_cluster "
                             "(a number of workers)")
        distributed = require_distributed()
        self.client = self.local = None
        try:
            if scheduler is not None:
                if not isinstance(scheduler, str):
                    raise InputError(f"scheduler must be an address string such as "
                                     f"tcp://HOST:8786, got {scheduler!r}")
                _check_reachable(scheduler, timeout)
                try:
                    self.client = distributed.Client(scheduler, timeout=timeout,
                                                     set_as_default=False)
                except Exception as exc:  # noqa: BLE001
                    raise InputError(f"cannot connect to the Dask scheduler at {scheduler!r} "
                                     f"({type(exc).__name__}: {exc})") from None
            else:
                if isinstance(local_cluster, bool) or not isinstance(local_cluster, int) \
                        or local_cluster < 1:
                    raise InputError(f"local_cluster must be a positive number of workers, "
                                     f"got {local_cluster!r}")
                self.local = distributed.LocalCluster(
                    n_workers=local_cluster, threads_per_worker=1, processes=True,
                    dashboard_address=":0", resources={"timing": 1},
                    silence_logs=logging.ERROR if quiet else logging.WARNING)
                self.client = distributed.Client(self.local, set_as_default=False)
                self.client.wait_for_workers(local_cluster, timeout=max(timeout, 60))
            n = len(worker_addresses(self.client))
            if n < min_workers:
                where = scheduler if scheduler is not None else "the local cluster"
                raise InputError(f"{where} has {n} worker{'s' * (n != 1)}, fewer than the "
                                 f"{min_workers} shards (one worker per shard)")
        except BaseException:
            self.close()
            raise

    def close(self):
        """Close the client, and the local cluster if this object started it."""
        for obj in (self.client, self.local):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        self.client = self.local = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
