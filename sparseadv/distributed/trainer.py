"""``ShardedTrainer``: adversarial training with the neurons split over Dask workers.

docs/design.md §8. The m neurons split into k contiguous shards; shard s lives in a Dask actor
(``shard.ShardWorker``) on its own worker, with its own engine over its rows only. The client
runs the attack loop: each pass sends the current points to every shard and sums the partial
outputs f_s and input gradients H_s = ∇_x f_s in shard order (deterministic), then forms the
attack's gradient H·(f − y) as a single-process engine does. The weight step is local: the
client sends the coefficients (f_i − y_i)·m^{-1/2}/n and each shard updates its own rows.
Per pass, O(n·d) numbers cross per shard; W crosses only at construction (each shard receives
its rows once), in ``gather()`` and in checkpoints.

Exactness: every shard's engine evaluates its neurons exactly as the single-process engine
does; only the order of the sum over neurons differs (partials per shard, then the sum of the
partials), so the weights equal ``AdversarialTrainer``'s to round-off (1e-12 relative in the
tests), for every engine and norm.

Faults: a shard that fails (its worker process died, its engine raised) raises ``ShardError``
naming the shard, its worker, the phase and the last completed iteration. No half-applied step:
the weight step is sent only after every shard's passes succeeded, and a shard keeps the
previous values of the rows it changed until the next iteration starts, so when one shard
fails while applying the step, the others roll back. After a ``ShardError`` the trainer
refuses further steps; ``gather()`` still works when every worker is alive (it then returns
the weights of the last completed iteration); resume from a checkpoint otherwise
(``fit(checkpoint=...)``, ``from_checkpoint``).
"""
import time
import uuid

import numpy as np

from .._validation import check_Xy
from ..attacks import PGD
from ..engines import ENGINES
from ..errors import DivergenceError, InputError, InputTypeError
from ..network import ShiftedReLUNet
from ..stepsize import auto_lr
from ..trainer import RECORD_FIELDS
from . import autolr
from .checkpoint import CheckpointMixin
from .cluster import require_distributed, worker_addresses
from .faults import ShardError
from .shard import ShardWorker

__all__ = ["ShardedTrainer", "SHARDED_RECORD_FIELDS", "split_rows"]

SHARDED_RECORD_FIELDS = RECORD_FIELDS + ("bytes_sent", "bytes_received", "seconds_waiting")


def split_rows(m, shards):
    """Contiguous row ranges [(lo, hi), ...]: ``shards`` is a count k (sizes differ by at most
    one, larger first) or a sequence of shard sizes summing to m."""
    if isinstance(shards, (bool, np.bool_)):
        raise InputTypeError(f"shards must be a positive integer or a list of sizes, got "
                             f"{shards!r}")
    if isinstance(shards, (int, np.integer)):
        k = int(shards)
        if k < 1:
            raise InputError(f"shards must be a positive integer, got {k}")
        if k > m:
            raise InputError(f"shards={k} is more than the network's m={m} neurons (every "
                             f"shard needs at least one)")
        sizes = [m // k + (s < m % k) for s in range(k)]
    else:
        try:
            sizes = [int(v) for v in shards]
        except (TypeError, ValueError):
            raise InputTypeError(f"shards must be a positive integer or a list of sizes, got "
                                 f"{shards!r}") from None
        if not sizes or min(sizes) < 1 or sum(sizes) != m:
            raise InputError(f"shard sizes must be positive and sum to m={m}, got {sizes}")
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(bounds[s]), int(bounds[s + 1])) for s in range(len(sizes))]


def _payload(obj):
    """Bytes of the arrays in a message (nested tuples/lists/dicts); scalars count 0."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_payload(v) for v in obj)
    if isinstance(obj, dict):
        return sum(_payload(v) for v in obj.values())
    return 0


def _sum_in_order(parts):
    """parts[0] + parts[1] + ... (shard order, so the result is deterministic)."""
    total = np.array(parts[0], dtype=parts[0].dtype, copy=True)
    for part in parts[1:]:
        total += part
    return total


class _ShardedPasses:
    """What the attack sees as its engine: each ``input_gradient`` is one pass over all
    shards (partial outputs and input gradients summed in shard order)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def input_gradient(self, Xt, y, pass_index=None):
        parts = self.trainer._call("input_pass", Xt, pass_index,
                                   phase=f"attack pass {pass_index} (of 0 .. "
                                         f"{self.trainer.attack.steps - 1})")
        f = _sum_in_order([p[0] for p in parts])
        H = _sum_in_order([p[1] for p in parts])
        H *= (f - y)[:, None]
        return H, f


