"""The scaling report: fits on synthetic measurements, a tiny measured grid, asv results, CLI errors.

asv results: tests/data/asv_results/ was produced by asv 0.6.6 from the fake benchmarks in
tests/data/asv_fixture/ (tests/data/make_asv_results.py); SPARSEADV_TEST_ASV=1 regenerates
them with the installed asv inside the test (10-30 s) and parses the fresh files too.
"""
import csv
import math
import os

import numpy as np
import pytest

from sparseadv import scaling
from sparseadv.theory import PowerLawFit

DATA = os.path.join(os.path.dirname(__file__), "data")
ASV_RESULTS = os.path.join(DATA, "asv_results")


def synthetic_rows(engine, a_m, a_n, a_d, noise=0.0, seed=0, scale=1e-9):
    rng = np.random.default_rng(seed)
    rows = []
    for m, n, d in scaling.grid_points("default"):
        base = scale * m ** a_m * n ** a_n * d ** a_d
        rows.append({"engine": engine, "m": m, "n": n, "d": d,
                     "seconds": base * math.exp(noise * rng.standard_normal()),
                     "inner_products": 1e9 * base, "candidate_pairs": 0})
    return rows


def by_quantity(fitted, engine):
    return {e["quantity"]: e for e in fitted if e["engine"] == engine}


# --------------------------------------------------------------------------- fitting

def test_grid_has_slices_through_the_centre():
    pts = scaling.grid_points("default")
    assert len(pts) == 9 and scaling.GRIDS["default"]["center"] in pts
    for axis in scaling.AXES:
        idx = scaling.slice_indices(pts, axis)
        assert len(idx) == len(scaling.GRIDS["default"][axis])
    large = scaling.grid_points("large")
    assert max(m for m, _, _ in large) == 2 ** 20
    assert 0 < scaling.estimate_dense_seconds(pts) < scaling.estimate_dense_seconds(large)


def test_exact_power_laws_are_recovered():
    rows = synthetic_rows("lin", 1.0, 1.0, 0.0) + synthetic_rows("sub", 0.8, 1.0, 0.5)
    fitted = scaling.fit_rows(rows)
    for engine, expect in (("lin", (1.0, 1.0, 0.0)), ("sub", (0.8, 1.0, 0.5))):
        got = by_quantity(fitted, engine)
        assert "candidate_pairs" not in got          # zero counts are not fitted
        for quantity in ("seconds", "inner_products"):
            e = got[quantity]
            assert e["method"] == "grid" and e["points"] == 9
            for axis, want in zip(scaling.AXES, expect):
                assert e["fits"][axis].exponent == pytest.approx(want, abs=1e-9)
                assert e["slices"][axis].exponent == pytest.approx(want, abs=1e-9)
    # Verdicts: an exact m^1 law is *not* below 1 (round-off must not flip it), m^0.8 is.
    assert scaling.verdict(by_quantity(fitted, "lin")["inner_products"]["fits"]["m"])[0] == "no"
    assert scaling.verdict(by_quantity(fitted, "sub")["inner_products"]["fits"]["m"])[0] == "yes"
    text = scaling.format_verdicts(fitted)
    assert "**lin**: m-exponent below 1 with 95% confidence: **no**" in text
    assert "**sub**: m-exponent below 1 with 95% confidence: **yes**" in text


def test_confidence_intervals_cover_under_noise():
    covered = total = 0
    for seed in range(20):
        fitted = scaling.fit_rows(synthetic_rows("noisy", 0.9, 1.0, 0.3, noise=0.05, seed=seed))
        fits = by_quantity(fitted, "noisy")["seconds"]["fits"]
        for axis, want in zip(scaling.AXES, (0.9, 1.0, 0.3)):
            f = fits[axis]
            assert f.ci_low < f.exponent < f.ci_high
            covered += f.ci_low <= want <= f.ci_high
            total += 1
    assert covered / total >= 0.85                   # nominal 95%


