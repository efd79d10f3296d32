"""Neuron-sharded training on a LocalCluster of worker processes against the single process.

One cluster (3 single-threaded worker processes) serves the whole module; sizes are small so
that the module runs in about a minute on 2 busy cores.
"""
import logging
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet  # noqa: E402
from sparseadv.distributed import (Cluster, GridTaskError, ShardedTrainer,  # noqa: E402
                                   GridTask, ShardError, map_grid, split_rows)
from sparseadv.errors import InputError, InputTypeError  # noqa: E402

M, N, D, ITERS = 90, 24, 4, 3
SILENT = slice(20, 45)      # the rows of the middle shard of UNEQUAL: nothing fires there
UNEQUAL = [20, 25, 45]


@pytest.fixture(scope="module")
def client():
    # two threads per worker, so that map_grid's one-task-per-worker rule is what keeps two
    # grid points apart (the shards use one actor thread each either way)
    cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=2, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR,
                                       resources={"timing": 1})
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(3, timeout=120)
    yield client
    client.close()
    cluster.close()


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(X[:, 0] > 0, 1.0, -1.0)
    net = ShiftedReLUNet(M, D, b=0.6, seed=seed + 1)
    net.W[SILENT] *= 0.01         # |<w, x~>| <= 0.01 |w| (1 + eps) < b: never fires
    return net, X, y


