"""Contenders of the engine comparison (``tools/engine_compare.py``): the engines, with
options, and the two references they are measured against.

A contender is named ``NAME[:KEY=VALUE[,KEY=VALUE]]``: an engine of ``sparseadv.engines``
(options passed to it, e.g. ``certified:lazy=false``), ``oracle`` (``analysis.oracle``: handed
the exact fired pairs of every pass, found outside the timed region) or ``torch32`` /
``torch64`` (``analysis.torch_peer``: PyTorch CPU, autograd, float32 / float64).
"""
import time

import numpy as np

from ..engines.base import COUNTER_NAMES
from ..errors import InputError
from .grid import problem

PEERS = ("oracle", "torch32", "torch64")


def parse_engine(spec):
    """``"certified:lazy=false,budget=0.05"`` -> ("certified", {"lazy": False, "budget": 0.05})."""
    name, _, opts = spec.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"engine option {item!r} in {spec!r}: expected KEY=VALUE")
        low = text.lower()
        if low in ("true", "false"):
            options[key] = low == "true"
        else:
            try:
                options[key] = float(text) if any(c in text for c in ".e") else int(text)
            except ValueError:
                options[key] = text
    return name, options


def _stepper(name, options, net, X, y, attack, lr="auto"):
    """(step() -> record, untimed preparation before each step or None); the learning rate
    ``lr`` is the same for all ("auto": chosen at the start, inside the first iteration's
    time)."""
    if name in PEERS and lr == "auto":
        from ..stepsize import auto_lr
        lr = auto_lr(net, X)
    if name == "oracle":
        from .oracle import OracleIteration
        it = OracleIteration(net, X, y, attack, lr)
        return it.step, it.prepare
    if name in ("torch32", "torch64"):
        from .torch_peer import TorchIteration
        it = TorchIteration(net, X, y, attack, lr, "float32" if name == "torch32" else
                            "float64")
        return it.step, None
    from ..trainer import AdversarialTrainer
    tr = AdversarialTrainer(net, attack, lr=lr, engine=name, **options)
    return (lambda: tr.step(X, y)), None


def run(engine, m, n, d, steps, iters, eps, seed, lr="auto"):
    """Time one contender: the first iteration (with the choice of lr), then ``iters`` more;
    returns (first-iteration seconds, {record key: median over the later iterations}) with
    ``seconds`` the time of one iteration (an engine's own record; the wall time of ``step``
    for oracle and torch, without the oracle's untimed preparation) and every counter of
    ``COUNTER_NAMES`` (0 where a contender has none). Same start for all: ``grid.problem``,
    l2 PGD with ``eps`` and ``steps``, learning rate ``lr`` (a float or "auto")."""
    from ..attacks import PGD
    name, options = parse_engine(engine)
    if options and name in PEERS:
        raise InputError(f"engine {engine!r}: {name} takes no options")
    net, X, y = problem(m, n, d, seed)
    t0 = time.perf_counter()
    step, prepare = _stepper(name, options, net, X, y, PGD(eps, steps), lr)
    first, recs = time.perf_counter() - t0, []
    for k in range(iters + 1):
        if prepare is not None:
            prepare()
        t1 = time.perf_counter()
        rec = step()
        wall = time.perf_counter() - t1
        if k == 0:
            first += wall
        recs.append({**dict.fromkeys(COUNTER_NAMES, 0), "seconds": wall, **rec})
    med = {k: float(np.median([r[k] for r in recs[1:]])) for k in recs[1]}
    return first, med
