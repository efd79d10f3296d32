"""A training step is all or nothing for every engine (docs/design.md §6), and divergence is
refused with the last finite weights kept.

An exception is injected at each point inside ``AdversarialTrainer.step`` (before and after
each engine call, after the in-place weight update, inside the engines' own weight-change
bookkeeping); training then continues to the same number of completed steps, and must agree
with the dense engine from the same start to round-off. A SIGINT delivered at a random moment
to a training loop in a subprocess must do no harm either."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, _core
from sparseadv.engines import candidates
from sparseadv.errors import DivergenceError
from sparseadv.hsr import PartitionTree

ENGINES = [("dense", {}), ("tree", dict(leaf_size=4)), ("certified", {}),
           ("certified", dict(budget=0.0)), ("certified", dict(lazy=False, refine=False))]
STEPS = 6


class Injected(BaseException):
    """Stands in for KeyboardInterrupt (also a BaseException, not an Exception)."""


def _problem():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, rng.choice([-1.0, 1.0], 40)


def _trainer(engine, opts, attack=None):
    net = ShiftedReLUNet(300, 3, b=0.5, seed=2)
    return AdversarialTrainer(net, attack or PGD(0.1, 3), lr=2.0, engine=engine, **opts)


def _dense_reference(attack_factory=lambda: None):
    X, y = _problem()
    tr = _trainer("dense", {}, attack_factory())
    records = [tr.step(X, y) for _ in range(STEPS)]
    return tr.net.W.copy(), records


def _arm(monkeypatch, owner, name, when, on_call):
    """Make ``owner.name`` raise Injected at its ``on_call``-th call, before or after running."""
    real = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == on_call:
            raise Injected(name)
        out = real(*args, **kwargs)
        if when == "after" and calls[0] == on_call:
            raise Injected(name)
        return out
    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _injection_points(tr):
    """(owner, attribute) pairs reached inside one step of tr's engine."""
    eng = tr.engine
    points = [(eng, "begin_iteration"), (eng, "input_gradient"), (eng, "forward"),
              (eng, "weight_gradient"), (eng, "weights_changed"), (_core, "swap_scaled_rows")]
    if eng.name == "tree":
        points += [(PartitionTree, "update_from"), (PartitionTree, "forward_batch"),
                   (_core, "pm_weight_grad")]
    if eng.name == "certified":
        points += [(_core, "row_drift32"), (_core, "anchor_candidates"),
                   (_core, "csr_replace_rows"), (_core, "nm_pass"),
                   (_core, "copy_rows_norms32"), (candidates.AnchoredCandidates, "weights_moved")]
    return points


@pytest.mark.parametrize("engine,opts", ENGINES)
def test_exception_anywhere_in_a_step_leaves_no_trace(engine, opts, monkeypatch):
    X, y = _problem()
    W_ref, rec_ref = _dense_reference()
    for k in range(len(_injection_points(_trainer(engine, opts)))):
        for when in ("before", "after"):
            for on_call in (1, 2):
                tr = _trainer(engine, opts)
                owner, name = _injection_points(tr)[k]
                for _ in range(2):
                    tr.step(X, y)
                with monkeypatch.context() as mp:
                    calls = _arm(mp, owner, name, when, on_call)
                    # armed for up to two steps: work a step sets aside (the certified
                    # engine's re-anchoring) runs at the start of the next one
                    for _ in range(2):
                        W_before, done = tr.net.W.copy(), tr.iterations_
                        try:
                            tr.step(X, y)
                        except Injected:
                            assert np.array_equal(tr.net.W, W_before), (name, when, on_call)
                            assert tr.iterations_ == done
                            break
                assert calls[0] >= 1, f"{name} is not reached inside a step of {engine}"
                recs = []
                while tr.iterations_ < STEPS:
                    recs.append(tr.step(X, y))
                where = f"{engine}{opts}: {name} {when} call {on_call}"
                assert np.abs(tr.net.W - W_ref).max() <= 1e-9 * np.abs(W_ref).max(), where
                assert recs[-1]["fired_pairs"] == rec_ref[-1]["fired_pairs"], where
                assert recs[-1]["loss"] == pytest.approx(rec_ref[-1]["loss"], rel=1e-10), where