def assert_weights_close(W, ref):
    np.testing.assert_allclose(W, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def reference(net, X, y, attack, lr, engine, iterations=ITERS):
    trainer = AdversarialTrainer(net.copy(), attack, lr=lr, engine=engine)
    records = [trainer.step(X, y) for _ in range(iterations)]
    return trainer, records


@pytest.mark.parametrize("engine", ["dense", "tree", "certified"])
@pytest.mark.parametrize("norm", [2, np.inf])
@pytest.mark.parametrize("shards", [1, 2, UNEQUAL], ids=["1", "2", "unequal3"])
def test_weights_equal_single_process(client, engine, norm, shards):
    net, X, y = problem()
    W0 = net.W.copy()
    ref, ref_records = reference(net, X, y, PGD(0.1, 3, norm=norm), "auto", engine)
    with ShardedTrainer(net, PGD(0.1, 3, norm=norm), "auto", engine=engine, shards=shards,
                        client=client) as tr:
        records = [tr.step(X, y) for _ in range(ITERS)]
        gathered = tr.gather()
    assert tr.lr_ == ref.lr_              # integer Gram counts: the same bits
    assert_weights_close(gathered.W, ref.net.W)
    assert np.array_equal(net.W, W0)     # the caller's network is not modified
    assert np.array_equal(gathered.a, net.a) and gathered.b == net.b
    for rec, want in zip(records, ref_records):
        assert rec["fired_pairs"] == want["fired_pairs"]
        assert rec["fired_max"] == want["fired_max"]
        assert rec["loss"] == pytest.approx(want["loss"], rel=1e-12)
        if engine == "dense":
            assert rec["inner_products"] == want["inner_products"]


def test_silent_shard_and_random_start(client):
    """A shard where nothing fires, fixed lr, l2 attack with a random start (its random state
    advances on the client exactly as in the single process)."""
    net, X, y = problem(3)
    assert net.fired_counts(X).sum() > 0
    assert ShiftedReLUNet.from_arrays(net.W[SILENT], net.a[SILENT], net.b).fired_counts(X).sum() == 0
    ref, _ = reference(net, X, y, PGD(0.1, 2, random_start=True, seed=5), 0.5, "certified")
    with ShardedTrainer(net, PGD(0.1, 2, random_start=True, seed=5), 0.5, engine="certified",
                        shards=UNEQUAL, client=client) as tr:
        for _ in range(ITERS):
            tr.step(X, y)
        W = tr.gather().W
    assert_weights_close(W, ref.net.W)
    assert np.array_equal(W[SILENT], net.W[SILENT])


def test_bytes_per_iteration(client):
    """Only O(n d) numbers cross per pass: the counted payload is exactly the table of
    docs/distributed.md, independent of m."""
    net, X, y = problem()
    K, k = 3, 3
    with ShardedTrainer(net, PGD(0.1, K), 0.5, shards=k, client=client) as tr:
        first = tr.step(X, y)
        later = tr.step(X, y)
    sent = k * 8 * ((K + 1) * N * D + N)
    received = k * 8 * (K * (N + N * D) + 2 * N)
    assert later["bytes_sent"] == sent and later["bytes_received"] == received
    assert first["bytes_sent"] == sent + k * 8 * (N * D + N)    # the training points, once
    assert 0 < later["seconds_waiting"] <= later["seconds"]


def test_fit_history_and_callback(client):
    net, X, y = problem()
    seen = []

    def callback(rec):
        seen.append(rec)
        return len(seen) == 3

    with ShardedTrainer(net, PGD(0.1, 2), 0.5, shards=2, client=client) as tr:
        hist = tr.fit(X, y, 5, progress=True, callback=callback)
        assert tr.iterations_ == 3
    assert len(hist["loss"]) == 3 and len(hist["bytes_sent"]) == 3
    assert _actors_left(client) == 0           # close() released the shards on the workers
    assert list(hist["loss"]) == [r["loss"] for r in seen]
    assert set(hist) >= {"inner_products", "seconds_waiting", "bytes_received", "lr"}


def _actors_left(client, wait=10.0):
    import time
    deadline = time.monotonic() + wait
    while True:
        left = sum(client.run(lambda dask_worker: len(dask_worker.state.actors)).values())
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_split_rows():
    assert split_rows(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_rows(10, [1, 9]) == [(0, 1), (1, 10)]
    with pytest.raises(InputError, match="more than the network's m=4"):
        split_rows(4, 5)
    with pytest.raises(InputError, match="sum to m=10"):
        split_rows(10, [5, 4])
    with pytest.raises(InputError):
        split_rows(10, [10, 0])
    with pytest.raises(InputTypeError):
        split_rows(10, True)


def _scheduler_tasks(client):
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def test_bad_input_clear_errors(client):
    net, X, y = problem()
    before = _scheduler_tasks(client)
    with pytest.raises(InputError, match="fewer than the 4 shards"):
        ShardedTrainer(net, PGD(0.1, 2), 0.5, shards=4, client=client)
    with pytest.raises(InputError, match="more than the network's m=90"):
        ShardedTrainer(net, PGD(0.1, 2), 0.5, shards=91, client=client)
    with pytest.raises(InputError, match="engine must be one of"):
        ShardedTrainer(net, PGD(0.1, 2), 0.5, engine="fast", client=client)
    with pytest.raises(InputTypeError, match="client must be"):
        ShardedTrainer(net, PGD(0.1, 2), 0.5, client="tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="lr must be"):
        ShardedTrainer(net, PGD(0.1, 2), "fast", client=client)
    assert _scheduler_tasks(client) == before     # nothing was started


def test_unreachable_or_wrong_scheduler():
    for address, pattern in [("tcp://127.0.0.1:1", "no Dask scheduler answered"),
                             ("nonsense://x", "not a Dask address"),
                             ("localhost", "not a Dask address")]:
        with pytest.raises(InputError, match=pattern) as info:
            Cluster(scheduler=address, timeout=0.5)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="exactly one of"):
        Cluster()
    with pytest.raises(InputError, match="positive number of workers"):
        Cluster(local_cluster=0)


def test_scheduler_with_too_few_workers(client):
    with pytest.raises(InputError, match="has 3 workers, fewer than the 5 shards"):
        Cluster(scheduler=client.scheduler.address, min_workers=5)
    with Cluster(scheduler=client.scheduler.address, min_workers=3) as cl:
        assert len(cl.client.scheduler_info()["workers"]) == 3


def test_distributed_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed -> ImportError
    net, X, y = problem()
    with pytest.raises(InputError, match=r"pip install 'sparseadv\[distributed\]'"):
        Cluster(local_cluster=2)
    with pytest.raises(InputError, match="not installed"):
        ShardedTrainer(net, PGD(0.1, 2), 0.5, shards=2)


def test_shard_error_when_engine_raises_and_rollback(client):
    """A failure while applying the step (after shards 0 and 1 applied theirs) rolls them
    back: gather() gives the weights of the last completed iteration, and the trainer refuses
    further steps."""
    net, X, y = problem()
    ref, _ = reference(net, X, y, PGD(0.1, 2), 0.5, "tree", iterations=2)
    tr = ShardedTrainer(net, PGD(0.1, 2), 0.5, engine="tree", shards=3, client=client)
    try:
        tr.step(X, y)
        tr.step(X, y)
        tr._on_shard(2, "inject_fault", "apply")
        with pytest.raises(ShardError) as info:
            tr.step(X, y)
        err = info.value
        assert (err.shard, err.iteration, err.applied) == (2, 2, False)
        assert "shard 2 of 3" in str(err) and "last completed iteration is 2" in str(err)
        assert "injected fault in apply" in str(err)
        assert_weights_close(tr.gather().W, ref.net.W)
        with pytest.raises(ShardError):
            tr.step(X, y)
    finally:
        tr.close()


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def _worker_and_overlap(x):
    """(worker, whether another grid point ran on this worker at the same time, x)."""
    import os
    import tempfile
    import time
    from distributed import get_worker
    marker = os.path.join(tempfile.gettempdir(), f"sparseadv-grid-{os.getpid()}-busy")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        time.sleep(0.1)
        return get_worker().address, True, x
    time.sleep(0.1)
    os.close(fd)
    os.unlink(marker)
    return get_worker().address, False, x


@pytest.mark.parametrize("mode", ["resources", "pinned"])
def test_map_grid_order_and_one_task_per_worker(client, mode):
    assert map_grid(range(7), _square, client, mode=mode) == [x * x for x in range(7)]
    assert map_grid([], _square, client, mode=mode) == []
    out = map_grid(range(12), _worker_and_overlap, client, mode=mode)
    assert [o[2] for o in out] == list(range(12))
    assert not any(o[1] for o in out)           # never two points at once on one worker
    assert len({o[0] for o in out}) >= 2
    with pytest.raises(GridTaskError, match="grid point 3 .*ValueError: three"):
        map_grid(range(5), _fail_on_three, client, mode=mode)


def test_map_grid_overlap_detector_works(client):
    """Without map_grid's rule two threads of one worker do run grid points together (so the
    test above can fail)."""
    addr = sorted(client.scheduler_info()["workers"])[0]
    futs = [client.submit(_worker_and_overlap, i, workers=[addr], pure=False) for i in range(4)]
    assert any(o[1] for o in client.gather(futs))


def _point_sum(scale, m, n, d, offset=0):
    return scale * (m + n + d) + offset


def test_map_grid_with_grid_task(client):
    points = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    task = GridTask(_point_sum, 10, offset=1)
    assert map_grid(points, task, client) == [10 * sum(p) + 1 for p in points]


def test_map_grid_bad_input(client):
    with pytest.raises(InputTypeError, match="func must be callable"):
        map_grid([1], 3, client)
    with pytest.raises(InputTypeError, match="client must be"):
        map_grid([1], _square, "tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="mode must be"):
        map_grid([1], _square, client, mode="fast")


def test_distributed_bench_tool(client, tmp_path, capsys):
    """tools/distributed_bench.py: the table's rows, the bytes of the communication table and
    weights equal to the single process's."""
    import importlib.util
    import json
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "distributed_bench.py")
    spec = importlib.util.spec_from_file_location("distributed_bench", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "rows.json"
    n, d, K = 16, 4, 2
    assert tool.main(["--m", "128", "--n", str(n), "--d", str(d), "--steps", str(K),
                      "--iterations", "1", "--warmup", "1", "--engine", "tree",
                      "--scheduler", client.scheduler.address, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["single process, 2 threads", "1 shard", "2 shards"]
    for k, r in zip([1, 2], rows[1:]):
        assert r["mb_sent"] * 1e6 == pytest.approx(k * 8 * ((K + 1) * n * d + n))
        assert r["mb_received"] * 1e6 == pytest.approx(k * 8 * (K * n * (d + 1) + 2 * n))
        assert r["max_rel_diff"] <= 1e-12
    assert "| 2 shards |" in capsys.readouterr().out


def test_divergence_rolls_back_and_trainer_stays_usable(client):
    """A shard whose step gives non-finite weights (net.apply_step's DivergenceError) rolls
    the others back; the attack's random stream is restored, so a retry at a sane lr gives
    the single process's weights."""
    from sparseadv.errors import DivergenceError
    net, X, y = problem()
    ref, _ = reference(net, X, y, PGD(0.1, 2, random_start=True, seed=4), 0.5, "dense",
                       iterations=2)
    with ShardedTrainer(net, PGD(0.1, 2, random_start=True, seed=4), 0.5, shards=UNEQUAL,
                        client=client) as tr:
        tr.step(X, y)
        tr.lr_ = np.inf      # every shard's step is non-finite (inf * 0 = nan)
        with pytest.raises(DivergenceError, match="non-finite"):
            tr.step(X, y)
        assert tr.iterations_ == 1
        tr.lr_ = 0.5
        tr.step(X, y)
        assert_weights_close(tr.gather().W, ref.net.W)


class _Interrupt(BaseException):
    """Stands in for KeyboardInterrupt."""


def test_interrupt_after_the_shards_stepped_rolls_them_back(client, monkeypatch):
    """An interrupt that lands after every shard applied its revocable step, before the
    trainer counted the iteration (here: right after the weight step's results came back),
    undoes the shards' step and restores the random stream: a retry gives the single
    process's weights."""
    net, X, y = problem()
    attack = lambda: PGD(0.1, 2, random_start=True, seed=4)
    ref, _ = reference(net, X, y, attack(), 0.5, "dense", iterations=2)
    with ShardedTrainer(net, attack(), 0.5, shards=2, client=client) as tr:
        tr.step(X, y)
        real = tr._call

        def interrupted(method, *args, **kwargs):
            out = real(method, *args, **kwargs)
            if method == "weight_step":
                raise _Interrupt()
            return out
        monkeypatch.setattr(tr, "_call", interrupted)
        with pytest.raises(_Interrupt):
            tr.step(X, y)
        monkeypatch.undo()
        assert tr.iterations_ == 1
        tr.step(X, y)
        assert tr.iterations_ == 2
        assert_weights_close(tr.gather().W, ref.net.W)
