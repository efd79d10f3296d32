"""The one-off scripts in tools/: run as `python tools/NAME.py` (subprocess) and their helpers
imported from their path (importlib): engine specs with options, the contenders' table, and
the kernel profile (its per-kernel calls and tracked-pass counts agree with the engine's)."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from sparseadv.analysis.contenders import parse_engine

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_tool(name, *args):
    env = dict(os.environ, PYTHONPATH=str(TOOLS.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *args], env=env,
                          capture_output=True, text=True, check=True, timeout=600).stdout


def test_parse_engine():
    assert parse_engine("dense") == ("dense", {})
    assert parse_engine("certified:lazy=false,budget=0.05,x=abc,k=3") == (
        "certified", {"lazy": False, "budget": 0.05, "x": "abc", "k": 3})
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_engine("certified:lazy")
    assert load_tool("engine_compare").parse_engine is parse_engine


def test_engine_compare_table_with_the_references():
    engines = ["dense", "certified:lazy=false", "oracle"]
    try:
        import torch  # noqa: F401
        engines.append("torch64")
    except ImportError:
        pass
    out = run_tool("engine_compare", "--engines", *engines, "--m", "2048", "--n", "64",
                   "--d", "6", "--iters", "1", "--dense-iters", "1")
    assert out.startswith("m=2048 n=64 d=6 steps=3 eps=0.05 (l2), lr=auto")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| engine")}
    assert list(rows) == engines
    # every contender does the dense engine's fired pairs (same start, same iteration)
    assert len({r[6] for r in rows.values() if r[6] != "0.000e+00"}) == 1
    assert rows["dense"][9] == "1.0x" and float(rows["oracle"][10].strip(" |x")) > 1


@pytest.mark.parametrize("spec", ["certified", "certified:lazy=false", "tree", "dense"])
def test_kernel_profile_counts_every_pass(spec):
    kernel_profile = load_tool("kernel_profile")
    steps, iters = 3, 2
    rows = kernel_profile.profile(spec, 2048, 64, 6, steps, iters, 0.05, 0)
    assert len(rows) == iters
    for wall, system, log, passes in rows:
        assert wall > 0 and system >= 0
        calls = {k: c for k, (_, c) in log.items()}
        if spec == "certified":
            # a fresh pass at the clean points, then steps - 1 attack passes + the forward,
            # tracked
            assert calls["nm_pass"] == steps + 1 and "nm_forward" not in calls
            assert [p[0] for p in passes] == [True] + [False] * steps
            assert passes[0][1] >= 64 and all(ev >= 0 for _, ev, _, _ in passes)
        elif spec == "certified:lazy=false":
            # every pass fresh (over the pairs pass 0 kept)
            assert calls["nm_pass"] == steps + 1 and [p[0] for p in passes] == [True] * 4
        elif spec == "tree":
            # one fused query + forward per pass; the gradient reuses the last pass's pairs
            assert calls["tree.forward_batch"] == steps + 1 and "pm_forward" not in calls
            assert calls["pm_weight_grad"] == 1 and "tree.query_batch" not in calls
        else:
            assert calls["dense_forward"] == steps + 1 and calls["dense_weight_grad"] == 1
    # the profiler restores the engines' _core afterwards
    from sparseadv import _core
    from sparseadv.engines import certified
    assert certified._core is _core


def test_table_scripts_run():
    out = run_tool("dense_table", "--m", "1024", "--n", "32", "--d", "4", "--repeats", "1")
    assert "| sparseadv dense engine" in out and "| plain numpy" in out
    out = run_tool("hsr_table", "--m", "1024", "--n", "16", "--repeat", "1", "--cases", "3,8")
    assert out.count("| tree") + out.count("| 3 |") + out.count("| 8 |") >= 2
    out = run_tool("engine_table", "--m-min", "10", "--m-max", "12", "--n", "32", "--d", "4",
                   "--iters", "1", "--lr", "50", "--ns", "16", "32", "64", "--n-m", "1024")
    assert "Fitted: inner products per iteration ~ m^" in out and "lr = 50.0" in out
    assert "Fitted: inner products per iteration ~ n^" in out and "| 64 | " in out


def test_batch_table_epochs():
    out = run_tool("batch_table", "epochs", "--m", "512", "--n", "64", "--d", "4",
                   "--batches", "16", "--repeats", "1")
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| dense")
            or line.startswith("| certified")]
    assert [(r[0][2:], r[1], r[2]) for r in rows] == [
        ("dense", "full", "1"), ("dense", "16", "4"), ("certified", "full", "1"),
        ("certified", "16", "4")]
    # dense: the same inner products per epoch at any batch size
    assert rows[0][4] == rows[1][4]


def test_batch_table_digits():
    pytest.importorskip("sklearn")
    out = run_tool("batch_table", "digits", "--m", "256", "--seconds", "0.6", "--eval-every",
                   "0.3", "--eval-points", "20", "--batches", "64")
    best = out.split("| best robust accuracy |")[1]
    rows = [line.split(" | ") for line in best.splitlines() if line.startswith("| ")
            and not line.startswith("|---")]
    assert [r[0][2:] for r in rows] == ["full", "64"]
    assert all(0.0 <= float(r[1]) <= 1.0 and float(r[2]) > 0 for r in rows)


def test_before_after_times_the_given_checkout():
    import json
    import math
    root = str(TOOLS.parent)
    args = ["--repo", root, "--m", "256", "--n", "32", "--d", "4", "--iters", "2", "--lr", "5"]
    row = json.loads(run_tool("before_after", *args, "--engine", "certified").splitlines()[-1])
    assert row["repo"] == os.path.abspath(root) and row["engine"] == "certified"
    assert row["inner_products"] > 0 and row["seconds"] > 0 and math.isfinite(row["loss"])
    # the same iteration on the dense engine gives the same loss (engines agree)
    dense = json.loads(run_tool("before_after", *args, "--engine", "dense").splitlines()[-1])
    assert abs(dense["loss"] - row["loss"]) <= 1e-10 * abs(dense["loss"])


def test_stepsize_floor_rules():
    import numpy as np
    from sparseadv import PGD, AdversarialTrainer, ShiftedReLUNet, datasets
    from sparseadv.reproduce.e2_convergence import floor_diagnostics
    tool = load_tool("stepsize_floor")
    X, y = datasets.separated(32, 4, margin=0.1, seed=1)
    net0 = ShiftedReLUNet(256, 4, seed=0)
    lr0, its = 40.0, 40
    # constant: the trainer's own losses
    L = AdversarialTrainer(net0.copy(), PGD(0.1, 3), lr=2 * lr0).fit(X, y, its,
                                                                      progress=False)["loss"]
    r = tool._run("constant:2", net0, X, y, lr0, its, 0.1)
    assert r["fell"] == floor_diagnostics(L)["fell"] and r["min"] == L.min()
    assert r["lr_over_lr0"] == 2.0 and r["fell"] < 1.0      # this rate does oscillate
    # halve: one halving per iteration at which the loss did not fall
    h = tool._run("halve:2", net0, X, y, lr0, its, 0.1)
    rises = round((1 - h["fell"]) * (its - 1))
    assert h["lr_over_lr0"] == 2.0 * 0.5 ** rises and rises >= 1
    u = tool._run("undo:2", net0, X, y, lr0, its, 0.1)
    assert u["lr_over_lr0"] < 2.0
    out = run_tool("stepsize_floor", "--m", "256", "--n", "16", "--d", "4", "--iterations",
                   "5", "--seeds", "0", "--rules", "constant:1", "halve", "--strong", "2")
    assert out.count("| 0 | ") == 2 and "strong loss fell from t = 2" in out
