"""The ``sparseadv`` command line: ``train``, ``reproduce``, ``bench`` and ``--version``.

Run ``sparseadv COMMAND --help`` for each command's options. Errors in the input (bad data or
checkpoint files, impossible options, sizes that do not fit in memory: the classes of
``sparseadv.errors``) and errors of the operating system print one line
``sparseadv: error: ...`` and exit with status 2; any other exception is a bug in sparseadv and
shows its traceback.
"""
import argparse
import json
import os
import signal
import sys

from . import _argtypes as argtypes
from ._runs import StopFlag
from .analysis.estimate import FULL_ESTIMATE  # also quoted by REPORT.md
from .distributed import cli_support
from .errors import CheckpointError, InputError, SparseAdvError

__all__ = ["main", "build_parser"]

PROG = "sparseadv"

# Defaults of ``train``; the parser itself uses None so that, on --resume, options given
# explicitly can be told apart from defaults and checked against the checkpoint.
TRAIN_DEFAULTS = dict(data="separated", n=256, d=16, m=4096, eps=0.05, steps=3, step_size=None,
                      norm="2", engine="dense", iterations=50, lr="auto", seed=0,
                      random_start=False, normalize=True, checkpoint_every=10,
                      out="sparseadv-run", loss="squared", batch_size=None, epochs=None)
# Options that define the run and must not change on resume.
_FROZEN = ("data", "n", "d", "m", "eps", "steps", "step_size", "norm", "engine", "lr", "seed",
           "random_start", "normalize", "loss", "batch_size")


class UsageError(InputError):
    """An option combination that cannot work; reported as one line, exit status 2."""


# --------------------------------------------------------------------------- argument types

ENGINE_NAMES = ("dense", "tree", "certified")    # every build has all three (engines.ENGINES)


# --------------------------------------------------------------------------- parser

