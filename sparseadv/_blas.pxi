# Row-major BLAS wrappers over scipy.linalg.cython_blas (Fortran, column-major).
#
# A row-major p x q matrix is the column-major q x p matrix of its transpose, so the row-major
# product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: swap the
# operands and the sizes, keep the transpose flags.
from scipy.linalg.cython_blas cimport dgemm as _f_dgemm
from scipy.linalg.cython_blas cimport sgemm as _f_sgemm

cdef inline void gemm_rm(char transA, char transB, int M, int N, int K, double alpha,
                         const double* A, int lda, const double* B, int ldb, double beta,
                         double* C, int ldc) noexcept nogil:
    """Row-major C (M x N) = alpha * op(A) (M x K) @ op(B) (K x N) + beta * C."""
    if M <= 0 or N <= 0:
        return
    _f_dgemm(&transB, &transA, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda,
             &beta, C, &ldc)


cdef inline void sgemm_rm(char transA, char transB, int M, int N, int K, float alpha,
                          const float* A, int lda, const float* B, int ldb, float beta,
                          float* C, int ldc) noexcept nogil:
    """gemm_rm in float32."""
    if M <= 0 or N <= 0:
        return
    _f_sgemm(&transB, &transA, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda,
             &beta, C, &ldc)
