"""``sparseadv reproduce`` on a tiny config, the E4/E5 fallbacks, and the verdict logic."""
import math
import os
import sys
import types

import numpy as np

import sparseadv
import pytest

from sparseadv import reproduce
from sparseadv.reproduce import e4_hsr, e5_real_data, report
from sparseadv.reproduce import robust_eval
from sparseadv.reproduce.report import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, PARTLY,
                                        verdict_convergence, verdict_cost, verdict_exactness,
                                        verdict_robust, verdict_sparsity, verdict_stability,
                                        verdict_tree)

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = reproduce.run(out=str(out), mode="tiny", progress=False,
                         command=["sparseadv", "reproduce", "--tiny"])
    return out, path


def test_tiny_report_has_everything(tiny_report):
    out, path = tiny_report
    text = open(path, encoding="utf-8").read()
    for title in ("## Claims and verdicts", "## E1 sparsity", "## E2 training in the theory",
                  "## E3 cost", "## E4 the data structure", "## E5 real data", "## Machine",
                  "#### digits", "#### breast cancer", "### Robustness against eps"):
        assert title in text
    assert "`sparseadv reproduce --tiny`" in text
    assert "threads" in text.lower() and "numpy" in text
    for name in ("e1_sparsity.csv", "e2_loss_curves.csv", "e2_training.csv", "e2_fired.csv",
                 "e2_robustness.csv", "e2_robustness.png", "e3_cost.csv", "e1_sparsity.png",
                 "e2_training.png", "e3_time.png", "e3_inner_products.png", "results.json",
                 "e5_digits_robustness.csv", "e5_breast_cancer_robustness.png",
                 "e5_real_data.csv"):
        assert os.path.getsize(out / name) > 0, name
    for claim in (report.CLAIM_SPARSITY, report.CLAIM_COST_HSR, report.CLAIM_COST_SPARSE,
                  report.CLAIM_EXACT, report.CLAIM_CONVERGENCE, report.CLAIM_ROBUST,
                  report.CLAIM_TREE, report.CLAIM_STABLE):
        assert claim in text
    # robust accuracies come from the margin ensemble, shown next to the squared-loss PGD
    import csv
    rows = list(csv.DictReader(open(out / "e2_robustness.csv")))
    assert {r["model"] for r in rows} == {"initial", "standard", "adversarial"}
    for r in rows:
        assert float(r["robust_acc"]) <= min(float(r["robust_acc_margin_pgd"]),
                                             float(r["robust_acc_squared_loss_pgd"]))
    import json
    m2 = json.load(open(out / "results.json"))["e2"]["metrics"]
    assert max(m2["eps_grid"]) > m2["half_separation"] and min(m2["eps_grid"]) == 0.0
    assert "Failed" not in text
    assert "Past the report's horizon" in text and m2["long_run"]["iterations"] == 12
    # the gain at eps* over training seeds: E2 and both E5 data sets
    assert text.count("over 3 training seeds (start and data") == 3
    assert len(m2["gains_seeds"]["held-out points"]) == 3
    try:
        import sparseadv.hsr  # noqa: F401
        assert (out / "e4_hsr.csv").exists()
    except ImportError:
        assert "Not available: the module `sparseadv.hsr`" in text


class _FakeTree:
    """A brute-force stand-in with the hsr interface, so E4's code path runs without hsr."""

    def __init__(self, W, leaf_size=32):
        self.W = np.asarray(W)
        self.stats = {"inner_products": 0}

    def query_batch(self, X, b):
        S = X @ self.W.T
        self.stats["inner_products"] += S.size
        rows = [np.flatnonzero(s > b) for s in S]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return indptr, indices


def test_e4_with_a_fake_hsr(tmp_path, monkeypatch):
    fake = types.ModuleType("sparseadv.hsr")
    fake.PartitionTree = _FakeTree
    fake.BruteForceHSR = lambda W: _FakeTree(W)
    monkeypatch.setitem(sys.modules, "sparseadv.hsr", fake)
    monkeypatch.setattr(sparseadv, "hsr", fake, raising=False)
    cfg = report.make_configs("tiny")["e4"]
    res = e4_hsr.run(cfg, str(tmp_path), progress=False)
    assert res["status"] == "ok"
    m4 = res["metrics"]
    assert m4["all_exact"]
    assert all(abs(v - 1.0) < 1e-12 for v in m4["fraction_by_d"].values())
    assert abs(m4["fit_m"]["exponent"] - 1.0) < 1e-9       # brute force: linear in m
    assert verdict_tree(m4)["verdict"] == FAILS
    assert (tmp_path / "e4_hsr.csv").exists() and (tmp_path / "e4_hsr.png").exists()