def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sublinear adversarial training of wide two-layer shifted-ReLU networks "
                    "(Gao, Qin, Song, Wang, ICLR 2024): train, reproduce the paper's claims, "
                    "benchmark.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # -- train
    tr = sub.add_parser(
        "train", help="adversarial training with checkpoints and resume",
        description="Adversarially train a ShiftedReLUNet. Saves checkpoint.npz (weights, "
                    "attack and RNG state, data spec, history), weights.npz and history.npz "
                    "into --out. Ctrl-C / SIGTERM finishes the current iteration, saves and "
                    "exits (status 130 / 143); --resume DIR continues from the checkpoint and "
                    "gives bitwise the same weights as an uninterrupted run (dense engine; "
                    "other engines agree to round-off).",
        epilog="Data files: .npz with arrays X (n x d) and y (n), or .csv with one example per "
               "row and the label in the last column (an optional header row is detected). "
               "Labels: +-1 for classification, or real values (regression). Rows are "
               "scaled to unit l2 norm unless --no-normalize: the theory (and the default "
               "threshold b = sqrt(0.4 ln m)) assumes unit-norm inputs.")
    tr.add_argument("--data", help="sphere, teacher, separated, digits (needs scikit-learn), "
                                   "or a PATH.npz / PATH.csv file (default: separated)")
    tr.add_argument("--n", type=argtypes.positive_int, help="number of points of a synthetic data set "
                                                   "(default 256)")
    tr.add_argument("--d", type=argtypes.positive_int, help="dimension of a synthetic data set "
                                                   "(default 16)")
    tr.add_argument("--m", type=argtypes.positive_int, help="width: number of neurons (default 4096)")
    tr.add_argument("--eps", type=argtypes.eps, help="attack radius, in [0, 1e150]; 0 is standard "
                                             "training (default 0.05)")
    tr.add_argument("--steps", type=argtypes.positive_int, help="PGD steps (default 3)")
    tr.add_argument("--step-size", type=argtypes.step_size,
                    help="PGD step length (default 2.5 eps / steps)")
    tr.add_argument("--norm", type=argtypes.norm, help="attack norm: 2 or inf (default 2)")
    tr.add_argument("--random-start", action="store_true", default=None,
                    help="start the attack at a random point of the ball")
    tr.add_argument("--engine", help="dense, tree or certified: whichever are installed "
                                     "(default dense)")
    tr.add_argument("--iterations", type=argtypes.positive_int,
                    help="total number of iterations; with --resume, the run continues until "
                         "this total (default 50)")
    tr.add_argument("--epochs", type=argtypes.positive_int,
                    help="train for this many passes over the data instead (epochs x "
                         "ceil(n / batch size) iterations in total); not with --iterations")
    tr.add_argument("--loss", choices=("squared", "logistic"),
                    help="training loss, also ascended by the attack: squared (the paper's, "
                         "default) or logistic (labels must be -1 and +1)")
    tr.add_argument("--batch-size", type=argtypes.positive_int,
                    help="attack and update on mini-batches of this many points, drawn per "
                         "epoch from a permutation seeded by --seed (default: full batch)")
    tr.add_argument("--lr", type=argtypes.lr, help="learning rate: a positive number, or auto "
                                           "(n / lambda_max of the NTK Gram matrix; default)")
    tr.add_argument("--seed", type=argtypes.nonneg_int, help="seed of the network, the data and the "
                                                     "attack (default 0)")
    tr.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                    help="keep the rows of a data file as they are (default: unit norm)")
    tr.add_argument("--out", help="output directory (default sparseadv-run, or the --resume "
                                  "directory)")
    tr.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    tr.add_argument("--checkpoint-every", type=argtypes.nonneg_int, metavar="K",
                    help="save a checkpoint every K iterations (0: only at the end; "
                         "default 10)")
    tr.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bar")
    cli_support.add_arguments(tr)

    # -- reproduce
    rp = sub.add_parser(
        "reproduce", help="run the experiments E1-E5 and write REPORT.md",
        description="Run the five experiments (E1 sparsity, E2 convergence, E3 cost, E4 the "
                    "partition tree, E5 real data) and write CSV files, PNG plots and "
                    "REPORT.md with a table of the paper's claims and computed verdicts. "
                    "--quick takes under 5 minutes on 2 cores (docs/benchmarks.md); "
                    f"--full (m up to 2^20) takes {FULL_ESTIMATE}.")
    mode = rp.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small grid, under 5 minutes on 2 cores (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help=f"the paper-scale grid: {FULL_ESTIMATE}")
    rp.add_argument("--out", default="sparseadv-report",
                    help="output directory (default sparseadv-report)")
    rp.add_argument("--seed", type=argtypes.nonneg_int, default=0, help="base seed (default 0)")
    rp.add_argument("--engines", nargs="+", metavar="ENGINE",
                    help="engines to compare (default: every registered one)")
    rp.add_argument("--only", nargs="+", metavar="E", choices=["e1", "e2", "e3", "e4", "e5"],
                    help="run only these experiments (e1 ... e5)")
    rp.add_argument("--threads", type=argtypes.positive_int,
                    help="limit the BLAS and OpenMP thread pools to N threads (threadpoolctl; "
                         "default: leave them as they are)")
    rp.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    cli_support.add_cluster_arguments(rp)     # E3's grid points as tasks on a Dask cluster

    # -- bench
    bn = sub.add_parser("bench", help="cost of an iteration against m, n, d per engine "
                        "(runs a grid, or reads asv results with --from-asv)", add_help=False)
    bn.add_argument("args", nargs=argparse.REMAINDER)
    return parser


# --------------------------------------------------------------------------- train

def _build_data(cfg):
    """(X, y, X_test, y_test, spec) for the --data option."""
    from . import datasets
    from .io import load_data_file

    source = cfg["data"]
    if source in datasets.DATASETS:
        X, y = datasets.make(source, cfg["n"], cfg["d"], seed=cfg["seed"] + 1)
        return X, y, None, None
    if source == "digits":
        try:
            split = datasets.load_digits(seed=cfg["seed"])
        except ImportError:
            raise UsageError("--data digits needs scikit-learn: pip install "
                             "'sparseadv[digits]'") from None
        return split.X_train, split.y_train, split.X_test, split.y_test
    if _is_data_file(source):
        X, y = load_data_file(source, normalize=cfg["normalize"])
        return X, y, None, None
    raise UsageError(f"--data must be sphere, teacher, separated, digits or a .npz/.csv file, "
                     f"got {source!r}")


def _make_attack(cfg):
    import numpy as np

    from .attacks import PGD
    norm = 2 if cfg["norm"] == "2" else np.inf
    return PGD(cfg["eps"], cfg["steps"], step_size=cfg["step_size"], norm=norm,
               random_start=bool(cfg["random_start"]), seed=cfg["seed"] + 2)


