"""``sparseadv bench`` (also ``python -m sparseadv.scaling``): the cost of one adversarial
iteration per engine against m, n and d, measured here or read from asv results.

Without ``--from-asv`` it runs a grid (``grid.GRIDS``) through ``measure``; with
``--from-asv DIR`` it reads the asv suite's results (``asv_results``) and says what it read.
Either way it fits power laws (``fit``), applies the sublinearity rule (``verdict``) and writes
into ``--out``: ``scaling.md`` (setup, exponents, verdicts, slice fits, plots),
``scaling.csv`` (the measurements), ``scaling_seconds.png`` and ``scaling_inner_products.png``.
Exit status 0; 1 when nothing could be fitted; 2 for bad arguments or unusable results.
"""
import argparse
import contextlib
import os
import shlex
import sys

from .. import _argtypes as argtypes
from ..distributed import cli_support
from ..errors import InputError, SparseAdvError
from .environment import environment_lines
from .estimate import estimate_dense_seconds
from .fit import MIN_DISTINCT, by_engine, distinct, fit_rows
from .grid import AXES, GRIDS, grid_points
from .measure import ROW_FIELDS, measure
from .plots import plot_slices
from .tables import format_slices, format_table, format_verdicts, write_csv
from .verdict import MARGIN, MAX_RISE, MIN_PAIRS, WORK

PLOTS = {"seconds": "scaling_seconds.png", "inner_products": "scaling_inner_products.png"}
#: Options that only apply when the grid is run, with their defaults.
RUN_ONLY = {"grid": "default", "repeats": 3, "warmup": 1, "seed": 0, "steps": 3, "eps": 0.05,
            "lr": "auto", "threads": None, "scheduler": None, "local_cluster": None}


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog or "python -m sparseadv.scaling",
        description="Measure the cost of one adversarial iteration per engine over an "
                    "(m, n, d) grid (or read it from asv results with --from-asv), fit "
                    "power-law exponents with 95%% intervals, decide whether the cost is "
                    "sublinear in m from the work counts, and write scaling.md, scaling.csv "
                    "and PNG plots into --out.",
        epilog="The grid runs unless --from-asv is given. --grid large (m up to 2^20) "
               "takes minutes (an estimate is printed at the start). See docs/benchmarks.md.")
    p.add_argument("--run", action="store_true", help="run the grid (the default)")
    p.add_argument("--from-asv", nargs="?", const=".asv/results", default=None,
                   metavar="RESULTS_DIR", help="read asv results instead of running "
                   "(default dir: .asv/results)")
    p.add_argument("--engines", default=None, help="comma-separated engine names (default: "
                   "every engine in sparseadv.engines.ENGINES)")
    p.add_argument("--grid", default=None, help="grid to run: default or large")
    p.add_argument("--repeats", type=argtypes.positive_int, default=None,
                   help="timed iterations per point and engine (default 3; median)")
    p.add_argument("--warmup", type=argtypes.nonneg_int, default=None,
                   help="untimed iterations before them (default 1)")
    p.add_argument("--seed", type=argtypes.nonneg_int, default=None,
                   help="network seed; data seed + 1 (default 0)")
    p.add_argument("--steps", type=argtypes.positive_int, default=None,
                   help="PGD attack steps (default 3)")
    p.add_argument("--eps", type=argtypes.eps, default=None, help="l2 attack radius "
                   "(default 0.05)")
    p.add_argument("--lr", type=argtypes.lr, default=None, help="learning rate: a positive "
                   "number or auto (default: auto, the NTK step size at the start, shared by "
                   "the engines)")
    p.add_argument("--threads", type=argtypes.positive_int, default=None,
                   help="limit BLAS and OpenMP threads while measuring (threadpoolctl)")
    p.add_argument("--machine", default=None, help="with --from-asv: only this asv machine")
    p.add_argument("--commit", default=None, help="with --from-asv: commit hash prefix "
                   "(default: the newest results)")
    p.add_argument("--out", default="scaling-report", help="output directory "
                   "(default: scaling-report)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cli_support.add_cluster_arguments(p)     # --scheduler / --local-cluster: points as tasks
    return p


def parse(argv, prog=None):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    given = ["--" + k for k in RUN_ONLY if getattr(args, k) is not None]
    if args.from_asv is not None and (given or args.run):
        opts = ", ".join(given + ["--run"] * args.run)
        parser.error(f"{opts} only appl{'ies' if len(given) + args.run == 1 else 'y'} when "
                     f"running the grid, not with --from-asv")
    if args.from_asv is None and (args.machine is not None or args.commit is not None):
        parser.error("--machine and --commit only apply with --from-asv")
    for k, default in RUN_ONLY.items():
        if getattr(args, k) is None:
            setattr(args, k, default)
    if args.grid not in GRIDS:
        parser.error(f"--grid must be one of {', '.join(GRIDS)}, got {args.grid!r}")
    if args.engines is not None:
        from ..engines import ENGINES
        names = [e.strip() for e in args.engines.split(",") if e.strip()]
        if not names:
            parser.error("--engines must name at least one engine")
        unknown = [e for e in names if e not in ENGINES]
        if args.from_asv is None and unknown:
            parser.error(f"unknown engine(s) {', '.join(unknown)}; available: "
                         f"{', '.join(ENGINES)}")
        if len(set(names)) != len(names):
            parser.error(f"--engines lists an engine twice: {args.engines!r}")
        args.engines = names
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} exists and is not a directory")
    return parser, args