class ShardedTrainer(CheckpointMixin):
    """Full-batch adversarial training with the neurons sharded over Dask workers.

    The API of ``AdversarialTrainer`` (``step``, ``fit``, records, ``lr_``, ``iterations_``)
    plus ``gather()`` for the trained network; the network passed in is copied to the shards
    and not modified.

    Parameters
    ----------
    net : ShiftedReLUNet
    attack : PGD or FGSM
        Runs on the client; its random start state advances there as in a single process.
    lr : float > 0 or "auto"
        As for ``AdversarialTrainer`` ("auto": n / λ_max of the NTK Gram matrix at the first
        step, from the shards' Gram matrices summed; equal to the single process's value).
    engine : {"dense", "tree", "certified"}
        Every shard runs this engine over its own rows.
    shards : int or sequence of ints
        The number k of shards (contiguous, sizes differ by at most one) or their sizes.
    client : distributed.Client
        Shard s runs on the s-th worker (sorted by address) unless ``workers`` is given.
    workers : sequence of worker addresses, optional
    call_timeout : float, optional
        Seconds to wait for any one shard call before declaring the shard failed (default:
        no limit; a worker that dies is detected without it).
    **engine_options
        Passed to every shard's engine.
    """

    def __init__(self, net, attack, lr, engine="dense", shards=2, client=None, workers=None,
                 call_timeout=None, **engine_options):
        if not isinstance(net, ShiftedReLUNet):
            raise InputTypeError(f"net must be a ShiftedReLUNet, got {type(net).__name__}")
        if not isinstance(attack, PGD):
            raise InputTypeError(f"attack must be a sparseadv PGD or FGSM attack, got "
                                 f"{type(attack).__name__}")
        if not isinstance(engine, str) or engine not in ENGINES:
            raise InputError(f"engine must be one of {sorted(ENGINES)} (by name: each shard "
                             f"builds its own), got {engine!r}")
        self.lr, self.lr_ = self._check_lr(lr)
        self.bounds = split_rows(net.m, shards)
        self.attack, self.engine_name = attack, engine
        self.engine_options = dict(engine_options)
        self.call_timeout = call_timeout
        self.m, self.d, self.b = net.m, net.d, net.b
        self.a = net.a.copy()
        self.scale = net.scale
        self.iterations_ = 0
        self._X = self._y = None
        self._records = []
        self._expect_data = None
        self._failed = None
        self._actors = []
        self._futures = []
        self._passes = _ShardedPasses(self)
        self.client = self._get_client(client)
        self.workers = self._pick_workers(workers)
        self._start_shards(net)

    # -- set-up ----------------------------------------------------------------------------

    @staticmethod
    def _check_lr(lr):
        if isinstance(lr, str):
            if lr != "auto":
                raise InputError(f"lr must be a positive float or 'auto', got {lr!r}")
            return "auto", None
        from .._validation import check_real
        lr = check_real("lr", lr, low=0.0, low_inclusive=False)
        return lr, lr

    @staticmethod
    def _get_client(client):
        distributed = require_distributed()
        if client is None:
            try:
                return distributed.get_client()
            except ValueError:
                raise InputError("client: no Dask client is running; pass client=... (see "
                                 "sparseadv.distributed.Cluster)") from None
        if not isinstance(client, distributed.Client):
            raise InputTypeError(f"client must be a distributed.Client, got "
                                 f"{type(client).__name__}")
        return client

    def _pick_workers(self, workers):
        k = len(self.bounds)
        available = worker_addresses(self.client)
        if workers is None:
            workers = available
        else:
            workers = list(workers)
            unknown = [w for w in workers if w not in available]
            if unknown or len(set(workers)) != len(workers):
                raise InputError(f"workers must be distinct addresses of the cluster's "
                                 f"workers; not in the cluster or repeated: {unknown or workers}")
        if len(workers) < k:
            raise InputError(f"the cluster has {len(workers)} worker"
                             f"{'s' * (len(workers) != 1)}, fewer than the {k} shards "
                             f"(one worker per shard)")
        return list(workers[:k])

    def _start_shards(self, net):
        tag = uuid.uuid4().hex[:12]
        try:
            for s, ((lo, hi), addr) in enumerate(zip(self.bounds, self.workers)):
                rows = self.client.scatter(np.ascontiguousarray(net.W[lo:hi]),
                                           workers=[addr], direct=True)
                self._futures.append(self.client.submit(
                    ShardWorker, rows, net.a[lo:hi], net.b, net.m, self.engine_name,
                    self.engine_options, actor=True, workers=[addr],
                    allow_other_workers=False, pure=False, key=f"sparseadv-shard-{s}-{tag}"))
            for s, fut in enumerate(self._futures):
                try:
                    self._actors.append(fut.result(timeout=self.call_timeout))
                except Exception as exc:  # noqa: BLE001
                    raise self._shard_error(s, "set-up", exc) from exc
        except BaseException:
            self.close()
            raise

    # -- one call on every shard -------------------------------------------------------------

    def _shard_error(self, s, phase, exc):
        lo, hi = self.bounds[s]
        done = self.iterations_
        # a lost worker shows as OSError (a call in flight) or "Worker holding Actor was lost"
        lost = isinstance(exc, OSError) or "was lost" in str(exc)
        cause = f"{type(exc).__name__}: {exc}"
        cause = f"its worker died or cannot be reached ({cause})" if lost else cause
        where = (f"{phase} after iteration {done}" if phase in ("set-up", "gather")
                 else f"{phase} of iteration {done + 1}")
        msg = (f"shard {s} of {len(self.bounds)} (neurons {lo}:{hi}, worker "
               f"{self.workers[s]}) failed during {where}: {' '.join(str(cause).split())}; "
               f"the last completed iteration is {done} and no part of iteration {done + 1} "
               f"was applied")
        return ShardError(msg, shard=s, worker=self.workers[s], phase=phase, iteration=done,
                          cause=exc)

    def _call(self, method, *args, phase):
        """``method(*args)`` on every shard at once; the results in shard order. The first
        failing shard (in shard order) raises ShardError after every call has ended."""
        if self._failed is not None:
            raise self._failed
        t0 = time.perf_counter()
        futures = []
        with self.client.as_current():     # actors find their client through get_client()
            for actor in self._actors:
                try:
                    futures.append(getattr(actor, method)(*args))
                except Exception as exc:  # noqa: BLE001 - an actor known to be lost
                    futures.append(exc)
        results, failed = [], None
        try:
            for s, fut in enumerate(futures):
                try:
                    if isinstance(fut, Exception):
                        raise fut
                    results.append(fut.result(timeout=self.call_timeout))
                except Exception as exc:  # noqa: BLE001 - a lost worker raises several types
                    results.append(None)
                    failed = failed or (s, exc)
        except BaseException:       # KeyboardInterrupt while waiting: the step must not stay
            if method == "weight_step":
                self._roll_back([True] * len(futures))   # queued after the step on each shard
            raise
        self._wait += time.perf_counter() - t0
        self._sent += _payload(args) * len(futures)
        self._received += sum(_payload(r) for r in results)
        if failed is not None:
            if method == "weight_step":
                self._roll_back(results)
                if isinstance(failed[1], DivergenceError):   # W unchanged on every shard
                    raise DivergenceError(f"shard {failed[0]}: {failed[1]}") from failed[1]
            self._failed = self._shard_error(failed[0], phase, failed[1])
            raise self._failed
        return results

    def _on_shard(self, s, method, *args):
        """``method(*args)`` on shard s alone, waited for (fault injection in the tests)."""
        with self.client.as_current():
            return getattr(self._actors[s], method)(*args).result(timeout=self.call_timeout)

    def _roll_back(self, results):
        """Undo the weight step on the shards that applied it (best effort: a shard that
        cannot be reached has lost its state anyway)."""
        undo = []
        with self.client.as_current():
            for s, r in enumerate(results):
                if r is not None:
                    try:
                        undo.append(self._actors[s].rollback())
                    except Exception:  # noqa: BLE001 - an actor known to be lost
                        pass
        for fut in undo:
            try:
                fut.result(timeout=self.call_timeout)
            except Exception:  # noqa: BLE001
                pass

    def _send_data(self, X, y):
        if self._X is not None and (X is self._X or (np.array_equal(X, self._X)
                                                     and np.array_equal(y, self._y))):
            return
        self._check_data(X, y)
        self._call("set_data", X, y, phase="sending the training points")
        self._X, self._y = X.copy(), y.copy()

    # -- training ------------------------------------------------------------------------------

    def step(self, X, y):
        """One adversarial iteration on (X, y); returns its record (a dict)."""
        X, y = check_Xy(X, y, self.d)
        return self._step(X, y)

    def _step(self, X, y):
        self._wait = 0.0
        self._sent = self._received = 0
        n = X.shape[0]
        t0 = time.perf_counter()
        self._send_data(X, y)
        if self.lr_ is None:
            self.lr_ = self._auto_lr(X)
        random_state = self.attack._random_state()    # restored if the iteration fails
        done, stepped = self.iterations_, False
        try:
            threat = self.attack.threat_model
            final = threat.steps                # the pass index of the final points
            self._call("begin", threat, phase="the start")
            t1 = time.perf_counter()
            Xt = self.attack.run(X, y, self._passes)
            t2 = time.perf_counter()
            parts = self._call("forward_pass", Xt, final, phase="the forward pass")
            f = _sum_in_order([p[0] for p in parts])
            fired = _sum_in_order([p[1] for p in parts])
            resid = f - y
            loss = 0.5 * float(np.dot(resid, resid)) / n
            if not np.isfinite(loss):
                raise DivergenceError(f"the robust loss is not finite (lr={self.lr_:g}): the "
                                      f"weights have diverged; the weights are unchanged")
            t3 = time.perf_counter()
            stepped = True
            counters = self._call("weight_step", resid * (self.scale / n), self.lr_, final,
                                  phase="the weight step")
            # the last statement of the step: an interrupt before it (also one in _call's
            # bookkeeping after the shards stepped) undoes the shards' revocable step below
            self.iterations_ = done + 1
        except BaseException as exc:
            if stepped and not isinstance(exc, Exception):  # _call handles a shard's failure
                self._roll_back([True] * len(self._actors))   # idempotent on each shard
            self.attack._set_random_state(random_state)
            raise
        t4 = time.perf_counter()
        record = {"loss": loss, "fired_mean": float(fired.mean()), "fired_max": int(fired.max())}
        record.update({key: sum(c[key] for c in counters) for key in counters[0]})
        # full batch: every iteration is one epoch of n points (the trainer's record fields)
        record.update(lr=self.lr_, batch_size=n, epoch=self.iterations_ - 1,
                      seconds_attack=t2 - t1, seconds_forward=t3 - t2,
                      seconds_backward=t4 - t3, seconds=t4 - t0, bytes_sent=self._sent,
                      bytes_received=self._received, seconds_waiting=self._wait)
        self._records.append({key: record[key] for key in RECORD_FIELDS})
        return record

    def _auto_lr(self, X):
        if autolr.uses_gram(X.shape[0]):
            counts = self._call("gram_counts", X, phase="the automatic learning rate")
            return autolr.lr_from_counts(_sum_in_order(counts), X, self.m)
        return auto_lr(self.gather(), X)

    # fit(), from_checkpoint() and the checkpoint writer: see checkpoint.CheckpointMixin

    # -- results and clean-up ----------------------------------------------------------------

    def gather(self):
        """The whole trained network (a new ShiftedReLUNet; W crosses the network once)."""
        failed, self._failed = self._failed, None    # gathering is allowed after a failure
        try:
            self._wait = 0.0
            self._sent = self._received = 0
            parts = self._call("weights", phase="gather")
        finally:
            self._failed = self._failed or failed
        return ShiftedReLUNet.from_arrays(np.concatenate(parts), self.a, self.b)

    def close(self):
        """Release the shards (their actors and memory on the workers); idempotent."""
        futures, self._futures, self._actors = self._futures, [], []
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:  # noqa: BLE001 - the cluster may already be gone
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        sizes = [hi - lo for lo, hi in self.bounds]
        return (f"ShardedTrainer(m={self.m}, d={self.d}, engine={self.engine_name!r}, "
                f"shards={sizes}, iterations={self.iterations_})")