def _accuracy(net, X, y):
    import numpy as np
    if not np.all(np.isin(y, (-1.0, 1.0))):
        return None
    return float(np.mean(np.where(net.forward(X) >= 0, 1.0, -1.0) == y))


def _history_dict(records, fields):
    import numpy as np
    return {k: np.array([r[k] for r in records]) for k in fields}


def _resume_config(args, given):
    """(checkpoint, config) of ``--resume``: the checkpoint checked by io.load_checkpoint, its
    config by _runs.check_config, and the options given now checked against the frozen ones."""
    from . import io
    from ._runs import check_config

    ckpt = io.load_checkpoint(args.resume)
    cfg = dict(check_config(ckpt["path"], ckpt["config"]))
    if cfg["m"] != ckpt["W"].shape[0]:
        raise CheckpointError(f"{ckpt['path']}: the config says m={cfg['m']} but W has "
                              f"{ckpt['W'].shape[0]} rows")
    for key in _FROZEN:
        if key in given and given[key] != cfg.get(key):
            raise UsageError(f"--{key.replace('_', '-')}={given[key]} conflicts with the "
                             f"checkpoint in {args.resume} ({key}={cfg.get(key)}); "
                             f"drop the option to resume")
    if "iterations" in given or "epochs" in given:     # a new total replaces the old one
        cfg["iterations"] = given.get("iterations", cfg["iterations"])
        cfg["epochs"] = given.get("epochs")
    cfg["checkpoint_every"] = given.get("checkpoint_every", cfg["checkpoint_every"])
    cfg["out"] = given.get("out", args.resume)
    return ckpt, cfg


def _check_sizes(cfg):
    """Refuse, before allocating, sizes whose arrays cannot fit in memory: the (n, d) data of
    a synthetic set, the (m, d) weights (several copies: network, gradient, engine) and the
    (n, m) pre-activations of one dense pass."""
    from ._validation import check_allocation
    n, d = cfg["n"], cfg["d"]
    check_allocation("--n, --d", 8 * n * d, "the (n, d) data")
    check_allocation("--m, --d", 3 * 8 * cfg["m"] * d, "the (m, d) weights and their gradient")
    check_allocation("--n, --m", 8 * n * cfg["m"], "the (n, m) pre-activations")


def cmd_train(args, out=None, err=None):
    from . import io
    from ._runs import RunLock
    from .engines import ENGINES

    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k, None) is not None}
    if "iterations" in given and "epochs" in given:
        raise UsageError("give --iterations or --epochs, not both")
    if args.resume:
        ckpt, cfg = _resume_config(args, given)
    else:
        ckpt, cfg = None, dict(TRAIN_DEFAULTS, **given)
    if cfg["engine"] not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINE_NAMES)}, "
                         f"got {cfg['engine']!r}")
    synthetic = cfg["data"] in _synthetic_names()
    if not (synthetic or cfg["data"] == "digits" or _is_data_file(cfg["data"])):
        raise UsageError(f"--data must be sphere, teacher, separated, digits or a .npz/.csv "
                         f"file, got {cfg['data']!r}")
    if not synthetic:
        for key in ("n", "d"):
            if key in given and not ckpt:
                raise UsageError(f"--{key} applies to synthetic data only; {cfg['data']} "
                                 f"fixes it")
    else:
        _check_sizes(cfg)
    outdir = cfg["out"]
    os.makedirs(outdir, exist_ok=True)
    with RunLock(outdir):
        # Under the lock no other run writes here: a temporary file is a killed save's.
        io.remove_stale_temporaries(outdir, (io.CHECKPOINT_NAME, "weights.npz", "history.npz"))
        return _train(args, cfg, ckpt, outdir, sys.stdout if out is None else out,
                      sys.stderr if err is None else err)


def _is_data_file(source):
    return source.lower().endswith((".npz", ".csv"))


def _synthetic_names():
    from .datasets import DATASETS
    return tuple(DATASETS)


