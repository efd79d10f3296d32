"""The measurement pipeline (sparseadv.analysis): grids, fits, the sublinearity rule, runs,
the asv reader, and `sparseadv bench` / E3 agreeing with each other.

asv results: tests/data/asv_results/ was produced by asv 0.6.6 from the fake benchmarks in
tests/data/asv_fixture/ (tests/data/make_asv_results.py); SPARSEADV_TEST_ASV=1 regenerates
them with the installed asv inside the test (10-60 s) and parses the fresh files too.
"""
import csv
import importlib.util
import json
import math
import os
import shutil

import numpy as np
import pytest

from sparseadv import cli
from sparseadv.analysis import bench, fit, grid, measure, tables, verdict
from sparseadv.analysis.asv_results import load_asv_results
from sparseadv.errors import DataFileError, InputError
from sparseadv.reproduce import e3_cost, report
from sparseadv.theory import PowerLawFit

DATA = os.path.join(os.path.dirname(__file__), "data")
ASV_RESULTS = os.path.join(DATA, "asv_results")


def synthetic_rows(engine, law, noise=0.0, seed=0, points=None):
    """Rows on the default grid with seconds = inner_products * 1e-9 = law(m, n, d)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m, n, d in points or grid.grid_points("default"):
        v = law(m, n, d)
        rows.append({"engine": engine, "m": m, "n": n, "d": d,
                     "seconds": 1e-9 * v * math.exp(noise * rng.standard_normal()),
                     "inner_products": v, "candidate_pairs": 0})
    return rows


def by_quantity(fitted, engine):
    return {e["quantity"]: e for e in fitted if e["engine"] == engine}


def status(rows, engine):
    return verdict.sublinearity(by_quantity(fit.fit_rows(rows), engine).get("inner_products"))


# --------------------------------------------------------------------------- grids and fits

def test_grid_has_slices_through_the_centre():
    pts = grid.grid_points("default")
    assert len(pts) == 9 and grid.GRIDS["default"]["center"] in pts
    for axis in grid.AXES:
        assert len(grid.slice_indices(pts, axis)) == len(grid.GRIDS["default"][axis])
    assert max(m for m, _, _ in grid.grid_points("large")) == 2 ** 20
    from sparseadv.analysis.estimate import estimate_dense_seconds
    assert 0 < estimate_dense_seconds(pts) < estimate_dense_seconds(grid.grid_points("large"))


def test_exact_power_laws_are_recovered():
    rows = synthetic_rows("lin", lambda m, n, d: 5.0 * m * n) \
        + synthetic_rows("sub", lambda m, n, d: m ** 0.8 * n * d ** 0.5)
    fitted = fit.fit_rows(rows)
    for engine, expect in (("lin", (1.0, 1.0, 0.0)), ("sub", (0.8, 1.0, 0.5))):
        got = by_quantity(fitted, engine)
        assert "candidate_pairs" not in got          # zero counts are not fitted
        for quantity in ("seconds", "inner_products"):
            e = got[quantity]
            assert e["method"] == "grid" and e["points"] == 9
            for axis, want in zip(grid.AXES, expect):
                assert e["fits"][axis].exponent == pytest.approx(want, abs=1e-9)
                assert e["slices"][axis].exponent == pytest.approx(want, abs=1e-9)
    assert status(rows, "lin")[0] == verdict.NOT_SUBLINEAR
    assert status(rows, "sub")[0] == verdict.SUBLINEAR
    text = tables.format_verdicts(fitted)
    assert "**lin**: cost per iteration sublinear in m: **not sublinear**" in text
    assert "**sub**: cost per iteration sublinear in m: **sublinear**" in text


def test_confidence_intervals_cover_under_noise():
    covered = total = 0
    for seed in range(20):
        rows = synthetic_rows("noisy", lambda m, n, d: m ** 0.9 * n * d ** 0.3, 0.05, seed)
        fits = by_quantity(fit.fit_rows(rows), "noisy")["seconds"]["fits"]
        for axis, want in zip(grid.AXES, (0.9, 1.0, 0.3)):
            f = fits[axis]
            assert f.ci_low < f.exponent < f.ci_high
            covered += f.ci_low <= want <= f.ci_high
            total += 1
    assert covered / total >= 0.85                   # nominal 95%


def test_axes_with_fewer_than_three_values_are_not_fitted():
    pts = [(1024, 64, 8), (2048, 64, 8), (4096, 64, 8), (2048, 128, 8)]
    rows = synthetic_rows("e", lambda m, n, d: m * n, points=pts)
    e = by_quantity(fit.fit_rows(rows), "e")["inner_products"]
    assert e["fits"]["m"].exponent == pytest.approx(1.0)
    assert e["fits"]["n"] is None and e["distinct"]["n"] == 2
    assert "n: only 2 distinct values" in e["note"]


def test_collinear_grid_falls_back_to_slices():
    # n and d move together between the off-slice points: not identifiable jointly.
    pts = [(1024, 256, 16), (2048, 256, 16), (4096, 256, 16), (4096, 1024, 64),
           (4096, 2048, 128)]
    e = by_quantity(fit.fit_rows(synthetic_rows("e", lambda m, n, d: 3 * m * n, points=pts)),
                    "e")["inner_products"]
    assert e["method"] == "slices" and "collinear" in e["note"]
    assert e["fits"]["m"].exponent == pytest.approx(1.0)
    assert e["fits"]["n"] is None and e["fits"]["d"] is None


# --------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("share", [0.01, 0.1, 0.2, 0.3, 1.0, 10.0, 1000.0])
def test_linear_count_plus_a_constant_is_never_sublinear(share):
    # 5 m n plus a fixed cost of `share` times the smallest point's linear part
    c = share * 5 * 4096 * 256
    rows = synthetic_rows("lin+c", lambda m, n, d: 5.0 * m * n + c)
    assert status(rows, "lin+c")[0] != verdict.SUBLINEAR


@pytest.mark.parametrize("share", [0.0, 0.01, 0.1])
def test_sqrt_count_is_sublinear(share):
    c = share * 4096 ** 0.5 * 256
    rows = synthetic_rows("sqrt", lambda m, n, d: m ** 0.5 * n + c)
    assert status(rows, "sqrt") == (verdict.SUBLINEAR, pytest.approx(status(rows, "sqrt")[1]))
    assert status(rows, "sqrt")[0] == verdict.SUBLINEAR


def test_rule_needs_a_margin_a_large_grid_and_work_counts():
    def entry(hi, quantity="inner_products", pts=None, law=lambda m, n, d: m ** 0.9 * n):
        rows = synthetic_rows("e", law, points=pts)
        e = by_quantity(fit.fit_rows(rows), "e")[quantity]
        f = e["fits"]["m"]
        e["fits"]["m"] = PowerLawFit(f.exponent, f.intercept, f.stderr, f.ci_low, hi, f.n)
        return e
    assert verdict.sublinearity(entry(0.94))[0] == verdict.SUBLINEAR
    assert verdict.sublinearity(entry(0.96))[0] == verdict.NOT_SUBLINEAR   # inside the margin
    assert verdict.sublinearity(entry(math.nan))[0] == verdict.INCONCLUSIVE
    s, why = verdict.sublinearity(entry(0.5, "seconds"))
    assert s == verdict.INCONCLUSIVE and "does not decide" in why
    small = [(m, 32, 8) for m in (256, 512, 1024)]
    s, why = verdict.sublinearity(entry(0.5, pts=small))
    assert s == verdict.INCONCLUSIVE and "grid too small" in why
    assert verdict.sublinearity(None)[0] == verdict.INCONCLUSIVE


def test_dense_is_never_sublinear_on_the_default_grid():
    rows = measure.measure(["dense"], grid.grid_points("default"), warmup=0, repeats=1,
                           progress=False)
    assert all(r["inner_products"] == r["dense_inner_products"] == 5 * r["m"] * r["n"]
               for r in rows)
    fitted = fit.fit_rows(rows)
    assert tables.verdicts(fitted)["dense"][0] == verdict.NOT_SUBLINEAR
    # whatever the timings say, time does not decide
    t = by_quantity(fitted, "dense")["seconds"]
    assert verdict.sublinearity(t)[0] == verdict.INCONCLUSIVE


# --------------------------------------------------------------------------- runs

@pytest.fixture
def tiny_grid(monkeypatch):
    cfg = report.make_configs("tiny")["e3"]
    monkeypatch.setitem(grid.GRIDS, "tiny", cfg.grid())
    return cfg


def test_tiny_run_writes_report(tiny_grid, tmp_path, capsys):
    out = tmp_path / "rep"
    assert bench.main(["--grid", "tiny", "--engines", "dense", "--repeats", "1", "--seed", "3",
                       "--out", str(out), "--quiet", "--threads", "1"]) == 0
    md = (out / "scaling.md").read_text()
    for needle in ("## Exponents", "## Verdicts", "Rule (`sparseadv.analysis.verdict`)",
                   "OMP_NUM_THREADS", "threadpoolctl", "numpy", "scipy", "sparseadv",
                   "network seed 3", "--grid tiny", "cpu_count", "grid too small"):
        assert needle in md, needle
    rows = tables.read_csv(out / "scaling.csv")
    assert len(rows) == len(grid.grid_points("tiny"))
    for r in rows:
        assert r["inner_products"] == 5 * r["m"] * r["n"] == r["dense_inner_products"]
        assert r["seconds"] > 0 and r["source"] == "run"
    ip = by_quantity(fit.fit_rows(rows), "dense")["inner_products"]
    assert ip["fits"]["m"].exponent == pytest.approx(1.0, abs=1e-9)
    assert "| dense | inner_products |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    for name in bench.PLOTS.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md


def test_e3_and_bench_give_the_same_exponents(tiny_grid, tmp_path):
    engines = ("dense", "certified")
    e3 = e3_cost.run(tiny_grid, str(tmp_path), engines=engines, progress=False)
    out = tmp_path / "bench"
    assert bench.main(["--grid", "tiny", "--engines", ",".join(engines), "--repeats",
                       str(tiny_grid.repeats), "--warmup", str(tiny_grid.warmup), "--steps",
                       str(tiny_grid.steps), "--eps", str(tiny_grid.eps), "--seed",
                       str(tiny_grid.seed), "--out", str(out), "--quiet", "--no-plots"]) == 0
    ours = tables.read_csv(out / "scaling.csv")
    theirs = tables.read_csv(tmp_path / "e3_cost.csv")
    key = [(r["engine"], r["m"], r["n"], r["d"]) for r in ours]
    assert key == [(r["engine"], r["m"], r["n"], r["d"]) for r in theirs]
    counters = [q for q in fit.QUANTITIES if q != "seconds"]
    for a, b in zip(ours, theirs):
        assert a["lr"] == b["lr"]
        assert {q: a[q] for q in counters} == {q: b[q] for q in counters}
    f_bench, f_e3 = fit.fit_rows(ours), fit.fit_rows(theirs)
    for e in engines:
        for q in counters:
            fb, fe = by_quantity(f_bench, e).get(q), by_quantity(f_e3, e).get(q)
            assert (fb is None) == (fe is None)
            if fb is not None:
                assert fb["fits"] == fe["fits"]
        # E3's reported exponents are the pipeline's fits of its own rows (time included)
        for axis, per_q in e3["metrics"]["fits"][e].items():
            for q, got in per_q.items():
                q = "seconds" if q == "seconds_median" else q
                assert got == fit.fit_dict(by_quantity(f_e3, e)[q]["fits"][axis])
    assert set(e3["metrics"]["verdicts"]) == set(engines)


def test_no_flag_runs_the_grid_even_with_asv_results(tiny_grid, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ASV_RESULTS, tmp_path / ".asv" / "results")
    monkeypatch.setitem(grid.GRIDS, "default", tiny_grid.grid())
    assert bench.main(["--engines", "dense", "--repeats", "1", "--out", "r", "--no-plots",
                       "--quiet"]) == 0
    assert "running grid 'default'" in capsys.readouterr().err
    rows = tables.read_csv(tmp_path / "r" / "scaling.csv")
    assert rows and all(r["source"] == "run" for r in rows)


# --------------------------------------------------------------------------- asv results

def check_asv_rows(rows):
    assert {r["engine"] for r in rows} == {"exact", "sqrt", "dense"}   # missing: NaN; Unrelated
    fitted = fit.fit_rows(rows)
    exact = by_quantity(fitted, "exact")["inner_products"]["fits"]
    assert exact["m"].exponent == pytest.approx(1.0) and exact["n"].exponent == pytest.approx(1.0)
    assert exact["d"].exponent == pytest.approx(0.0, abs=1e-9)
    sq = by_quantity(fitted, "sqrt")
    assert sq["inner_products"]["fits"]["m"].exponent == pytest.approx(0.5)
    assert sq["inner_products"]["fits"]["d"].exponent == pytest.approx(0.5)
    assert sq["fired_pairs"]["fits"]["m"].exponent == pytest.approx(0.75)
    assert "seconds" in sq                           # time_iteration was read
    dense = by_quantity(fitted, "dense")["inner_products"]
    assert dense["points"] == 3 and dense["fits"]["m"].exponent == pytest.approx(1.0)
    assert all(r["steps"] == 3 for r in rows if r["engine"] == "dense")


def test_parses_committed_asv_results():
    rows, info = load_asv_results(ASV_RESULTS)
    assert info["machine"] == "fixture" and len(info["commit"]) == 40
    check_asv_rows(rows)


def test_from_asv_report_says_what_it_read(tmp_path, capsys):
    out = tmp_path / "asv-rep"
    assert bench.main(["--from-asv", ASV_RESULTS, "--out", str(out), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "asv commit:" in err
    assert ("asv sqrt: bench_fake.FakeEngines (time_iteration, track_fired_pairs, "
            "track_inner_products): 7 points") in err
    assert "3 distinct m, 1 distinct n, 1 distinct d" in err       # DenseIteration
    md = (out / "scaling.md").read_text()
    assert "asv results" in md and "| sqrt | inner_products |" in md
    assert "asv dense: bench_fake.DenseIteration (track_inner_products): 3 points" in md
    assert len(list(csv.DictReader(open(out / "scaling.csv")))) == 3 + 7 + 7


@pytest.mark.skipif(os.environ.get("SPARSEADV_TEST_ASV") != "1",
                    reason="runs asv (10-60 s); set SPARSEADV_TEST_ASV=1")
def test_parses_fresh_asv_results(tmp_path):
    pytest.importorskip("asv")
    spec = importlib.util.spec_from_file_location("make_asv_results",
                                                  os.path.join(DATA, "make_asv_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    check_asv_rows(load_asv_results(mod.generate(str(tmp_path / "results")))[0])


def write_asv_results(root, benchmarks, machine="m1", commit="a" * 40):
    """A minimal asv (format 2) results directory: ``benchmarks`` maps a benchmark name to
    (param_names, params, values), params as Python values (written as asv writes them)."""
    results, specs = {}, {}
    for name, (names, params, values) in benchmarks.items():
        params = [[repr(v) for v in p] for p in params]
        results[name] = [values, params, "0" * 64, 1700000000000, 1.0]
        specs[name] = {"name": name, "param_names": names, "params": params}
    (root / machine).mkdir(parents=True)
    (root / machine / f"{commit[:8]}-env.json").write_text(json.dumps(
        {"commit_hash": commit, "env_name": "env", "params": {"machine": machine},
         "requirements": {}, "env_vars": {}, "version": 2,
         "result_columns": ["result", "params", "version", "started_at", "duration"],
         "results": results}))
    (root / "benchmarks.json").write_text(json.dumps(specs))
    return str(root)


def test_asv_too_few_points_is_refused(tmp_path, capsys):
    # one `asv continuous` of a single benchmark: three dense points, two distinct m
    sizes = [(4096, 256, 16), (16384, 256, 16), (16384, 1024, 64)]
    root = write_asv_results(tmp_path / "res", {
        "bench_dense.DenseIteration.time_iteration": (["m_n_d", "steps"], [sizes, [3]],
                                                      [0.1, 0.2, 0.9])})
    with pytest.raises(SystemExit) as exc:
        bench.main(["--from-asv", root, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "asv dense: bench_dense.DenseIteration (time_iteration): 3 points; 2 distinct m" in err
    assert "fewer than 3 distinct values of m, n and d for every engine" in err


def test_asv_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="does not exist"):
        load_asv_results(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="no asv result files"):
        load_asv_results(ASV_RESULTS, machine="other")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--from-asv", ASV_RESULTS, "--commit", "ffffffff", "--out",
                    str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "error: --from-asv: no asv result files" in capsys.readouterr().err
    bad = tmp_path / "bad" / "m1"
    bad.mkdir(parents=True)
    (bad / "abc-env.json").write_text('{"results": {}, "version": 1}')
    with pytest.raises(DataFileError, match="format version 1"):
        load_asv_results(str(tmp_path / "bad"))


def test_asv_one_class_per_engine(tmp_path):
    # dense is timed in three classes with different settings; they must not be merged
    pts = grid.grid_points("default")
    other = [(4096, 256, 16), (16384, 256, 16), (16384, 1024, 64)]
    eng = [(4096, 256, 3), (16384, 256, 3), (65536, 256, 3)]
    root = write_asv_results(tmp_path / "res", {
        "bench_dense.DenseIteration.time_iteration":
            (["m_n_d", "steps"], [other, [3]], [111.0] * 3),
        "bench_dense.DenseScaling.track_inner_products":
            (["m_n_d", "steps"], [pts, [3]], [5 * m * n for m, n, d in pts]),
        "bench_engines.EngineIteration.time_iteration":
            (["engine", "m_n_d"], [["dense", "certified"], eng],
             [222.0] * 3 + [1e-3 * m for m, _, _ in eng]),
        "bench_engines.EngineIteration.track_inner_products":
            (["engine", "m_n_d"], [["dense", "certified"], eng],
             [7] * 3 + [m ** 0.5 for m, _, _ in eng]),
        "bench_dense.Threads.track_threads": (["pool"], [["blas", "openmp"]], [2, 2]),
    })
    rows, info = load_asv_results(root)
    dense = [r for r in rows if r["engine"] == "dense"]
    assert sorted((r["m"], r["n"], r["d"]) for r in dense) == pts
    assert all(r["source"] == "asv:bench_dense.DenseScaling" and "seconds" not in r
               for r in dense)
    assert info["classes"] == {"certified": "bench_engines.EngineIteration",
                               "dense": "bench_dense.DenseScaling"}
    assert sorted(info["ignored"]) == [("dense", "bench_dense.DenseIteration"),
                                       ("dense", "bench_engines.EngineIteration")]
    assert info["threads"] == {"blas": 2, "openmp": 2}
    cert = by_quantity(fit.fit_rows(rows), "certified")["inner_products"]
    assert cert["fits"]["m"].exponent == pytest.approx(0.5)


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("argv, message", [
    (["--grid", "huge"], "--grid must be one of default, large"),
    (["--repeats", "0"], "argument --repeats: expected a positive integer"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["--engines", "dense,nope"], "unknown engine(s) nope"),
    (["--engines", ","], "--engines must name at least one engine"),
    (["--engines", "dense,dense"], "lists an engine twice"),
    (["--machine", "ci"], "--machine and --commit only apply with --from-asv"),
    (["--from-asv", "x", "--threads", "1"], "--threads only applies"),
    (["--from-asv", "x", "--run"], "--run only applies"),
    (["--from-asv", "x", "--grid", "large", "--lr", "1"],
     "--grid, --lr only apply when running the grid, not with --from-asv"),
    (["--eps", "-1"], "argument --eps: expected a number >= 0.0"),
    (["--lr", "nan"], "argument --lr: expected a finite number"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].count("error:") == 1


def test_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        bench.main(["--out", str(f)])
    assert "exists and is not a directory" in capsys.readouterr().err


def test_cli_bench_passes_its_arguments_on(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--grid", "huge"])
    assert exc.value.code == 2
    assert "sparseadv bench: error: --grid must be one of" in capsys.readouterr().err