def test_random_start_stream_is_rolled_back(monkeypatch):
    """An interrupted step with a random start does not consume the attack's random numbers."""
    X, y = _problem()
    attack = lambda: PGD(0.1, 2, random_start=True, seed=5)
    W_ref, _ = _dense_reference(attack)
    for engine, opts in ENGINES:
        tr = _trainer(engine, opts, attack())
        tr.step(X, y)
        with monkeypatch.context() as mp:
            _arm(mp, tr.engine, "forward", "before", 1)
            with pytest.raises(Injected):
                tr.step(X, y)
        while tr.iterations_ < STEPS:
            tr.step(X, y)
        assert np.abs(tr.net.W - W_ref).max() <= 1e-9 * np.abs(W_ref).max(), engine


@pytest.mark.parametrize("engine,opts", ENGINES)
@pytest.mark.parametrize("lr,b", [(1e200, 0.5), (1.0, -1e300)])
def test_divergence_is_refused_and_keeps_the_last_finite_weights(engine, opts, lr, b):
    X, y = _problem()
    net = ShiftedReLUNet(300, 3, b=b, seed=2)
    tr = AdversarialTrainer(net, PGD(0.1, 3), lr=lr, engine=engine, **opts)
    for _ in range(6):
        W_before = net.W.copy()
        try:
            tr.step(X, y)
        except DivergenceError as exc:
            assert "lr" in str(exc) and "likely" in str(exc)
            assert np.array_equal(net.W, W_before) and np.isfinite(net.W).all()
            break
        assert np.isfinite(net.W).all()
    else:
        pytest.fail(f"lr={lr}, b={b}: no DivergenceError in 6 steps")
    done = tr.iterations_
    # the engine is consistent with the kept weights: a sane step from them equals dense
    W0 = net.W.copy()
    ref = ShiftedReLUNet.from_arrays(W0, net.a, 0.5)
    net.b = 0.5                                     # assigning b notifies the engine
    tr.lr = tr.lr_ = 1e-3
    if not np.abs(W0).max() < 1e100:
        return                                      # weights too large for a sane step
    rc = tr.step(X, y)
    rd = AdversarialTrainer(ref, PGD(0.1, 3), lr=1e-3).step(X, y)
    assert rc["fired_pairs"] == rd["fired_pairs"] and tr.iterations_ == done + 1
    assert np.abs(net.W - ref.W).max() <= 1e-9 * np.abs(ref.W).max()


def test_apply_step_refuses_non_finite_weights_directly():
    net = ShiftedReLUNet(20, 3, seed=0)
    W0 = net.W.copy()
    rows = np.array([1, 4], dtype=np.int64)
    with pytest.raises(DivergenceError, match="lr"):
        net.apply_step(rows, np.full((2, 3), 1e300), 1e300)
    assert np.array_equal(net.W, W0)
    G = np.ones((2, 3))
    net.apply_step(rows, G, 0.5)
    W0[rows] -= 0.5
    assert np.array_equal(net.W, W0)


@pytest.mark.parametrize("engine,opts", ENGINES)
def test_interrupt_right_after_the_commit_keeps_the_step(engine, opts, monkeypatch):
    # an exception between apply_step's return and the trainer's bookkeeping: the weights
    # moved, so the step stands (counted, the attack's random stream not rewound); before
    # this was handled the trainer rewound the stream and did not count the step, and the
    # run drifted one step out of line with a run that was never interrupted
    X, y = _problem()
    attack = lambda: PGD(0.1, 3, random_start=True, seed=5)
    W_ref, rec_ref = _dense_reference(attack)
    tr = _trainer(engine, opts, attack())
    tr.step(X, y)
    with monkeypatch.context() as mp:
        _arm(mp, ShiftedReLUNet, "apply_step", "after", 1)
        with pytest.raises(Injected):
            tr.step(X, y)
    assert tr.iterations_ == 2 and tr.net.steps_applied_ == 2
    recs = [tr.step(X, y) for _ in range(STEPS - 2)]
    assert np.abs(tr.net.W - W_ref).max() <= 1e-9 * np.abs(W_ref).max()
    assert recs[-1]["loss"] == pytest.approx(rec_ref[-1]["loss"], rel=1e-10)