def _restore(ckpt, cfg, X, y, attack):
    """(net, lr, start, records) of a resumed run, after checking that the checkpoint fits the
    data it is resumed on."""
    from . import io
    from .network import ShiftedReLUNet
    from .trainer import RECORD_FIELDS

    path = ckpt["path"]
    if ckpt["W"].shape[1] != X.shape[1]:
        raise UsageError(f"the checkpoint's weights have d={ckpt['W'].shape[1]} but the "
                         f"data has d={X.shape[1]}")
    stored = ckpt["data"].get("fingerprint")
    if stored is not None and stored != io.data_fingerprint(X, y):
        raise CheckpointError(f"{path}: the data {cfg['data']} changed since the checkpoint "
                              f"was written (then n={ckpt['config']['n']}, "
                              f"d={ckpt['config']['d']}; now n={X.shape[0]}, d={X.shape[1]}, "
                              f"other content); resume needs the same data")
    history = ckpt["history"]
    missing = [k for k in RECORD_FIELDS if k not in history]
    if missing:
        raise CheckpointError(f"{path}: the history lacks {', '.join(missing)}")
    net = ShiftedReLUNet.from_arrays(ckpt["W"], ckpt["a"], ckpt["b"])
    if ckpt["rng_state"] is not None:
        try:
            attack._rng.bit_generator.state = ckpt["rng_state"]
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise CheckpointError(f"{path}: unusable attack RNG state "
                                  f"({type(exc).__name__}: {exc})") from None
    if cfg["batch_size"] is not None and ckpt["batch_order"] is None:
        raise CheckpointError(f"{path}: a mini-batch run's checkpoint without its batch order")
    lr = ckpt["lr"] if ckpt["lr"] is not None else cfg["lr"]
    start = ckpt["iteration"]
    records = [{k: history[k][i].item() for k in RECORD_FIELDS} for i in range(start)]
    return net, lr, start, records


def _diverged(iteration, what, lr, outdir):
    from .errors import DivergenceError
    raise DivergenceError(f"training diverged at iteration {iteration}: {what} (lr={lr:.4g}); "
                          f"lower --lr or --eps; the last checkpoint in {outdir}, if any, is "
                          f"intact")