def test_verdict_logic():
    def fit(hi, lo=0.5):
        return PowerLawFit(0.5 * (lo + hi), 0.0, 0.1, lo, hi, 9)
    assert scaling.verdict(None)[0] == "no"
    assert scaling.verdict(PowerLawFit(0.7, 0.0, math.nan, math.nan, math.nan, 2))[0] == "no"
    assert scaling.verdict(fit(0.95))[0] == "yes"
    assert scaling.verdict(fit(1.0 - 1e-12))[0] == "no"
    assert scaling.verdict(fit(1.2))[0] == "no"


def test_collinear_grid_falls_back_to_slices():
    # n and d move together between the two off-slice points: not identifiable jointly.
    sizes = [(1024, 256, 16), (2048, 256, 16), (4096, 256, 16), (4096, 1024, 64)]
    rows = [{"engine": "e", "m": m, "n": n, "d": d, "inner_products": 3 * m * n,
             "seconds": 1e-9 * m * n * d} for m, n, d in sizes]
    fitted = scaling.fit_rows(rows)
    e = by_quantity(fitted, "e")["inner_products"]
    assert e["method"] == "slices" and "collinear" in e["note"]
    assert e["fits"]["m"].exponent == pytest.approx(1.0)
    assert e["fits"]["n"] is None and e["fits"]["d"] is None
    table = scaling.format_table(fitted)
    assert "| e | inner_products | 4 | slices | 1.000 [1.000, 1.000] | — | — | no |" in table


# --------------------------------------------------------------------------- a tiny run

@pytest.fixture
def tiny_grid(monkeypatch):
    monkeypatch.setitem(scaling.GRIDS, "tiny",
                        {"center": (256, 32, 8), "m": [256, 512], "n": [32, 64], "d": [8]})
    return "tiny"


