"""The one-off benchmark scripts' helpers: engine specs with options, and the kernel profile
(its per-kernel calls and tracked-pass counts agree with the engine's own counters)."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import engine_compare  # noqa: E402
import kernel_profile  # noqa: E402


def test_parse_engine():
    assert engine_compare.parse_engine("dense") == ("dense", {})
    assert engine_compare.parse_engine("certified:lazy=false,budget=0.05,x=abc,k=3") == (
        "certified", {"lazy": False, "budget": 0.05, "x": "abc", "k": 3})
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        engine_compare.parse_engine("certified:lazy")


@pytest.mark.parametrize("spec", ["certified", "certified:lazy=false", "tree", "dense"])
def test_kernel_profile_counts_every_pass(spec):
    steps, iters = 3, 2
    rows = kernel_profile.profile(spec, 2048, 64, 6, steps, iters, 0.05, 0)
    assert len(rows) == iters
    for wall, system, log, passes in rows:
        assert wall > 0 and system >= 0
        calls = {k: c for k, (_, c) in log.items()}
        if spec == "certified":
            # first attack step at the clean points, then steps - 1 attack passes + forward
            assert calls["nm_forward"] == 1 and calls["nm_track_forward"] == steps
            assert len(passes) == steps and all(ev >= 64 for ev, _ in passes)
        elif spec == "certified:lazy=false":
            assert calls["nm_forward"] == steps + 1 and "nm_track_forward" not in calls
        elif spec == "tree":
            assert calls["tree.query_batch"] == steps + 1 and calls["pm_forward"] == steps + 1
        else:
            assert calls["dense_forward"] == steps + 1 and calls["dense_weight_grad"] == 1
    # the profiler restores the engines' _core afterwards
    from sparseadv import _core
    from sparseadv.engines import certified
    assert certified._core is _core
