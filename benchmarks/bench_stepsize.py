"""asv: lr="auto", the NTK top eigenvalue, by the explicit Gram matrix (n <= GRAM_MAX_N, the
default path) and by matrix-free Lanczos (larger n), on the same problem."""
from .common import LARGE, problem

from sparseadv import stepsize


class NTKMaxEigenvalue:
    params = [[(16384, 1024, 64)] + ([(262144, 1024, 64)] if LARGE else []),
              ["gram", "lanczos"]]
    param_names = ["m_n_d", "path"]
    timeout = 300

    def setup(self, size, path):
        m, n, d = size
        self.net, self.X, _ = problem(m, n, d)
        self.saved = stepsize.GRAM_MAX_N
        stepsize.GRAM_MAX_N = self.saved if path == "gram" else 0

    def teardown(self, size, path):
        stepsize.GRAM_MAX_N = self.saved

    def time_ntk_max_eigenvalue(self, size, path):
        stepsize.ntk_max_eigenvalue(self.net, self.X)
