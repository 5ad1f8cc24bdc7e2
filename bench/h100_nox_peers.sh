#!/usr/bin/env bash
# One device call: the README's main command with the peers option on the GPU machine's own
# interpreter, exactly as a user runs it: `nox -s gpu_matrix -- --peers` (nox unpacks the
# carried .whl-peers/ into .whl-peers/site). Carry .whl-nox (nox and the modules it imports,
# no virtualenv: the session runs on the system interpreter), .whl-min and .whl-peers.
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl-nox/*.whl .whl-min/*.whl && export PYTHONPATH=/tmp/site
python3 -c "import flashinfer" 2>/dev/null && echo "flashinfer importable before nox (unexpected)"
s=$(date +%s)
python3 -m nox -s gpu_matrix -- --peers --matrix matrices/smoke.toml --out reports/nox_peers \
  --results-dir reports/nox_peers/results 2>&1 | tee "$OUT/nox_peers.log" | grep -v "^\[harness\]   ready" | tail -30
echo "wall $(( $(date +%s) - s )) s" | tee -a "$OUT/nox_peers.log"
cp reports/nox_peers/summary.md "$OUT/summary_nox_peers.md" 2>/dev/null
