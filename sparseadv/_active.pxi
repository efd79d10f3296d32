# Active-set kernels (filled in by the sparse-engine issue).
