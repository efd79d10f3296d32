"""``lr="auto"`` for a sharded network: the NTK Gram matrix is a sum over neurons.

``sparseadv.stepsize`` sets lr = SAFETY · n / λ_max(H) with H = C ∘ (X Xᵀ) / m, where
C_ij = Σ_r a_r² 1[r fires on x_i] 1[r fires on x_j]. C splits over neurons, so each shard sends
its C_s (n × n, once) and the client sums them in shard order; with a_r = ±1 the entries are
integers, so the sum, H and lr equal the single process's bit for bit. Above
``stepsize.GRAM_MAX_N`` points the single process runs a matrix-free Lanczos instead; the client
then gathers the network once and calls ``stepsize.auto_lr`` on it.
"""
import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ..stepsize import GRAM_MAX_N, rate_from_eigenvalue


def fired_count_gram(net, X):
    """C = Σ_r a_r² 1[fires on x_i] 1[fires on x_j] over ``net``'s neurons, dense (n × n)."""
    n = X.shape[0]
    indptr, indices = net.fired_csr(X)
    shape = (n, net.m)
    fired = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=shape)
    weighted = sp.csr_matrix(((net.a ** 2)[indices], indices, indptr), shape=shape)
    return (weighted @ fired.T).toarray()


def uses_gram(n):
    """Whether the single process forms the Gram matrix explicitly for n points."""
    return n <= max(GRAM_MAX_N, 3)


def lr_from_counts(C, X, m):
    """The rate of ``stepsize.auto_lr`` from λ_max(C ∘ X Xᵀ / m), computed as it does."""
    n = X.shape[0]
    H = C * (X @ X.T) / m
    H = 0.5 * (H + H.T)
    lam = float(scipy.linalg.eigh(H, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    return rate_from_eigenvalue(n, lam)
