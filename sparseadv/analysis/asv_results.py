"""Read the asv suite's results (format version 2, asv >= 0.5) into measurement rows.

A benchmark with an (m, n, d) parameter (named ``m_n_d``, or any parameter whose values are
all 3-tuples of positive integers) contributes its ``time_iteration`` as ``seconds`` and its
``track_<counter>`` values (``engines.base.COUNTER_NAMES``) as counters. The engine is the
``engine`` parameter, else the class name without its suffix (``DenseIteration`` -> dense);
other parameters with several values are appended to the engine label.

One class per engine, so that one fit never mixes settings: a class whose name ends in
``Scaling`` (the scaling grid) if any, else one with an ``engine`` parameter, else the class
with the most sizes (ties: by name). The classes passed over are returned too.
"""
import ast
import glob
import json
import math
import os

from ..engines.base import COUNTER_NAMES

QUANTITIES = ("seconds",) + COUNTER_NAMES
from ..errors import DataFileError, InputError


def _value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _is_size(value):
    return (isinstance(value, tuple) and len(value) == 3
            and all(isinstance(v, int) and v > 0 for v in value))


def engine_from_class(cls):
    for suffix in ("Iteration", "Scaling", "Step"):
        if cls.endswith(suffix) and len(cls) > len(suffix):
            return cls[:-len(suffix)].lower()
    return cls.lower()


def result_files(results_dir):
    return [p for p in sorted(glob.glob(os.path.join(results_dir, "*.json"))
                              + glob.glob(os.path.join(results_dir, "*", "*.json")))
            if os.path.basename(p) not in ("machine.json", "benchmarks.json")]


def _read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataFileError(f"cannot read asv result file {path}: {exc}") from None


def _pick_file(results_dir, machine, commit):
    if not os.path.isdir(results_dir):
        raise InputError(f"--from-asv: asv results directory {results_dir!r} does not exist")
    candidates = []
    for path in result_files(results_dir):
        data = _read_json(path)
        if not isinstance(data, dict) or "results" not in data:
            continue
        if data.get("version") != 2:
            raise DataFileError(f"{path}: unsupported asv results format version "
                                f"{data.get('version')!r} (this reader knows version 2, "
                                f"asv 0.5+)")
        if machine is not None and data.get("params", {}).get("machine") != machine:
            continue
        if commit is not None and not str(data.get("commit_hash", "")).startswith(commit):
            continue
        started = [v[3] for v in data["results"].values()
                   if isinstance(v, list) and len(v) > 3 and isinstance(v[3], (int, float))]
        candidates.append((max(started, default=0), os.path.getmtime(path), path, data))
    if not candidates:
        what = [f"machine {machine!r}"] * (machine is not None) \
            + [f"commit {commit!r}"] * (commit is not None)
        raise InputError(f"--from-asv: no asv result files in {results_dir!r}"
                         + (" for " + " and ".join(what) if what else ""))
    return max(candidates, key=lambda c: (c[0], c[1]))[2:]


def _param_names(results_dir):
    path = os.path.join(results_dir, "benchmarks.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            specs = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {k: v["param_names"] for k, v in specs.items()
            if isinstance(v, dict) and "param_names" in v}


def _threads(entry, i_res, i_par):
    """{pool: threads} from ``Threads.track_threads`` (skipped pools left out)."""
    try:
        values, pools = entry[i_res], [str(_value(v)) for v in entry[i_par][0]]
    except (IndexError, TypeError):
        return {}
    return {p: v for p, v in zip(pools, values or [])
            if isinstance(v, (int, float)) and math.isfinite(v)}


