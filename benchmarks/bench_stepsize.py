"""asv: lr="auto", the NTK top eigenvalue, by the explicit Gram matrix (n <= GRAM_MAX_N, the
default path) and by matrix-free Lanczos (larger n), on the same problem."""
from .common import LARGE, Benchmark, problem


class NTKMaxEigenvalue(Benchmark):
    params = [[(16384, 1024, 64)] + ([(262144, 1024, 64)] if LARGE else []),
              ["gram", "lanczos"]]
    param_names = ["m_n_d", "path"]

    def setup(self, size, path):
        from sparseadv import stepsize
        self.stepsize = stepsize
        m, n, d = size
        self.net, self.X, _ = problem(m, n, d)
        self.saved = stepsize.GRAM_MAX_N
        stepsize.GRAM_MAX_N = self.saved if path == "gram" else 0

    def teardown(self, size, path):
        self.stepsize.GRAM_MAX_N = self.saved

    def time_ntk_max_eigenvalue(self, size, path):
        self.stepsize.ntk_max_eigenvalue(self.net, self.X)
