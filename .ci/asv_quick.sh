#!/usr/bin/env bash
# The asv part of CI: benchmark discovery (`asv check`) and one quick pass (each benchmark
# called once) over a few small cases, so that a benchmark that no longer imports, raises or
# times out fails CI. Then `sparseadv bench --from-asv` builds the scaling report from the
# results just written, which checks the asv results reader (sparseadv.analysis.asv_results)
# against the installed asv. Takes 1-3 minutes on 2 cores.
#
# Needs: the package importable by `python` (pip install -e .), asv, threadpoolctl.
# Exit status: non-zero when discovery fails, when any selected benchmark fails or times out
# (asv run exits 2 then; the log is also scanned for "failed"/"timeout" in case an asv
# version does not), or when no benchmark ran at all.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"
export MPLBACKEND=Agg
ASV=(python -m asv)
MACHINE="${ASV_MACHINE:-ci}"

"${ASV[@]}" machine --yes --machine "$MACHINE" >/dev/null
echo "== asv check"
"${ASV[@]}" check --python=same

log="$(mktemp)"
out="$(mktemp -d)"
trap 'rm -rf "$log" "$out"' EXIT

args=(run --python=same --quick --machine "$MACHINE" --show-stderr)
if commit="$(git rev-parse HEAD 2>/dev/null)"; then
    args+=(--set-commit-hash "$commit")       # results are saved (for the report below)
else
    args+=(--dry-run)
fi
echo "== asv run --quick (a few cases)"
set +e
"${ASV[@]}" "${args[@]}" \
    --bench 'bench_dense\.DenseIteration\.time_iteration' \
    --bench 'bench_dense\.DenseScaling\.track_inner_products' \
    --bench 'bench_dense\.Attack\.' \
    --bench 'bench_attack\.AttackEngines\.time_attack' \
    --bench 'bench_contenders\.OracleIteration\.time_iteration' 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    echo "asv_quick: asv run exited with status $rc (a benchmark failed)" >&2
    exit 1
fi
if grep -Eq '[[:space:]](failed|timeout)[[:space:]]*$' "$log"; then
    echo "asv_quick: a benchmark failed or timed out:" >&2
    grep -E '[[:space:]](failed|timeout)[[:space:]]*$' "$log" >&2
    exit 1
fi
if ! grep -Eq '[[:space:]]ok[[:space:]]*$' "$log"; then
    echo "asv_quick: no benchmark ran (check the --bench patterns)" >&2
    exit 1
fi

if [ -n "${commit:-}" ]; then
    echo "== sparseadv bench --from-asv (the scaling report from these results)"
    python -m sparseadv bench --from-asv .asv/results --machine "$MACHINE" \
        --commit "$commit" --engines dense --out "$out" --no-plots
fi
echo "asv_quick: ok"
