"""Fake benchmarks with exactly known counts, shaped like the sparseadv suite.

tests/test_analysis.py parses the asv results of these (tests/data/asv_results/, made by
tests/data/make_asv_results.py) and checks the exponents it recovers.
"""
# one-factor slices through (128, 16, 8): three distinct values per axis (the reader's minimum)
SIZES = [(64, 16, 8), (128, 16, 8), (256, 16, 8), (128, 8, 8), (128, 32, 8), (128, 16, 4),
         (128, 16, 16)]


class FakeEngines:
    """Engine as a parameter: "exact" counts 5 m n, "sqrt" counts 5 sqrt(m) n d^0.5;
    "missing" is skipped like an engine absent from a commit."""
    params = [["exact", "sqrt", "missing"], SIZES]
    param_names = ["engine", "size (m, n, d)"]   # as in bench_engines.EngineIteration

    def setup(self, engine, size):
        if engine == "missing":
            raise NotImplementedError("engine not in this commit")

    def time_iteration(self, engine, size):
        m, n, d = size
        sum(range(m))

    def track_inner_products(self, engine, size):
        m, n, d = size
        return 5 * m * n if engine == "exact" else 5 * m ** 0.5 * n * d ** 0.5

    track_inner_products.unit = "inner products"

    def track_fired_pairs(self, engine, size):
        m, n, d = size
        return m ** 0.75 * n


class DenseIteration:
    """Engine from the class name ("dense"), with a fixed steps parameter."""
    params = [[(64, 8, 4), (256, 8, 4), (1024, 8, 4)], [3]]
    param_names = ["m_n_d", "steps"]

    def track_inner_products(self, size, steps):
        m, n, d = size
        return (steps + 2) * m * n


class Unrelated:
    """No (m, n, d) parameter: ignored by the scaling report."""
    params = [[1, 2]]
    param_names = ["x"]

    def track_value(self, x):
        return x
