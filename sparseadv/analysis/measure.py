"""Measure one adversarial iteration of each engine at each grid point.

At every (m, n, d): one seeded problem (``grid.problem``) and one learning rate shared by all
engines (``lr="auto"``: the NTK step size of ``sparseadv.stepsize`` at the start, computed
once per point, as the trainer would at its first step); each engine starts from a copy of
the same network, runs ``warmup`` untimed iterations (the sparse engines build their
structures there), then ``repeats`` timed ones. Time and every work counter
(``engines.base.COUNTER_NAMES``) are the median over the timed iterations. Engines are
interleaved point by point so that the load of a shared machine hits all alike.

``lr="auto"`` makes the weights move as in real training, which decides how often a sparse
engine re-anchors; a small fixed lr would flatter the sparse engines.
"""
import statistics
import sys

import numpy as np

from ..engines.base import COUNTER_NAMES
from .grid import problem

#: Columns of a measurement row (``tables.write_csv`` writes them in this order).
ROW_FIELDS = (("engine", "m", "n", "d", "steps", "eps", "lr", "seed", "warmup", "repeats",
               "seconds", "seconds_min", "seconds_max", "seconds_attack", "seconds_forward",
               "seconds_backward", "loss", "fired_mean") + COUNTER_NAMES
              + ("warmup_seconds", "warmup_inner_products", "dense_inner_products", "source"))


def _median(values):
    value = statistics.median(values)
    return int(value) if float(value).is_integer() else float(value)


def measure_point(engines, m, n, d, *, steps=3, eps=0.05, lr="auto", warmup=1, repeats=3,
                  seed=0):
    """Rows (one per engine) for the grid point (m, n, d); see the module docstring."""
    from ..attacks import PGD
    from ..stepsize import auto_lr
    from ..theory import dense_inner_products
    from ..trainer import AdversarialTrainer

    net0, X, y = problem(m, n, d, seed)
    rate = auto_lr(net0, X) if lr == "auto" else float(lr)
    rows = []
    for engine in engines:
        trainer = AdversarialTrainer(net0.copy(), PGD(eps, steps), lr=rate, engine=engine)
        warm = [trainer.step(X, y) for _ in range(warmup)]
        recs = [trainer.step(X, y) for _ in range(repeats)]
        secs = [r["seconds"] for r in recs]
        row = {"engine": engine, "m": m, "n": n, "d": d, "steps": steps, "eps": eps,
               "lr": rate, "seed": seed, "warmup": warmup, "repeats": repeats,
               "seconds": statistics.median(secs), "seconds_min": min(secs),
               "seconds_max": max(secs), "loss": recs[-1]["loss"],
               "fired_mean": float(np.median([r["fired_mean"] for r in recs])),
               "warmup_seconds": sum(r["seconds"] for r in warm),
               "warmup_inner_products": sum(r["inner_products"] for r in warm),
               "dense_inner_products": dense_inner_products(m, n, steps), "source": "run"}
        for phase in ("seconds_attack", "seconds_forward", "seconds_backward"):
            row[phase] = statistics.median(r[phase] for r in recs)
        for key in COUNTER_NAMES:
            row[key] = _median([r[key] for r in recs])
        rows.append(row)
    return rows


def measure(engines, points, *, steps=3, eps=0.05, lr="auto", warmup=1, repeats=3, seed=0,
            progress=True, desc="cost grid", client=None):
    """Rows for every engine at every (m, n, d) of ``points`` (in that order). With a Dask
    ``client``, every point is a task, at most one per worker at a time
    (``sparseadv.distributed.map_grid``); the rows are the same but for the times."""
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(points), desc=desc, unit="point", file=sys.stderr)
    try:
        if client is not None:
            from ..distributed import GridTask, map_grid
            task = GridTask(measure_point, list(engines), steps=steps, eps=eps, lr=lr,
                            warmup=warmup, repeats=repeats, seed=seed)
            tick = None if bar is None else (lambda done, total: bar.update(1))
            return [row for rows in map_grid(points, task, client, progress=tick)
                    for row in rows]
        for m, n, d in points:
            if bar is not None:
                bar.set_postfix_str(f"m={m} n={n} d={d}")
            rows += measure_point(engines, m, n, d, steps=steps, eps=eps, lr=lr,
                                  warmup=warmup, repeats=repeats, seed=seed)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows
