"""Distributed sweeps: every grid point a task, at most one timing task per worker at a time.

Timings taken by two tasks that share a worker's cores contend, so ``map_grid`` never runs two
grid points on one worker at once. Two ways, chosen automatically:

* every worker advertises a ``timing`` resource (``Cluster(local_cluster=N)`` starts its
  workers so; for a cluster of your own, start workers with ``--resources timing=1``): all
  tasks are submitted with ``resources={"timing": 1}`` and the scheduler keeps to one per
  worker, and resubmits a task whose worker died;
* otherwise the client keeps one task in flight per worker, pinned to it, and gives a worker
  its next grid point when its last one finished (a task whose worker died runs elsewhere,
  possibly next to another one: timings of a sweep that lost a worker deserve a second look).

Results come back in grid order whatever the order of completion. ``func`` and the points
must be picklable (a module-level function); the work counts a point measures do not depend on
where it runs, only its times do.
"""
import uuid

from ..errors import InputError, InputTypeError
from .cluster import require_distributed, worker_addresses
from .faults import GridTaskError

__all__ = ["map_grid", "GridTask", "TIMING_RESOURCE"]

TIMING_RESOURCE = "timing"


class GridTask:
    """``GridTask(func, *args, **kwargs)(point)`` is ``func(*args, *point, **kwargs)``: a
    picklable task for ``map_grid`` when ``func`` is a module-level function, e.g.
    ``GridTask(measure_point, engines, steps=3)`` for points (m, n, d)."""

    def __init__(self, func, *args, **kwargs):
        if not callable(func):
            raise InputTypeError(f"func must be callable, got {func!r}")
        self.func, self.args, self.kwargs = func, args, kwargs

    def __call__(self, point):
        return self.func(*self.args, *point, **self.kwargs)

    def __repr__(self):
        return f"GridTask({getattr(self.func, '__qualname__', self.func)!r})"


def _has_timing_resource(client):
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return bool(workers) and all(w.get("resources", {}).get(TIMING_RESOURCE, 0) >= 1
                                 for w in workers)


def _failed(index, point, exc):
    return GridTaskError(f"grid point {index} ({point!r}) failed: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())}", index=index)


def map_grid(points, func, client, progress=None, mode="auto"):
    """``[func(p) for p in points]``, each call a task on the cluster of ``client``, at most
    one per worker at a time; results in the order of ``points``. ``progress(done, total)``
    is called after each finished point. A failing point raises ``GridTaskError``.
    ``mode``: "resources", "pinned" or "auto" (resources when every worker has one)."""
    distributed = require_distributed()
    if not callable(func):
        raise InputTypeError(f"func must be callable, got {func!r}")
    if not isinstance(client, distributed.Client):
        raise InputTypeError(f"client must be a distributed.Client, got "
                             f"{type(client).__name__}")
    if mode not in ("auto", "resources", "pinned"):
        raise InputError(f"mode must be 'auto', 'resources' or 'pinned', got {mode!r}")
    points = list(points)
    if not points:
        return []
    workers = worker_addresses(client)
    if not workers:
        raise InputError("the cluster has no workers to run the grid on")
    tag = uuid.uuid4().hex[:12]
    results = [None] * len(points)
    index = {}

    def submit(i, **where):
        fut = client.submit(func, points[i], pure=False, key=f"sparseadv-grid-{i}-{tag}",
                            **where)
        index[fut.key] = i
        return fut

    if mode == "auto":
        mode = "resources" if _has_timing_resource(client) else "pinned"
    elif mode == "resources" and not _has_timing_resource(client):
        raise InputError(f"mode='resources' needs a {TIMING_RESOURCE!r} resource on every "
                         f"worker (start them with --resources {TIMING_RESOURCE}=1)")
    if mode == "resources":
        pending = [submit(i, resources={TIMING_RESOURCE: 1}) for i in range(len(points))]
        queue, home = [], {}
    else:
        queue = list(range(len(points)))[::-1]
        home = {}
        pending = []
        for addr in workers[:len(points)]:
            fut = submit(queue.pop(), workers=[addr], allow_other_workers=True)
            home[fut.key] = addr
            pending.append(fut)
    with client.as_current():    # as_completed finds the client through get_client()
        done = 0
        ac = distributed.as_completed(pending)
        try:
            for fut in ac:
                i = index[fut.key]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - the task's own error, reported with i
                    raise _failed(i, points[i], exc) from exc
                done += 1
                if progress is not None:
                    progress(done, len(points))
                addr = home.pop(fut.key, None)
                if queue and addr is not None:
                    nxt = submit(queue.pop(), workers=[addr], allow_other_workers=True)
                    home[nxt.key] = addr
                    ac.add(nxt)
        except BaseException:
            for fut in list(ac.futures):
                fut.cancel()
            raise
    return results