def _train(args, cfg, ckpt, outdir, out, err):
    import numpy as np

    from . import io
    from .network import ShiftedReLUNet
    from .trainer import RECORD_FIELDS, AdversarialTrainer

    X, y, X_test, y_test = _build_data(cfg)
    cfg["n"], cfg["d"] = int(X.shape[0]), int(X.shape[1])
    _check_sizes(cfg)
    attack = _make_attack(cfg)
    if ckpt is not None:
        net, lr, start, records = _restore(ckpt, cfg, X, y, attack)
    else:
        net = ShiftedReLUNet(cfg["m"], cfg["d"], seed=cfg["seed"])
        lr, start, records = cfg["lr"], 0, []
    if cfg["batch_size"] is not None and cfg["batch_size"] > cfg["n"]:
        raise UsageError(f"--batch-size={cfg['batch_size']} is larger than the number of "
                         f"training points n = {cfg['n']}")
    if cfg["loss"] == "squared" and cfg["batch_size"] is None:
        trainer = cli_support.make_trainer(args, net, attack, lr, cfg["engine"])
    elif any(getattr(args, k, None) is not None for k in ("scheduler", "local_cluster",
                                                         "shards")):
        raise UsageError("--loss logistic and --batch-size train in a single process: drop "
                         "--scheduler, --local-cluster and --shards")
    else:
        trainer = AdversarialTrainer(net, attack, lr=lr, engine=cfg["engine"],
                                     loss=cfg["loss"], batch_size=cfg["batch_size"],
                                     seed=cfg["seed"] + 3)
    order = getattr(trainer, "order", None)     # the batch order (mini-batches only)
    per_epoch = 1 if order is None else trainer.batches_per_epoch(cfg["n"])
    trainer.iterations_ = start
    if ckpt is not None and order is not None:
        order.set_state(ckpt["batch_order"], ckpt["path"])
    attack_spec = dict(eps=attack.eps, steps=attack.steps, step_size=attack.step_size,
                       norm=cfg["norm"], random_start=attack.random_start,
                       seed=cfg["seed"] + 2, kind=type(attack).__name__)
    data_spec = dict(source=cfg["data"], n=cfg["n"], d=cfg["d"], seed=cfg["seed"] + 1,
                     normalize=cfg["normalize"], fingerprint=io.data_fingerprint(X, y))

    def save(iteration):
        cli_support.sync(trainer, net)
        # Never save (or report) weights that are no longer finite; the last checkpoint stays.
        if not (np.isfinite(net.W).all() and np.isfinite(net.a).all()):
            _diverged(iteration, "the weights are no longer finite", trainer.lr_, outdir)
        io.save_checkpoint(
            outdir, W=net.W, a=net.a, b=net.b, iteration=iteration, lr=trainer.lr_,
            attack=attack_spec,
            rng_state=attack._rng.bit_generator.state if attack.random_start else None,
            data=data_spec, config=cfg, history=_history_dict(records, RECORD_FIELDS),
            batch_order=None if order is None else order.state())

    target = cfg["iterations"]
    if cfg["epochs"] is not None:
        target = cfg["epochs"] * per_epoch
    every = cfg["checkpoint_every"]
    it = start
    bar = None
    if args.progress and it < target:
        from tqdm.auto import tqdm
        bar = tqdm(total=target, initial=it, desc=f"adversarial training ({cfg['engine']})",
                   unit="it", file=err)
    stopped = None
    try:
        with StopFlag() as flag:
            try:
                while it < target and flag.signum is None:
                    rec = trainer.step(X, y)
                    if not np.isfinite(rec["loss"]):
                        _diverged(it + 1, f"the robust loss is {rec['loss']}", trainer.lr_,
                                  outdir)
                    records.append(rec)
                    it += 1
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4g}",
                                        fired=f"{rec['fired_mean']:.1f}")
                        bar.update(1)
                    if every and it % every == 0 and it < target:
                        save(it)
                stopped = flag.signum
                save(it)
            except KeyboardInterrupt:
                if bar is not None:
                    bar.close()
                    bar = None
                print(f"{PROG}: interrupted twice; the last checkpoint in {outdir} is intact",
                      file=err)
                return 130
    finally:
        if bar is not None:
            bar.close()
        cli_support.close(trainer)
    hist = _history_dict(records, RECORD_FIELDS)
    io.atomic_save_npz(os.path.join(outdir, "weights.npz"),
                       {"W": net.W, "a": net.a, "b": np.array(net.b)})
    io.atomic_save_npz(os.path.join(outdir, "history.npz"),
                       dict(hist, iteration=np.arange(1, len(records) + 1)))
    if stopped is not None:
        name = signal.Signals(stopped).name
        print(f"{PROG}: {name} received: stopped after iteration {it} of {target}; checkpoint "
              f"saved, continue with: {PROG} train --resume {outdir} --iterations {target}",
              file=err)
        return 128 + int(stopped)
    summary = {"iterations": it, "epochs": it / per_epoch,
               "lr": trainer.lr_,
               "robust_loss": float(hist["loss"][-1]) if len(records) else None,
               "train_accuracy": _accuracy(net, X, y)}
    if X_test is not None:
        summary["test_accuracy"] = _accuracy(net, X_test, y_test)
    print(json.dumps(summary), file=out)
    print(f"saved {os.path.join(outdir, io.CHECKPOINT_NAME)}, weights.npz, history.npz",
          file=err)
    return 0


# --------------------------------------------------------------------------- other commands

def cmd_reproduce(args, argv):
    from . import reproduce
    engines = args.engines
    if engines is not None:
        bad = [e for e in engines if e not in ENGINE_NAMES]
        if bad:
            raise UsageError(f"--engines: unknown engine {', '.join(bad)} (engines: "
                             f"{', '.join(ENGINE_NAMES)})")
    with cli_support.sweep_cluster(args) as client:
        path = reproduce.run(out=args.out, mode=args.mode or "quick", seed=args.seed,
                             engines=engines, only=args.only, progress=args.progress,
                             threads=args.threads, command=[PROG] + list(argv),
                             client=client)
    print(f"wrote {path}")
    return 0


def cmd_bench(args):
    from .analysis.bench import main as bench_main
    return int(bench_main(list(args.args), prog=f"{PROG} bench") or 0)


def main(argv=None):
    """Entry point of the ``sparseadv`` console script; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    parser = build_parser()
    if argv and argv[0] == "bench":
        # Everything after "bench" belongs to sparseadv.analysis.bench (argparse's REMAINDER
        # cannot take a leading option such as "bench --help").
        args = argparse.Namespace(command="bench", args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "reproduce":
            return cmd_reproduce(args, argv)
        if args.command == "bench":
            return cmd_bench(args)
    except (SparseAdvError, OSError) as exc:
        # Only the project's own errors (bad usage, bad data or checkpoint files) and the
        # operating system's are one line; anything else is a bug and shows its traceback.
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}: {exc.filename or ''}".strip(": ")
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
