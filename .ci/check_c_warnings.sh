#!/usr/bin/env bash
# CI: compile each of our own C headers (sparseadv/_src/*.h) standalone as C with warnings as
# errors, so that a warning in our C fails CI (the Cython-generated C is not ours and is not
# checked here). -c with -O2 (not only -fsyntax-only) so that the warnings that need the
# optimiser (unused static functions, maybe-uninitialized) are reported too; -Wno-psabi
# silences GCC's note on the 32-byte vector ABI, which is not a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-gcc}
status=0
for h in sparseadv/_src/*.h; do
    for omp in -fopenmp ""; do
        if ! $CC -std=c99 -Wall -Wextra -Werror -Wno-psabi -O2 $omp -Isparseadv/_src \
                -c -o /dev/null -x c "$h"; then
            echo "check_c_warnings: $h does not compile cleanly (flags: ${omp:-no OpenMP})" >&2
            status=1
        fi
    done
done
[ $status -eq 0 ] && echo "check_c_warnings: $(ls sparseadv/_src/*.h | wc -l) headers clean"
exit $status
