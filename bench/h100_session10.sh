#!/usr/bin/env bash
# One device call on the committed kernels: build + full self-check, the harness on
# coverage.toml and large_scores.toml (correctness only), memcheck/racecheck on the
# self-check's first 19 cases, then the README's spec_decode table (fp8) with the FlashInfer
# peers; spec_decode_bf16 too unless SKIP_BF16=1. Carry .whl-min and .whl-peers. Each step
# is cut at its own limit so a slow one still leaves the others' logs in $OUT.
LOG=session
source bench/prelude.sh
kernels_ok
for m in coverage large_scores; do
  timeout 240 python3 -m harness run --matrix "matrices/$m.toml" --no-build --no-timing \
    --backends cuda_baseline,cuda_grouped --out "/tmp/$m" --results-dir "/tmp/$m/results" 2>&1 |
    grep -E "report:|done in|passed|failed" | tail -3 | sed "s/^/$m: /" | log
done
sanitize_selfcheck 19 150
timeout 300 bash -c 'source bench/prelude.sh; harness_matrix spec_decode --peers'
[ -n "${SKIP_BF16:-}" ] || timeout 240 bash -c 'source bench/prelude.sh; harness_matrix spec_decode_bf16 --peers'