def _run(args):
    """(rows, data note, extra setup lines) of a grid run."""
    from ..engines import ENGINES
    engines = args.engines or list(ENGINES)
    points = grid_points(args.grid)
    est = estimate_dense_seconds(points, args.repeats, args.steps, args.warmup)
    print(f"running grid {args.grid!r}: {len(points)} points x {len(engines)} engine(s) "
          f"({', '.join(engines)}), {args.warmup} warm-up + {args.repeats} timed iterations; "
          f"dense alone roughly {est:.0f} s of arithmetic", file=sys.stderr)
    extra = []
    limiter = None
    if args.threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise InputError("--threads needs threadpoolctl: pip install threadpoolctl") from None
        limiter = threadpool_limits(limits=args.threads)
        extra.append(("--threads", f"{args.threads} (BLAS and OpenMP pools limited while "
                                   f"measuring)"))
    try:
        with cli_support.cluster_from_args(args) or contextlib.nullcontext() as cluster:
            if cluster is not None:
                extra.append(cli_support.sweep_note(cluster))
            rows = measure(engines, points, steps=args.steps, eps=args.eps, lr=args.lr,
                           warmup=args.warmup, repeats=args.repeats, seed=args.seed,
                           progress=not args.quiet, client=cluster and cluster.client)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    note = (f"measured here, grid {args.grid!r}: {len(points)} points (m-, n-, d-slices "
            f"through {GRIDS[args.grid]['center']}), sphere data (seed {args.seed + 1}), "
            f"network seed {args.seed}, PGD l2 eps={args.eps:g}, steps={args.steps}, "
            f"lr={args.lr} (value per point in scaling.csv), {args.warmup} warm-up + "
            f"{args.repeats} timed iterations per engine and point (medians)")
    return rows, note, extra


def asv_summary(rows, info):
    """What was read from asv, as (key, value) lines: file, commit, classes, points."""
    lines = [("asv file", info["file"]), ("asv commit", info["commit"]),
             ("asv machine", info["machine"]), ("asv environment", info["env"])]
    for engine, erows in by_engine(rows).items():
        count = distinct(erows)
        read = ", ".join(info["methods"].get(engine, []))
        lines.append((f"asv {engine}", f"{info['classes'][engine]} ({read}): {len(erows)} "
                      f"points; " + ", ".join(f"{count[a]} distinct {a}" for a in AXES)))
    if info["ignored"]:
        lines.append(("asv classes passed over (another grid or setting)",
                      ", ".join(f"{e}: {c}" for e, c in info["ignored"])))
    if info["threads"]:
        lines.append(("asv thread counts (Threads)",
                      ", ".join(f"{k}={v:g}" for k, v in sorted(info["threads"].items()))))
    if info.get("env_vars"):
        lines.append(("asv env_vars", ", ".join(f"{k}={v}" for k, v in
                                                sorted(info["env_vars"].items()))))
    return lines