def test_e4_without_hsr(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sparseadv.hsr", None)   # import raises ImportError
    monkeypatch.delattr(sparseadv, "hsr", raising=False)
    res = e4_hsr.run(report.make_configs("tiny")["e4"], str(tmp_path), progress=False)
    assert res["status"] == "not available" and "not available" in res["markdown"].lower()
    v = report.claims_table({"e4": res})[-1]
    assert v["verdict"] == NOT_MEASURED and "not available" in v["measured"]


def test_e5_without_sklearn(tmp_path, monkeypatch):
    def no_sklearn(*a, **k):
        raise ImportError("no sklearn")
    monkeypatch.setattr(e5_real_data.datasets, "load_digits", no_sklearn)
    res = e5_real_data.run(report.make_configs("tiny")["e5"], str(tmp_path), progress=False)
    assert res["status"] == "not available"
    assert "pip install 'sparseadv[digits]'" in res["markdown"]


# --------------------------------------------------------------------------- verdicts

def _fit(e, lo, hi, n=5):
    return {"exponent": e, "intercept": 0.0, "stderr": 0.01, "ci_low": lo, "ci_high": hi, "n": n}


def _m1(fits, ratios):
    return {"ms": [1024, 2048, 4096], "d": 16, "n": 64, "eps": 0.05,
            "fits": fits, "ratio_to_bound": ratios}


def _m2(diffs=None, per_m=None, gains=None, fired=None, fired_fits=None):
    return {"ms": [1024, 4096], "engines": ["dense"] + list(diffs or {}), "n": 32, "d": 8,
            "eps": 0.1, "iterations": 200, "diffs": diffs or {}, "per_m": per_m or [],
            "gains": gains or {}, "fired": fired or [], "fired_fits": fired_fits or {}}


def test_verdict_sparsity():
    S = ("clean_init", "adv_init")
    good = _m1({s: _fit(0.74, 0.70, 0.78) for s in S}, {s: 0.3 for s in S})
    v = verdict_sparsity(good)
    assert v["verdict"] == HOLDS and "0.740 [0.700, 0.780]" in v["measured"]
    wide = _m1({s: _fit(0.74, 0.2, 1.3) for s in S}, {s: 0.3 for s in S})
    assert verdict_sparsity(wide)["verdict"] == INCONCLUSIVE
    linear = _m1({s: _fit(1.0, 0.98, 1.02) for s in S}, {s: 3.0 for s in S})
    assert verdict_sparsity(linear)["verdict"] == FAILS
    assert verdict_sparsity(None)["verdict"] == NOT_MEASURED
    # over training (E2): a count above m^{4/5} or a linear exponent there spoils the claim
    fired = [{"m": 1024, "max_attacked": 50.0, "max_clean": 40.0, "m45": 256.0}]
    ok2 = _m2(fired=fired, fired_fits={"attacked": _fit(0.7, 0.6, 0.8),
                                       "clean": _fit(0.7, 0.6, 0.8)})
    assert verdict_sparsity(good, ok2)["verdict"] == HOLDS
    assert "training attacked" in verdict_sparsity(good, ok2)["measured"]
    bad2 = _m2(fired=fired, fired_fits={"attacked": _fit(1.0, 0.95, 1.05),
                                        "clean": _fit(0.7, 0.6, 0.8)})
    assert verdict_sparsity(good, bad2)["verdict"] == PARTLY
    assert verdict_sparsity(None, ok2)["verdict"] == HOLDS


def _m3(engines, fits, speed, frac, rule=None):
    # rule: {engine: status of sparseadv.analysis.verdict} as E3 writes it into its metrics
    return {"engines": engines, "fits": fits, "ms": [1024, 4096], "ns": [32, 64], "ds": [4, 8],
            "m0": 4096, "n0": 64, "d0": 8, "speedup_at_max_m": speed, "ip_fraction_at_max_m": frac,
            "verdicts": {e: {"status": st, "reason": f"rule said {st}"}
                         for e, st in (rule or {}).items()}}


def test_verdict_cost():
    dense = {ax: {"seconds_median": _fit(1.0, 0.9, 1.1), "inner_products": _fit(1, 1, 1)}
             for ax in "mnd"}
    v = verdict_cost(_m3(["dense"], {"dense": dense}, {"dense": 1.0}, {"dense": 1.0}))
    assert len(v) == 1 and v[0]["verdict"] == NOT_MEASURED
    assert "no sparse engine" in v[0]["measured"]
    sub = {ax: {"seconds_median": _fit(0.6, 0.5, 0.7), "inner_products": _fit(0.7, 0.65, 0.75)}
           for ax in "mnd"}
    # the work verdict comes from the one rule (sparseadv.analysis.verdict), the speed-up
    # decides between "holds" and "partly holds"
    v = verdict_cost(_m3(["dense", "tree"], {"dense": dense, "tree": sub},
                         {"dense": 1.0, "tree": 4.0}, {"dense": 1.0, "tree": 0.1},
                         {"dense": "not sublinear", "tree": "sublinear"}))
    assert v[0]["verdict"] == HOLDS and v[0]["claim"] == report.CLAIM_COST_HSR
    assert "rule said sublinear" in v[0]["measured"]
    v = verdict_cost(_m3(["dense", "certified"], {"dense": dense, "certified": sub},
                         {"dense": 1.0, "certified": 0.5}, {"dense": 1.0, "certified": 0.1},
                         {"certified": "sublinear"}))
    assert v[0]["verdict"] == PARTLY and "not faster" in v[0]["measured"]
    assert v[0]["claim"] == report.CLAIM_COST_SPARSE
    # the same fits, but the rule calls the grid inconclusive or the work linear
    v = verdict_cost(_m3(["dense", "tree"], {"dense": dense, "tree": sub},
                         {"dense": 1.0, "tree": 4.0}, {"dense": 1.0, "tree": 0.1},
                         {"tree": "inconclusive"}))
    assert v[0]["verdict"] == INCONCLUSIVE
    v = verdict_cost(_m3(["dense", "tree"], {"dense": dense, "tree": sub},
                         {"dense": 1.0, "tree": 4.0}, {"dense": 1.0, "tree": 0.1},
                         {"tree": "not sublinear"}))
    assert v[0]["verdict"] == FAILS
    v = verdict_cost(_m3(["dense", "tree"], {"dense": dense, "tree": sub},
                         {"dense": 1.0, "tree": 4.0}, {"dense": 1.0, "tree": 0.1}))
    assert v[0]["verdict"] == NOT_MEASURED


def test_report_cost_rows_use_the_bench_rule(tiny_report):
    # REPORT.md and `sparseadv bench` answer the cost question with one rule: the cost rows'
    # verdicts are E3's rule statuses (mapped), never a second rule of the report's own
    import json
    import os
    out, _ = tiny_report
    res = json.load(open(os.path.join(out, "results.json")))
    m3 = res["e3"]["metrics"]
    mapping = {"sublinear": (HOLDS, PARTLY), "not sublinear": (FAILS,),
               "inconclusive": (INCONCLUSIVE,)}
    rows = verdict_cost(m3)
    sparse = [e for e in m3["engines"] if e != "dense"]
    assert len(rows) == len(sparse)
    for e, row in zip(sparse, rows):
        assert row["verdict"] in mapping[m3["verdicts"][e]["status"]]


def _row(m, ratio, n=32, seeds=None):
    # seeds: the ratios over the seeds trained at this width (the first is the main run's)
    r = {"m": m, "n": n, "min_adv": 0.01 * ratio, "min_std": 0.01, "last_adv": 0.01,
         "last_std": 0.01, "ratio_min": ratio, "rel_dW": 0.01, "K": 1.0, "flip_frac": 0.01,
         "decrease_frac": 0.9}
    if seeds is not None:
        r.update(ratio_seeds=[ratio] + list(seeds), decrease_seeds=[0.9] * (1 + len(seeds)))
    return r


def test_verdict_exactness_and_convergence():
    assert verdict_exactness(_m2())["verdict"] == NOT_MEASURED
    assert verdict_exactness(_m2({"tree": {"loss_rel": 1e-14, "w_rel": 1e-15}}))["verdict"] == HOLDS
    assert verdict_exactness(_m2({"tree": {"loss_rel": 1e-3, "w_rel": 1e-15}}))["verdict"] == FAILS
    assert verdict_convergence(_m2(per_m=[_row(1024, 0.3, seeds=[0.4, 0.5]),
                                          _row(4096, 0.2)]))["verdict"] == HOLDS
    assert verdict_convergence(_m2(per_m=[_row(1024, 0.3, seeds=[0.4]),
                                          _row(4096, 0.95)]))["verdict"] == PARTLY
    assert verdict_convergence(_m2(per_m=[_row(1024, 1.2), _row(4096, 1.0)]))["verdict"] == FAILS
    # widths below n^2 are outside the theory's regime and do not count
    v = verdict_convergence(_m2(per_m=[_row(512, 0.1), _row(4096, 1.5)]))
    assert v["verdict"] == FAILS and "m=512" not in v["measured"]
    assert verdict_convergence(_m2(per_m=[_row(512, 0.1)]))["verdict"] == NOT_MEASURED
    assert verdict_convergence(None)["verdict"] == NOT_MEASURED


def test_verdict_convergence_uses_the_spread_over_seeds():
    # the main seed alone passes, but another seed at the same width does not: the rule judges
    # by the largest ratio over the seeds, and reports the range
    one = verdict_convergence(_m2(per_m=[_row(1024, 0.5, seeds=[0.6, 0.7])]))
    assert one["verdict"] == HOLDS and "0.500…0.700" in one["measured"]
    assert "3 seeds" in one["regime"]
    bad = verdict_convergence(_m2(per_m=[_row(1024, 0.5, seeds=[0.6, 0.95])]))
    assert bad["verdict"] == PARTLY
    # every seed at or above standard training: does not hold; one seed above: partly
    assert verdict_convergence(_m2(per_m=[_row(1024, 1.1, seeds=[1.0, 1.3])]))["verdict"] == FAILS
    assert verdict_convergence(_m2(per_m=[_row(1024, 1.1, seeds=[0.5, 1.3])]))["verdict"] == PARTLY
    # one seed everywhere: no spread to judge by, so never more than partly
    v = verdict_convergence(_m2(per_m=[_row(1024, 0.3), _row(4096, 0.2)]))
    assert v["verdict"] == PARTLY and "one seed" in v["measured"]


def _fell(m, frac, seeds=None):
    r = _row(m, 0.5)
    r["decrease_frac"] = frac
    if seeds is not None:
        r["decrease_seeds"] = [frac] + list(seeds)
    return r


def test_verdict_stability():
    # judged on every run, each width and each seed: the smallest fraction decides
    assert verdict_stability(_m2(per_m=[_fell(1024, 0.99, [0.97, 0.96]),
                                        _fell(4096, 1.0)]))["verdict"] == HOLDS
    v = verdict_stability(_m2(per_m=[_fell(1024, 0.99, [0.97, 0.90]), _fell(4096, 1.0)]))
    assert v["verdict"] == PARTLY and "90.0%…99.0% over 3 seeds" in v["measured"]
    assert verdict_stability(_m2(per_m=[_fell(1024, 0.85),
                                        _fell(4096, 0.9)]))["verdict"] == FAILS
    assert verdict_stability(None)["verdict"] == NOT_MEASURED
    # the longer run is quoted, never judged
    m2 = _m2(per_m=[_fell(1024, 0.99)])
    m2["long_run"] = {"iterations": 400, "m": 1024, "fell": 0.8, "first_rise": 190,
                      "median_rise": 0.01, "last_over_min": 1.0002}
    v = verdict_stability(m2)
    assert v["verdict"] == HOLDS and "fell at 80.0%, not falling from t = 190" in v["measured"]


def test_floor_diagnostics():
    from sparseadv.reproduce.e2_convergence import floor_diagnostics
    d = floor_diagnostics([4.0, 3.0, 2.0, 2.2, 1.0, 1.1])
    assert d["fell"] == pytest.approx(3 / 5) and d["first_rise"] == 3
    assert d["median_rise"] == pytest.approx(0.1) and d["max_rise"] == pytest.approx(0.1)
    assert (d["min"], d["argmin"], d["last"]) == (1.0, 4, 1.1)
    assert d["last_over_min"] == pytest.approx(1.1)
    d = floor_diagnostics([3.0, 2.0, 1.0])
    assert d["fell"] == 1.0 and d["first_rise"] is None and d["median_rise"] == 0.0


def _g(gain, lo, hi):
    return {"eps": 0.3, "adversarial": 0.5 + gain, "standard": 0.5, "ceiling": 0.9,
            "gain": gain, "ci_low": lo, "ci_high": hi, "n_points": 100}


def test_verdict_robust():
    def both(g2, g5):
        return verdict_robust(_m2(gains={"held-out points": g2}),
                              {"gains": {"digits": {"held-out points": g5}}})["verdict"]
    assert both(_g(0.1, 0.05, 0.15), _g(0.1, 0.02, 0.2)) == HOLDS
    assert both(_g(0.1, 0.05, 0.15), _g(0.0, -0.05, 0.05)) == PARTLY
    assert both(_g(0.0, -0.05, 0.05), _g(0.01, -0.01, 0.03)) == INCONCLUSIVE
    assert both(_g(-0.1, -0.15, -0.05), _g(-0.1, -0.2, -0.02)) == FAILS
    assert both(None, None) == NOT_MEASURED
    assert verdict_robust(None, None)["verdict"] == NOT_MEASURED


def test_verdict_robust_judges_every_training_seed():
    good, flat = _g(0.1, 0.05, 0.15), _g(0.01, -0.02, 0.04)
    m2 = _m2(gains={"held-out points": good})
    assert verdict_robust(m2)["verdict"] == HOLDS
    # the main seed passes but another seed's interval straddles 0: partly, with the spread
    m2["gains_seeds"] = {"held-out points": [good, flat, good]}
    v = verdict_robust(m2)
    assert v["verdict"] == PARTLY and "over 3 seeds gain +0.010…+0.100" in v["measured"]
    assert "interval above 0 at 2 of 3" in v["measured"] and "3 training seeds" in v["regime"]
    # a seed without headroom is left out, not counted as a pass
    m2["gains_seeds"] = {"held-out points": [flat, None, flat]}
    assert verdict_robust(m2)["verdict"] == INCONCLUSIVE
    m5 = {"gains": {"digits": {"held-out points": good}},
          "gains_seeds": {"digits": {"held-out points": [good, good, good]}}}
    m2["gains_seeds"] = {"held-out points": [good, good]}
    assert verdict_robust(m2, m5)["verdict"] == HOLDS


def test_headroom_gain_and_bootstrap():
    rows = [{"split": "s", "eps": e, "model": mdl, "robust_acc": acc, "ceiling": c,
             "n_points": 4}
            for e, c, std, adv in ((0.0, 1.0, 1.0, 1.0), (0.1, 1.0, 0.98, 1.0),
                                   (0.2, 1.0, 0.5, 0.75))
            for mdl, acc in (("standard", std), ("adversarial", adv))]
    robust = {("s", 0.2, "standard"): np.array([1, 1, 0, 0], bool),
              ("s", 0.2, "adversarial"): np.array([1, 1, 1, 0], bool)}
    g = robust_eval.headroom_gain(rows, robust, "s", 0.1, seed=0)     # eps* = 2 x 0.1
    assert g["eps"] == 0.2 and g["gain"] == 0.25 and 0.0 <= g["ci_low"] <= 0.25 <= g["ci_high"]
    assert robust_eval.headroom_gain(rows, robust, "s", 0.05, seed=0) is None   # 0.98 vs 1.0
    assert robust_eval.headroom_gain(rows, robust, "s", 0.3, seed=0) is None    # not evaluated
    same = robust_eval.paired_gain([1, 0, 1], [1, 0, 1], seed=0)
    assert same == (0.0, 0.0, 0.0)


def test_verdict_tree():
    base = {"m": 4096, "low_d": 3, "ms": [1024, 2048, 4096], "fraction_by_d": {2: 0.03, 64: 1.0},
            "speedup_by_d": {2: 5.0, 64: 0.5}, "subspace_fraction": 0.1, "all_exact": True}
    v = verdict_tree(dict(base, fit_m=_fit(0.5, 0.45, 0.55)))
    assert v["verdict"] == HOLDS and "faster than brute force at d ∈ [2]" in v["measured"]
    assert verdict_tree(dict(base, fit_m=_fit(0.9, 0.7, 1.1)))["verdict"] == INCONCLUSIVE
    assert verdict_tree(dict(base, fit_m=_fit(0.5, 0.4, 0.6), all_exact=False))["verdict"] == FAILS
    assert verdict_tree(None)["verdict"] == NOT_MEASURED


def test_verdict_rules_text_is_formatted():
    assert "{" not in report.VERDICT_RULES and "0.95" in report.VERDICT_RULES


def test_fmt_fit():
    assert report.fmt_fit(_fit(0.5, math.nan, math.nan, n=2)) == "0.500 (no CI: 2 points)"
    assert report.fmt_fit(None) == "n/a"
