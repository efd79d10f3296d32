/* sa_omp.h: OpenMP queries that also compile without OpenMP (then one thread, number 0).
   Declared to Cython in sparseadv/_common.pxi. */
#ifndef SPARSEADV_SA_OMP_H
#define SPARSEADV_SA_OMP_H

#ifdef _OPENMP
#include <omp.h>
static inline int sa_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int sa_omp_thread_num(void) { return omp_get_thread_num(); }
#define SA_OPENMP 1
#else
static inline int sa_omp_max_threads(void) { return 1; }
static inline int sa_omp_thread_num(void) { return 0; }
#define SA_OPENMP 0
#endif

#endif /* SPARSEADV_SA_OMP_H */