def _from_asv(args, parser):
    from .asv_results import load_asv_results
    try:
        rows, info = load_asv_results(args.from_asv, args.machine, args.commit)
    except SparseAdvError as exc:
        parser.error(str(exc))
    if args.engines is not None:
        rows = [r for r in rows if r["engine"] in args.engines]
        if not rows:
            parser.error(f"no asv results for engine(s) {', '.join(args.engines)}")
    extra = asv_summary(rows, info)
    for key, value in extra:
        print(f"{key}: {value}", file=sys.stderr)
    usable = {e: r for e, r in by_engine(rows).items()
              if max(distinct(r).values()) >= MIN_DISTINCT}
    if not usable:
        parser.error(f"the asv results hold fewer than {MIN_DISTINCT} distinct values of m, "
                     f"n and d for every engine: nothing to fit (run a grid, e.g. "
                     f"'asv run --bench DenseScaling', or drop --from-asv)")
    rows = [r for r in rows if r["engine"] in usable]
    note = (f"asv results {info['file']} (commit {info['commit']}, machine "
            f"{info['machine']}); one class per engine")
    return rows, note, extra


def rule_text():
    return (f"Rule (`sparseadv.analysis.verdict`): only the {WORK.replace('_', ' ')} decide, "
            f"never time. Sublinear needs a grid whose largest point has m·n ≥ {MIN_PAIRS:.3g}, "
            f"an m-exponent fitted from ≥ {MIN_DISTINCT} distinct m with its upper 95% limit "
            f"≤ {1 - MARGIN:g}, and no bend from a fixed cost: the m-exponent of the upper half of "
            f"the m-slice at most {MAX_RISE:g} (and half its value) above the lower half's, "
            f"and itself ≤ {1 - MARGIN:g}; otherwise 'not sublinear' or 'inconclusive'.")


def write_report(out, fitted, command, note, extra, plots):
    lines = ["# sparseadv scaling report", "",
             "Cost of one adversarial training iteration (attack + weight step) against m, n "
             "and d. Exponents: least-squares slopes on logarithms with 95% t-intervals "
             "(`fit: grid`: one fit `log cost = a log m + b log n + c log d + k` over the "
             "engine's points; `fit: slices`: per-axis fits on the one-factor slices). The "
             "dense engine costs Θ(m·n·d).", "", "## Setup", ""]
    lines += environment_lines(command, extra) + [f"- data: {note}", "", "## Exponents", "",
                                                  format_table(fitted), "", "## Verdicts", "",
                                                  rule_text(), "", format_verdicts(fitted), ""]
    notes = [f"- {e['engine']} / {e['quantity']}: {e['note']}" for e in fitted if e["note"]]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    lines += ["## Per-axis slice fits", "", format_slices(fitted), "", "## Plots", ""]
    if plots is None:
        lines.append("Plots skipped: matplotlib is not installed (`pip install "
                     "\"sparseadv[plot]\"`).")
    elif not plots:
        lines.append("No plots (--no-plots, or nothing to plot).")
    else:
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    lines += ["", "Raw measurements: `scaling.csv`.", ""]
    path = os.path.join(out, "scaling.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return path


def main(argv=None, prog=None):
    """Entry point of ``sparseadv bench`` and ``python -m sparseadv.scaling``."""
    parser, args = parse(argv, prog)
    command = shlex.join([prog or "python -m sparseadv.scaling"]
                         + list(sys.argv[1:] if argv is None else argv))
    if args.from_asv is not None:
        rows, note, extra = _from_asv(args, parser)
    else:
        try:
            rows, note, extra = _run(args)
        except InputError as exc:
            parser.error(str(exc))
    fitted = fit_rows(rows)
    os.makedirs(args.out, exist_ok=True)
    write_csv(args.out, "scaling.csv", rows, ROW_FIELDS)
    plots = [] if args.no_plots else plot_slices(rows, args.out, PLOTS, "sparseadv scaling")
    path = write_report(args.out, fitted, command, note, extra, plots)
    print(format_table(fitted))
    print()
    print(format_verdicts(fitted))
    print(f"\nwrote {path}, {os.path.join(args.out, 'scaling.csv')}"
          + (f", {len(plots)} plot(s)" if plots else ""))
    if not fitted:
        print("error: nothing to fit: no engine has a time or counter measured at two or "
              "more sizes", file=sys.stderr)
        return 1
    return 0