def test_tiny_run_writes_report(tiny_grid, tmp_path, capsys):
    out = tmp_path / "rep"
    assert scaling.main(["--run", "--grid", tiny_grid, "--engines", "dense", "--repeats", "1",
                         "--seed", "3", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    md = (out / "scaling.md").read_text()
    for needle in ("## Exponents", "m-exponent below 1 with 95% confidence",
                   "OMP_NUM_THREADS", "threadpoolctl", "numpy", "scipy", "sparseadv",
                   "network seed=3", "--grid tiny", "CPUs"):
        assert needle in md
    with open(out / "scaling.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for r in rows:
        m, n = int(r["m"]), int(r["n"])
        assert int(r["inner_products"]) == 5 * m * n == int(r["dense_inner_products"])
        assert float(r["seconds"]) > 0 and r["source"] == "run"
    # Dense inner products are exactly (steps + 2) m n: exponent 1 in m and n, d constant.
    fitted = scaling.fit_rows(scaling.read_csv(out / "scaling.csv"))
    ip = by_quantity(fitted, "dense")["inner_products"]
    assert ip["fits"]["m"].exponent == pytest.approx(1.0, abs=1e-9)
    assert ip["fits"]["n"].exponent == pytest.approx(1.0, abs=1e-9)
    assert ip["fits"]["d"] is None
    printed = capsys.readouterr().out
    assert "| dense | inner_products |" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed: PNGs not checked")
    for name in ("scaling_seconds.png", "scaling_inner_products.png"):
        png = out / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md


# --------------------------------------------------------------------------- asv results

def check_asv_rows(rows):
    engines = {r["engine"] for r in rows}
    assert engines == {"exact", "sqrt", "dense"}    # "missing" was skipped (NaN), Unrelated ignored
    fitted = scaling.fit_rows(rows)
    exact = by_quantity(fitted, "exact")["inner_products"]["fits"]
    assert exact["m"].exponent == pytest.approx(1.0) and exact["n"].exponent == pytest.approx(1.0)
    assert exact["d"].exponent == pytest.approx(0.0, abs=1e-9)
    sq = by_quantity(fitted, "sqrt")
    assert sq["inner_products"]["fits"]["m"].exponent == pytest.approx(0.5)
    assert sq["inner_products"]["fits"]["d"].exponent == pytest.approx(0.5)
    assert sq["fired_pairs"]["fits"]["m"].exponent == pytest.approx(0.75)
    assert scaling.verdict(sq["inner_products"]["fits"]["m"])[0] == "yes"
    assert "seconds" in sq                           # time_iteration was read
    dense = by_quantity(fitted, "dense")["inner_products"]
    assert dense["points"] == 3 and dense["fits"]["m"].exponent == pytest.approx(1.0)
    assert all(r["steps"] == 3 for r in rows if r["engine"] == "dense")


def test_parses_committed_asv_results():
    rows, info = scaling.load_asv_results(ASV_RESULTS)
    assert info["machine"] == "fixture" and len(info["commit"]) == 40
    check_asv_rows(rows)


def test_from_asv_report(tmp_path, capsys):
    out = tmp_path / "asv-rep"
    assert scaling.main(["--from-asv", ASV_RESULTS, "--out", str(out), "--no-plots"]) == 0
    md = (out / "scaling.md").read_text()
    assert "asv results" in md and "| sqrt | inner_products |" in md
    assert len(list(csv.DictReader(open(out / "scaling.csv")))) == 3 + 5 + 5


@pytest.mark.skipif(os.environ.get("SPARSEADV_TEST_ASV") != "1",
                    reason="runs asv (10-30 s); set SPARSEADV_TEST_ASV=1")
def test_parses_fresh_asv_results(tmp_path):
    pytest.importorskip("asv")
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_asv_results",
                                                  os.path.join(DATA, "make_asv_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows, _ = scaling.load_asv_results(mod.generate(str(tmp_path / "results")))
    check_asv_rows(rows)


def test_asv_errors(tmp_path, capsys):
    with pytest.raises(scaling.ScalingError, match="does not exist"):
        scaling.load_asv_results(str(tmp_path / "nope"))
    with pytest.raises(scaling.ScalingError, match="no asv result files"):
        scaling.load_asv_results(ASV_RESULTS, machine="other")
    with pytest.raises(SystemExit) as exc:
        scaling.main(["--from-asv", ASV_RESULTS, "--commit", "ffffffff", "--out",
                      str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "error: no asv result files" in capsys.readouterr().err
    bad = tmp_path / "bad" / "m1"
    bad.mkdir(parents=True)
    (bad / "abc-env.json").write_text('{"results": {}, "version": 1}')
    with pytest.raises(scaling.ScalingError, match="format version 1"):
        scaling.load_asv_results(str(tmp_path / "bad"))


def write_asv_results(root, benchmarks, machine="m1", commit="a" * 40):
    """A minimal asv (format 2) results directory: ``benchmarks`` maps a benchmark name to
    (param_names, params, values), params as Python values (written as asv writes them)."""
    import json
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


def test_asv_one_class_per_engine(tmp_path):
    # The sparseadv suite times dense in three classes with different settings (DenseIteration
    # lr=1.0 on its own sizes, DenseScaling on the scaling grid, EngineIteration lr="auto"):
    # the reader must not merge them into one fit.
    grid = scaling.grid_points("default")
    other = [(4096, 256, 16), (16384, 256, 16), (16384, 1024, 64)]
    eng_sizes = [(4096, 256, 3), (16384, 256, 3)]
    root = write_asv_results(tmp_path / "res", {
        "bench_dense.DenseIteration.time_iteration":
            (["m_n_d", "steps"], [other, [3]], [111.0] * 3),
        "bench_dense.DenseIteration.track_inner_products":
            (["m_n_d", "steps"], [other, [3]], [-1] * 3),
        "bench_dense.DenseScaling.track_inner_products":
            (["m_n_d", "steps"], [grid, [3]], [5 * m * n for m, n, d in grid]),
        "bench_engines.EngineIteration.time_iteration":
            (["engine", "size (m, n, d)"], [["dense", "certified"], eng_sizes],
             [222.0, 222.0, 1e-3 * 4096, 1e-3 * 16384]),
        "bench_engines.EngineIteration.track_inner_products":
            (["engine", "size (m, n, d)"], [["dense", "certified"], eng_sizes],
             [7, 7, 4096 ** 0.5, 16384 ** 0.5]),
        "bench_dense.Threads.track_threads": (["pool"], [["blas", "openmp"]], [2, 2]),
    })
    rows, info = scaling.load_asv_results(root)
    dense = [r for r in rows if r["engine"] == "dense"]
    assert sorted((r["m"], r["n"], r["d"]) for r in dense) == grid
    assert all(r["source"] == "asv:bench_dense.DenseScaling" for r in dense)
    assert all("seconds" not in r for r in dense)           # DenseIteration's times not mixed in
    assert all(r["inner_products"] == 5 * r["m"] * r["n"] for r in dense)
    cert = [r for r in rows if r["engine"] == "certified"]
    assert len(cert) == 2 and all(r["source"] == "asv:bench_engines.EngineIteration"
                                  for r in cert)
    assert info["classes"] == {"certified": "bench_engines.EngineIteration",
                               "dense": "bench_dense.DenseScaling"}
    assert sorted(info["ignored"]) == [("dense", "bench_dense.DenseIteration"),
                                       ("dense", "bench_engines.EngineIteration")]
    assert info["threads"] == {"blas": 2, "openmp": 2}
    fitted = scaling.fit_rows(rows)
    assert by_quantity(fitted, "certified")["inner_products"]["fits"]["m"].exponent == \
        pytest.approx(0.5)
    # Without a *Scaling class, the class with an engine parameter wins over DenseIteration.
    root2 = write_asv_results(tmp_path / "res2", {
        k: v for k, v in (("bench_dense.DenseIteration.time_iteration",
                           (["m_n_d", "steps"], [other, [3]], [111.0] * 3)),
                          ("bench_engines.EngineIteration.time_iteration",
                           (["engine", "size (m, n, d)"], [["dense"], eng_sizes], [1.0, 2.0])))})
    rows2, info2 = scaling.load_asv_results(root2)
    assert info2["classes"] == {"dense": "bench_engines.EngineIteration"}
    assert sorted(r["seconds"] for r in rows2) == [1.0, 2.0]


def test_run_only_options_mean_run(tiny_grid, tmp_path, monkeypatch, capsys):
    # ./.asv/results exists: without options it is read; with a run-only option the grid runs.
    import shutil
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ASV_RESULTS, tmp_path / ".asv" / "results")
    assert scaling.main(["--out", "a", "--no-plots", "--quiet"]) == 0
    assert "reading asv results" in capsys.readouterr().err
    with open(tmp_path / "a" / "scaling.csv") as fh:
        assert all(r["source"].startswith("asv:") for r in csv.DictReader(fh))
    assert scaling.main(["--grid", tiny_grid, "--engines", "dense", "--repeats", "1",
                         "--out", "r", "--no-plots", "--quiet"]) == 0
    assert "--grid, --repeats given" in capsys.readouterr().err
    with open(tmp_path / "r" / "scaling.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(r["source"] == "run" and r["repeats"] == "1" for r in rows)


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("argv, message", [
    (["--grid", "huge"], "--grid must be one of default, large"),
    (["--repeats", "0"], "argument --repeats: expected a positive integer"),
    (["--repeats", "x"], "argument --repeats: expected a positive integer"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["--engines", "dense,nope"], "unknown engine(s) nope"),
    (["--engines", ","], "--engines must name at least one engine"),
    (["--engines", "dense,dense"], "lists an engine twice"),
    (["--run", "--from-asv", "x"], "not allowed with argument"),
    (["--run", "--machine", "ci"], "--machine and --commit only apply with --from-asv"),
    (["--from-asv", "x", "--threads", "1"], "--threads only applies"),
    (["--from-asv", "x", "--grid", "large", "--lr", "1"],
     "--grid, --lr only apply when running the grid (--run), not with --from-asv"),
    (["--from-asv", "x", "--repeats", "5"], "--repeats only applies"),
    (["--eps", "-1"], "argument --eps: expected a number >= 0.0"),
    (["--lr", "nan"], "argument --lr: expected a finite number"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        scaling.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].count("error:") == 1


def test_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        scaling.main(["--run", "--out", str(f)])
    assert "exists and is not a directory" in capsys.readouterr().err
