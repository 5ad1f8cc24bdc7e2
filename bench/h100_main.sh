#!/usr/bin/env bash
# One device call (<10 min): the README's main command on the GPU (system python, CUDA
# torch, no index), then spec_decode with all backends and coverage correctness.
# Usage on the GPU machine: bash bench/h100_main.sh  (writes $OUT/*.log and results.tgz)
LOG=main
source bench/prelude.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv > "$OUT/nvidia-smi.csv"
t0=$(date +%s)
python3 -m nox -s gpu_matrix -- --matrix matrices/smoke.toml --out reports/smoke \
  --results-dir reports/smoke/results 2>&1 | tee "$OUT/smoke.log" | tail -25
t1=$(date +%s)
python3 -m harness run --matrix matrices/spec_decode.toml --no-build --out reports/spec \
  --results-dir reports/spec/results 2>&1 | tee "$OUT/spec.log" | tail -8
t2=$(date +%s)
python3 -m harness run --matrix matrices/coverage.toml --no-build --no-timing \
  --backends cuda_baseline,cuda_grouped --out reports/coverage \
  --results-dir reports/coverage/results 2>&1 | tee "$OUT/coverage.log" | tail -8
t3=$(date +%s)
echo "wall s: smoke(nox, incl. build) $((t1-t0)) spec_decode $((t2-t1)) coverage $((t3-t2))" | tee "$OUT/walls.txt"
tar czf "$OUT/results.tgz" reports
