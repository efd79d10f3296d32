"""The asv suite's new classes run outside asv (CI also runs a few cases through asv:
.ci/asv_quick.sh): setup, the timed call and the counts, at the smallest default sizes."""
import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    """The ``benchmarks`` package of this checkout, loaded from its path."""
    spec = importlib.util.spec_from_file_location(
        "benchmarks", ROOT / "benchmarks" / "__init__.py",
        submodule_search_locations=[str(ROOT / "benchmarks")])
    pkg = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("benchmarks")
    sys.modules["benchmarks"] = pkg
    spec.loader.exec_module(pkg)
    try:
        yield lambda name: importlib.import_module(f"benchmarks.{name}")
    finally:
        for key in [k for k in sys.modules if k == "benchmarks" or k.startswith("benchmarks.")]:
            del sys.modules[key]
        if saved is not None:
            sys.modules["benchmarks"] = saved


def test_every_class_uses_the_base(suite):
    common = suite("common")
    for name in ("bench_dense", "bench_engines", "bench_attack", "bench_hsr",
                 "bench_stepsize", "bench_contenders", "bench_batches"):
        mod = suite(name)
        classes = [v for k, v in vars(mod).items() if isinstance(v, type)
                   and v.__module__ == mod.__name__ and not k.startswith("_")]
        assert classes and all(issubclass(c, common.Benchmark) for c in classes), name
    grid = common.grid
    from sparseadv.analysis import grid as package_grid
    assert common.SCALING_SIZES == package_grid.grid_points("default")
    assert grid.GRIDS == package_grid.GRIDS


def test_oracle_benchmark_times_one_prepared_iteration(suite):
    bc = suite("bench_contenders")
    size = bc.SIZES[0]
    b = bc.OracleIteration()
    b.setup(size, 3)
    W0 = b.W0.copy()
    assert (b.net.W == W0).all()                     # the timed call starts from W0
    b.time_iteration(size, 3)
    assert not (b.net.W == W0).all()
    from sparseadv import PGD, AdversarialTrainer
    from sparseadv.analysis.grid import problem
    net, X, y = problem(*size)
    rec = AdversarialTrainer(net, PGD(0.05, 3), lr="auto", engine="dense").step(X, y)
    assert b.track_fired_pairs(size, 3) == rec["fired_pairs"]
    assert b.track_inner_products(size, 3) < rec["inner_products"]


def test_torch_benchmark(suite):
    bc = suite("bench_contenders")
    b = bc.TorchIteration()
    try:
        b.setup(bc.SIZES[0], 3, "float32")
    except NotImplementedError:
        pytest.skip("torch not installed")
    b.time_iteration(bc.SIZES[0], 3, "float32")


def test_engine_memory_benchmark(suite):
    be = suite("bench_engines")
    b = be.EngineMemory()
    b.setup("certified", be.MEMORY_SIZES[0], 3)
    b.peakmem_iteration("certified", be.MEMORY_SIZES[0], 3)
    with pytest.raises(NotImplementedError):
        b.setup("no-such-engine", be.MEMORY_SIZES[0], 3)


def test_batch_epoch_benchmark(suite):
    bb = suite("bench_batches")
    assert bb.SIZE == (2 ** 12, 1024, 16)
    bb.SIZE = (1024, 256, 8)            # the test's size: the classes read it in setup
    counts = {}
    for engine in ("dense", "certified"):
        for batch_size in (None, 64):
            b = bb.BatchEpoch()
            b.setup(engine, batch_size)
            b.time_epoch(engine, batch_size)
            n = b.X.shape[0]
            assert len(b.history["loss"]) == (1 if batch_size is None else -(-n // batch_size))
            counts[engine, batch_size] = b.track_inner_products(engine, batch_size)
    # dense does the same work per epoch whatever the batch: (K + 2) m n products
    assert counts["dense", None] == counts["dense", 64]
    assert counts["certified", 64] < counts["dense", 64]
