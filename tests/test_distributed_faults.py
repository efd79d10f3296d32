"""Killed workers, checkpoints and resuming, and the command line's distributed options.

The kills happen on a cluster of their own (``Cluster(local_cluster=2)``, which the test
closes); resuming runs on the module's cluster, a fresh one for the run being resumed.
"""
import json
import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from sparseadv import PGD, ShiftedReLUNet, cli, io  # noqa: E402
from sparseadv.distributed import Cluster, ShardedTrainer, ShardError  # noqa: E402
from sparseadv.errors import CheckpointError  # noqa: E402

M, N, D = 80, 20, 4
ITERS = 6


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    yield client
    client.close()
    cluster.close()


def problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(X[:, 1] > 0, 1.0, -1.0)
    return ShiftedReLUNet(M, D, b=0.6, seed=8), X, y


def attack():
    return PGD(0.1, 2, random_start=True, seed=9)


def assert_weights_close(W, ref):
    np.testing.assert_allclose(W, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


@pytest.fixture(scope="module")
def uninterrupted(client):
    net, X, y = problem()
    with ShardedTrainer(net, attack(), "auto", shards=2, client=client) as tr:
        tr.fit(X, y, ITERS, progress=False)
        return tr.gather().W


def _kill_during_fit(cluster, workers, tmp_path, how):
    """A fit with a checkpoint every 2 iterations whose shard 1 dies in iteration 4
    (``how``: "inside" = the worker process exits in the middle of attack pass 0;
    "outside" = SIGKILL from here between iterations 3 and 4). Returns the ShardError."""
    net, X, y = problem()
    tr = ShardedTrainer(net, attack(), "auto", shards=2, client=cluster.client, workers=workers)

    def callback(rec):
        if tr.iterations_ == 3:
            if how == "inside":
                tr._on_shard(1, "inject_fault", "input_pass", True)
            else:
                os.kill(tr._on_shard(1, "pid"), signal.SIGKILL)
                time.sleep(0.5)
        return False

    with pytest.raises(ShardError) as info:
        tr.fit(X, y, ITERS, progress=False, callback=callback, checkpoint=tmp_path,
               checkpoint_every=2)
    with pytest.raises(ShardError):          # the trainer refuses to go on
        tr.step(X, y)
    with pytest.raises(ShardError, match="shard 1 of 2 .* during gather after iteration 3"):
        tr.gather()                          # the dead shard's rows are gone
    tr.close()
    return info.value


def test_killed_worker_clear_error_and_resume(client, uninterrupted, tmp_path):
    with Cluster(local_cluster=3) as cl:
        # local clusters started by sparseadv advertise one timing resource per worker
        assert all(w["resources"] == {"timing": 1}
                   for w in cl.client.scheduler_info()["workers"].values())
        a, b, c = sorted(cl.client.scheduler_info()["workers"])
        errors = {how: _kill_during_fit(cl, workers, tmp_path / how, how)
                  for how, workers in [("inside", [a, b]), ("outside", [a, c])]}
    assert cl.client is None and cl.local is None    # everything it started is closed
    for how, err in errors.items():
        assert (err.shard, err.iteration, err.applied) == (1, 3, False)
        text = str(err)
        assert "shard 1 of 2" in text and "its worker died" in text and "\n" not in text
        assert "iteration 4" in text and "last completed iteration is 3" in text
        assert ("attack pass 0" if how == "inside" else "the start") in text
        _check_and_resume(client, uninterrupted, tmp_path / how)


def _check_and_resume(client, uninterrupted, path):
    # the checkpoint is intact: the one of iteration 2 (written before the kill)
    ckpt = io.load_checkpoint(path)
    assert ckpt["iteration"] == 2 and ckpt["W"].shape == (M, D)
    assert not [p for p in os.listdir(path) if p.endswith(".tmp")]
    # resume on a fresh cluster (another shard layout too): the same final weights
    net, X, y = problem()
    tr = ShardedTrainer.from_checkpoint(path, attack(), shards=[30, 50], client=client)
    with tr:
        assert tr.iterations_ == 2 and tr.lr_ == ckpt["lr"]
        tr.fit(X, y, ITERS - 2, progress=False, checkpoint=path)
        W = tr.gather().W
    assert_weights_close(W, uninterrupted)
    final = io.load_checkpoint(path)
    assert final["iteration"] == ITERS and len(final["history"]["loss"]) == ITERS
    assert_weights_close(final["W"], uninterrupted)


def test_from_checkpoint_refuses_another_run(client, tmp_path):
    net, X, y = problem()
    with ShardedTrainer(net, attack(), 0.5, shards=2, client=client) as tr:
        tr.fit(X, y, 1, progress=False, checkpoint=tmp_path)
    with pytest.raises(CheckpointError, match="eps=0.2"):
        ShardedTrainer.from_checkpoint(tmp_path, PGD(0.2, 2, random_start=True), client=client)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ShardedTrainer.from_checkpoint(tmp_path / "missing", attack(), client=client)
    with ShardedTrainer.from_checkpoint(tmp_path, attack(), client=client) as tr:
        with pytest.raises(CheckpointError, match="differ from the training points"):
            tr.step(X[::-1], y[::-1])


# --------------------------------------------------------------------------- command line

TRAIN = ["train", "--data", "sphere", "--n", "16", "--d", "3", "--m", "60", "--steps", "2",
         "--no-progress", "--checkpoint-every", "2"]


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _weights(path):
    with np.load(os.path.join(path, "weights.npz")) as z:
        return z["W"]


@pytest.mark.parametrize("first,second", [("single", "sharded"), ("sharded", "single")])
def test_cli_resume_across_modes(client, tmp_path, capsys, first, second):
    """A run started in one mode and resumed in the other ends with the weights of an
    uninterrupted single-process run (the checkpoint format is the same)."""
    sharded = ["--scheduler", client.scheduler.address, "--shards", "2"]
    before = len(client.scheduler_info()["workers"])
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    assert _run(TRAIN + ["--iterations", "4", "--out", ref], capsys)[0] == 0
    opts = {"single": [], "sharded": sharded}
    assert _run(TRAIN + ["--iterations", "2", "--out", run] + opts[first], capsys)[0] == 0
    code, out, _ = _run(["train", "--resume", run, "--iterations", "4", "--no-progress"]
                        + opts[second], capsys)
    assert code == 0 and json.loads(out)["iterations"] == 4
    assert_weights_close(_weights(run), _weights(ref))
    assert io.load_checkpoint(run)["iteration"] == 4
    assert len(client.scheduler_info()["workers"]) == before     # a remote cluster stays up


def _children():
    import psutil
    return {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE}


def test_cli_local_cluster(tmp_path, capsys):
    before = _children()
    out = str(tmp_path / "run")
    code, text, _ = _run(TRAIN + ["--iterations", "2", "--out", out, "--local-cluster", "2",
                                  "--shards", "2"], capsys)
    assert code == 0 and json.loads(text)["iterations"] == 2
    assert io.load_checkpoint(out)["W"].shape == (60, 3)
    deadline = time.monotonic() + 30
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _children() - before         # the local cluster's processes are gone


@pytest.mark.parametrize("extra,message", [
    (["--scheduler", "tcp://127.0.0.1:1", "--shards", "2"], "no Dask scheduler answered"),
    (["--scheduler", "nonsense://x"], "not a Dask address"),
    (["--scheduler", "SCHEDULER", "--shards", "3"], "has 2 workers, fewer than the 3 shards"),
    (["--shards", "2"], "--shards needs a cluster"),
    (["--local-cluster", "1", "--shards", "61"], "more than the --m 60 neurons"),
])
def test_cli_bad_input_one_line_exit_2(client, tmp_path, capsys, extra, message):
    extra = [client.scheduler.address if e == "SCHEDULER" else e for e in extra]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, _, err = _run(TRAIN + ["--out", str(tmp_path / "o")] + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparseadv: error:") and message in lines[0]


def test_cli_distributed_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code, _, err = _run(TRAIN + ["--out", str(tmp_path / "o"), "--local-cluster", "2"], capsys)
    assert code == 2 and "pip install 'sparseadv[distributed]'" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_scheduler_and_local_cluster_exclusive(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(TRAIN + ["--scheduler", "tcp://127.0.0.1:1", "--local-cluster", "2"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


# --------------------------------------------------------------------------- sweeps

def test_bench_on_a_cluster_gives_the_same_exponents(client, tmp_path, monkeypatch):
    """``sparseadv bench --scheduler`` (every grid point a task): the same rows but for the
    times, so the same fitted work exponents, as a local run."""
    from sparseadv.analysis import bench, fit, grid, tables
    from sparseadv.reproduce import report
    monkeypatch.setitem(grid.GRIDS, "tiny", report.make_configs("tiny")["e3"].grid())
    common = ["--grid", "tiny", "--engines", "dense,tree", "--repeats", "1", "--warmup", "0",
              "--quiet", "--no-plots"]
    assert bench.main(common + ["--out", str(tmp_path / "local")]) == 0
    assert bench.main(common + ["--out", str(tmp_path / "dask"),
                                "--scheduler", client.scheduler.address]) == 0
    local = tables.read_csv(tmp_path / "local" / "scaling.csv")
    remote = tables.read_csv(tmp_path / "dask" / "scaling.csv")
    counters = [q for q in fit.QUANTITIES if q != "seconds"]
    assert [(r["engine"], r["m"], r["n"], r["d"]) for r in remote] == \
        [(r["engine"], r["m"], r["n"], r["d"]) for r in local]
    for a, b in zip(local, remote):
        assert {q: a[q] for q in counters + ["lr", "loss"]} == \
            {q: b[q] for q in counters + ["lr", "loss"]}
    key = [(f["engine"], f["quantity"]) for f in fit.fit_rows(local)]
    assert key == [(f["engine"], f["quantity"]) for f in fit.fit_rows(remote)]
    for f_local, f_remote in zip(fit.fit_rows(local), fit.fit_rows(remote)):
        if f_local["quantity"] == "inner_products":
            assert f_local["fits"]["m"].exponent == f_remote["fits"]["m"].exponent
    md = (tmp_path / "dask" / "scaling.md").read_text()
    assert "every grid point a task on the scheduler given of 2 Dask workers" in md
    with pytest.raises(SystemExit):     # cluster options apply to runs only
        bench.main(["--from-asv", str(tmp_path), "--scheduler", client.scheduler.address,
                    "--out", str(tmp_path / "x")])


def test_reproduce_e3_on_a_cluster(client, tmp_path, monkeypatch, capsys):
    """``sparseadv reproduce --scheduler``: E3's grid runs as tasks, with the work counts of a
    local run (the report is written as usual)."""
    from sparseadv.analysis import tables
    from sparseadv.reproduce import report
    real = report.make_configs
    monkeypatch.setattr(report, "make_configs", lambda mode, seed=0: real("tiny", seed))
    rows = {}
    for name, extra in [("local", []), ("dask", ["--scheduler", client.scheduler.address])]:
        out = tmp_path / name
        assert cli.main(["reproduce", "--only", "e3", "--engines", "dense", "--no-progress",
                         "--out", str(out)] + extra) == 0
        assert (out / "REPORT.md").exists()
        rows[name] = tables.read_csv(out / "e3_cost.csv")
    assert [{k: r[k] for k in ("m", "n", "d", "inner_products", "fired_pairs", "lr")}
            for r in rows["dask"]] == \
        [{k: r[k] for k in ("m", "n", "d", "inner_products", "fired_pairs", "lr")}
         for r in rows["local"]]
