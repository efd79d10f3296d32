"""The automatic learning rate (``lr="auto"``): a constant NTK step size with a safety factor.

For the loss L = (1/(2n)) ||f - y||^2, one gradient step W <- W - lr grad L changes the outputs
to first order by  f <- f - (lr/n) H (f - y),  where H is the (n x n) NTK Gram matrix at the
current weights and the points the loss is taken at:

    H_ij = <d f_i / dW, d f_j / dW> = (1/m) sum_r a_r^2 1[<w_r,x_i> > b] 1[<w_r,x_j> > b] <x_i, x_j>.

The linearised residual contracts in every direction iff lr < 2n / lambda_max(H).

The rule: ``auto_lr(net, X)`` = ``SAFETY`` x n / lambda_max(H) with H at the starting weights
and the clean training points, kept fixed for the whole run (a constant rate, as in the
convergence theorem). ``attack=`` takes H at the attacked points instead; the trainer uses the
clean points, so ``fit`` and a loop of ``step`` give the same bits. ``SAFETY = 1/64``.

Why so small: L_A(W), the robust loss with the paper's K-step PGD from delta = 0, is piecewise
smooth in W (its change over one step goes to 0 with the rate), but it jumps where a clean
residual f(x_i) - y_i changes sign: the first attack step points along sign(f(x_i) - y_i)
grad f(x_i), so the attacked point jumps from one side of x_i to the other, and as f is not odd
about x_i the point's loss jumps by an amount that does not shrink with the rate. Adversarial
training drives every residual towards 0 (the robust loss of a point is smallest near
f(x_i) = y_i), i.e. onto these jumps, and a gradient step of any constant size then crosses
them back and forth: once the loss nears that floor it rises at the crossings that land on the
higher side. A constant rate therefore decides *when* in the run the rises start, not whether:
at 1/8 (and at n / lambda_max, the former default) they start within the report's 200 quick
iterations; 1/64 is the largest power of two at which they stay out of the report's quick
training settings, at the price of a slower descent (min_t L_A after those iterations several
times higher than at 1/8, still below standard training's). A decrease check that halves a
constant rate does not help (a few trial steps at the start decrease at any of these rates; the
crossings come later), nor does one that halves the rate at every rise later on, with or without
undoing the step: the rises go on at any rate, so the rate only shrinks, and training stalls
at a higher min_t L_A than the constant rate reaches while oscillating (docs/design.md §2, step
size). The report therefore trains for a horizon before the floor and shows one run past it. The measured fractions are in the report's E2 table
(``sparseadv reproduce``, column "L_A fell"); ``tests/test_stepsize.py`` asserts the rule.
``fit`` records the best iterate (min over t of L_A(W_t), the quantity the convergence theorem
bounds) and can return its weights.

With M the sparse (n x m) fired mask (one dense pass finds it),
H = (M diag(a^2) M^T) * (X X^T) / m. For n <= ``GRAM_MAX_N`` H is formed explicitly (a sparse
product, cost sum_r (points firing r)^2, then a dense symmetric eigensolver, much faster than a
matrix-free Lanczos in scipy's sparse mat-vecs); for larger n, Lanczos (ARPACK ``eigsh`` with a
fixed start vector, deterministic) runs on the matrix-free product
H v = (1/m) rowsum(X * (M (M^T (v * X)))).
"""
import copy

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh

from .errors import InputError


GRAM_MAX_N = 4096   # explicit n x n Gram matrix up to here (128 MB at the limit)
SAFETY = 1 / 64     # fraction of n / lambda_max taken as the rate (see the module docstring)


def ntk_max_eigenvalue(net, X):
    """Largest eigenvalue of the NTK Gram matrix of ``net`` at the points X (validated)."""
    n = X.shape[0]
    indptr, indices = net.fired_csr(X)
    if len(indices) == 0:
        return 0.0
    M = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, net.m))
    a2 = net.a ** 2
    if n <= max(GRAM_MAX_N, 3):          # ARPACK needs a few more rows than eigenvalues
        Ma = sp.csr_matrix((a2[indices], indices, indptr), shape=(n, net.m))
        H = (Ma @ M.T).toarray() * (X @ X.T) / net.m
        H = 0.5 * (H + H.T)
        return float(scipy.linalg.eigh(H, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    MT = M.T.tocsr()

    def matvec(v):
        v = np.asarray(v).reshape(-1)
        U = MT @ (v[:, None] * X)            # (m, d): sum_j 1[j fires r] v_j x_j
        U *= a2[:, None]
        return np.einsum("ij,ij->i", X, M @ U) / net.m

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.ones(n) / np.sqrt(n)
    val = eigsh(op, k=1, which="LA", v0=v0, tol=1e-8, maxiter=10 * n)[0][0]
    return float(val)


def auto_lr(net, X, y=None, attack=None, safety=SAFETY):
    """``safety`` x n / lambda_max(H), H the NTK Gram matrix at ``attack``'s points for (X, y)
    (at X itself without an attack): see the module docstring. The attack is copied, so its
    random state is untouched. Raises InputError if no neuron fires on any point."""
    if attack is not None:
        if y is None:
            raise InputError("auto_lr: an attack needs the labels y")
        X = copy.deepcopy(attack).perturb(net, X, y)
    return rate_from_eigenvalue(X.shape[0], ntk_max_eigenvalue(net, X), safety)


def rate_from_eigenvalue(n, lam, safety=SAFETY):
    """The rule itself: ``safety`` x n / lambda_max for n points (also used by the sharded
    trainer, which sums the Gram matrix over its shards). Raises InputError if lam <= 0."""
    if not lam > 0:
        raise InputError("lr='auto' needs at least one fired neuron on the training points; "
                         "no neuron fires (lower b or widen the network), or pass a float lr")
    return safety * n / lam