_SIGINT_SETUP = r"""
import numpy as np
from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet
rng = np.random.default_rng(0)
X = rng.standard_normal((200, 3)); X /= np.linalg.norm(X, axis=1, keepdims=True)
y = rng.choice([-1.0, 1.0], 200)
def trainer(name):
    return AdversarialTrainer(ShiftedReLUNet(3000, 3, seed=1), PGD(0.1, 3), lr=5.0,
                              engine=name)
"""

_SIGINT_CHILD = _SIGINT_SETUP + r"""
import signal
import sys
engine, steps, cap, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# a process started in the background by a non-interactive shell inherits SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler: install it, so the test does not depend
# on how the test run itself was started
signal.signal(signal.SIGINT, signal.default_int_handler)
tr = trainer(engine)
interrupted = 0
ready = False
while True:
    try:
        if not ready:
            ready = True
            print("ready", flush=True)
        # train until the signal has come (up to cap steps) and at least ``steps`` steps
        while tr.iterations_ < steps or (not interrupted and tr.iterations_ < cap):
            tr.step(X, y)
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # a late signal: nothing to test
        break
    except KeyboardInterrupt:
        interrupted += 1
np.save(out, tr.net.W)
print(interrupted, tr.iterations_, flush=True)
"""


@pytest.mark.parametrize("engine", ["tree", "certified"])
def test_sigint_at_a_random_moment_does_no_harm(engine, tmp_path):
    scope = {}
    exec(_SIGINT_SETUP, scope)
    ref = scope["trainer"]("dense")
    ref_W = {0: ref.net.W.copy()}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = np.random.default_rng(7)
    hit = 0
    for run in range(3):
        out = str(tmp_path / f"W{run}.npy")
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGINT_CHILD, engine, "20", "2000", out], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        interrupted, iterations = map(int, stdout.split())
        while ref.iterations_ < iterations:             # dense, as many completed steps
            ref.step(scope["X"], scope["y"])
            ref_W[ref.iterations_] = ref.net.W.copy()
        W, Wd = np.load(out), ref_W[iterations]
        assert np.abs(W - Wd).max() <= 1e-9 * np.abs(Wd).max(), (engine, run, iterations)
        hit += interrupted > 0
    assert hit == 3                      # the child trains until the signal has come


def test_consumed_step_same_bits_and_backup_in_G():
    # apply_step(consume=True) steps with the same bits as the copying path and leaves the
    # previous rows in G; on a failure after the swap it restores W from G
    net = ShiftedReLUNet(50, 3, seed=3)
    ref = net.copy()
    rng = np.random.default_rng(0)
    rows = np.array([0, 7, 8, 49], dtype=np.int64)
    G = rng.standard_normal((4, 3))
    old = net.W[rows].copy()
    ref.apply_step(rows, G.copy(), 0.37)
    net.apply_step(rows, G, 0.37, consume=True)
    assert np.array_equal(net.W, ref.W) and np.array_equal(G, old)
    everything = np.arange(50, dtype=np.int64)
    G = rng.standard_normal((50, 3))
    W0 = net.W.copy()
    with pytest.raises(DivergenceError):
        net.apply_step(everything, np.where(np.arange(50)[:, None] == 3, np.nan, G),
                       1.0, consume=True)
    assert np.array_equal(net.W, W0)
    # a G that is not float64 is converted: the caller's array is left as it was
    G32 = G[:4].astype(np.float32)
    ref = net.copy()
    net.apply_step(rows, G32, 1.0, consume=True)
    ref.apply_step(rows, G32, 1.0)
    assert np.array_equal(net.W, ref.W) and np.array_equal(G32, G[:4].astype(np.float32))


@pytest.mark.parametrize("when", ["before", "after"])
def test_consumed_step_interrupted_around_the_kernel(when, monkeypatch):
    # an interrupt at the swap kernel's call (nothing moved, G still the gradient) or right
    # after it (G holds the old rows): W is as before either way
    net = ShiftedReLUNet(30, 3, seed=1)
    W0 = net.W.copy()
    rows = np.array([2, 5], dtype=np.int64)
    with monkeypatch.context() as mp:
        _arm(mp, _core, "swap_scaled_rows", when, 1)
        with pytest.raises(Injected):
            net.apply_step(rows, np.ones((2, 3)), 0.5, consume=True)
    assert np.array_equal(net.W, W0) and net.steps_applied_ == 0