def _entry_rows(bench, entry, names, i_res, i_par, path):
    """(class path, has engine param, [(engine label, size, quantity, value, steps)])."""
    parts = bench.split(".")
    method, cls, clspath = parts[-1], parts[-2], ".".join(parts[:-1])
    if method == "time_iteration":
        quantity = "seconds"
    elif method.startswith("track_") and method[6:] in COUNTER_NAMES:
        quantity = method[6:]
    else:
        return None
    values, params = entry[i_res], entry[i_par]
    if values is None or not params:
        return None
    params = [[_value(v) for v in p] for p in params]
    if len(names) != len(params):
        names = [f"param{k + 1}" for k in range(len(params))]
    size_at = [k for k, p in enumerate(params)
               if names[k] == "m_n_d" or (p and all(_is_size(v) for v in p))]
    if not size_at:
        return None
    size_at = size_at[0]
    engine_at = names.index("engine") if "engine" in names else None
    combos = [()]
    for p in params:
        combos = [c + (v,) for c in combos for v in p]
    if len(values) != len(combos):
        raise DataFileError(f"{path}: benchmark {bench} has {len(values)} results for "
                            f"{len(combos)} parameter combinations")
    out = []
    for combo, value in zip(combos, values):
        if value is None or (isinstance(value, float) and not math.isfinite(value)) \
                or not _is_size(combo[size_at]):
            continue
        engine = str(combo[engine_at]) if engine_at is not None else engine_from_class(cls)
        extras = [f"{names[k]}={v}" for k, v in enumerate(combo)
                  if k not in (size_at, engine_at) and len(params[k]) > 1]
        steps = next((v for k, v in enumerate(combo)
                      if names[k] == "steps" and isinstance(v, int)), None)
        if extras:
            engine = f"{engine} ({', '.join(extras)})"
        out.append((engine, combo[size_at], quantity, value, steps))
    return clspath, engine_at is not None, out


def load_asv_results(results_dir, machine=None, commit=None):
    """``(rows, info)`` from the newest result file under ``results_dir`` (or the one of
    ``machine`` / whose commit starts with ``commit``). ``info``: file, commit, env, machine,
    classes ({engine: class read}), methods ({engine: benchmark methods read}), ignored ([(engine, class passed over)]), threads
    ({pool: threads} of ``Threads.track_threads``), env_vars, machine_info."""
    path, data = _pick_file(results_dir, machine, commit)
    param_names = _param_names(results_dir)
    columns = data.get("result_columns", ["result", "params"])
    i_res, i_par = columns.index("result"), columns.index("params")
    per_class, engine_param, threads = {}, {}, {}
    for bench, entry in sorted(data["results"].items()):
        if bench.count(".") < 2:
            continue
        if bench.endswith(".Threads.track_threads"):
            threads.update(_threads(entry, i_res, i_par))
            continue
        got = _entry_rows(bench, entry, list(param_names.get(bench, [])), i_res, i_par, path)
        if got is None:
            continue
        clspath, has_engine, items = got
        engine_param[clspath] = engine_param.get(clspath, False) or has_engine
        for engine, size, quantity, value, steps in items:
            rows_of = per_class.setdefault((clspath, engine), {})
            row = rows_of.setdefault(size, {"engine": engine, "m": size[0], "n": size[1],
                                            "d": size[2], "source": f"asv:{clspath}"})
            if steps is not None:
                row.setdefault("steps", steps)
            row.setdefault(quantity, value)
    classes, ignored = _pick_classes(per_class, engine_param)
    rows = [row for (clspath, engine), rows_of in per_class.items()
            if classes[engine] == clspath for row in rows_of.values()]
    methods = {e: sorted({("time_iteration" if q == "seconds" else f"track_{q}")
                          for r in rows if r["engine"] == e for q in r if q in QUANTITIES})
               for e in classes}
    if not rows:
        raise DataFileError(f"{path}: no benchmark with an (m, n, d) parameter 'm_n_d' and a "
                            f"time_iteration or track_<counter> method")
    info = {"file": path, "commit": data.get("commit_hash"), "env": data.get("env_name"),
            "machine": data.get("params", {}).get("machine"),
            "env_vars": data.get("env_vars", {}), "classes": classes, "ignored": ignored,
            "methods": methods, "threads": threads}
    machine_json = os.path.join(os.path.dirname(path), "machine.json")
    if os.path.exists(machine_json):
        try:
            with open(machine_json) as fh:
                info["machine_info"] = json.load(fh)
        except (OSError, ValueError):
            pass
    return rows, info


def _pick_classes(per_class, engine_param):
    """({engine: class read}, [(engine, class passed over), ...]): *Scaling first, then a
    class with an engine parameter, then the others; more sizes first; then by name."""
    offers = {}
    for clspath, engine in per_class:
        offers.setdefault(engine, []).append(clspath)

    def rank(clspath, engine):
        cls = clspath.rsplit(".", 1)[-1]
        kind = 0 if cls.endswith("Scaling") else 1 if engine_param.get(clspath) else 2
        return kind, -len(per_class[(clspath, engine)]), clspath
    classes, ignored = {}, []
    for engine, paths in offers.items():
        classes[engine] = min(paths, key=lambda c: rank(c, engine))
        ignored += [(engine, c) for c in paths if c != classes[engine]]
    return classes, ignored
