#!/usr/bin/env bash
# One device call (<10 min): timing trust (A/A twice at 1 %, planted slowdown), the
# spec_decode wall time with both kernels, fault handling on the GPU and its overhead.
LOG=verdicts
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -2
t() { local s=$(date +%s%N); "$@"; local rc=$?; echo "WALL $(( ($(date +%s%N) - s) / 1000000 )) ms rc=$rc: $*" | log; }
# 1. both kernels, correctness + timing, whole spec_decode (target <= 90 s)
t python3 -m harness run --matrix matrices/spec_decode.toml --no-build \
  --backends cuda_baseline,cuda_grouped --out reports/spec2 --results-dir reports/spec2/results 2>&1 | tail -3 | log
# 2. A/A twice at a 1 % threshold over spec_decode
t python3 -m harness calibrate --matrix matrices/spec_decode.toml --backend cuda_grouped \
  --runs 2 --threshold 0.01 --out reports/calibration 2>&1 | tail -40 | log
# 3. planted 2 % slowdown: its true size from a long A/B, then judged at 1 % on spec_decode
t python3 -m harness run --matrix matrices/spec_decode.toml --no-build --planted-slowdown 20 \
  --backends cuda_grouped -k "batchSize64 and planted" --timing-budget-ms 4000 --threshold 0.01 \
  --out reports/planted_long --results-dir reports/planted_long/results 2>&1 | tail -4 | log
t python3 -m harness run --matrix matrices/spec_decode.toml --no-build --planted-slowdown 20 \
  --backends cuda_grouped --threshold 0.01 -k planted \
  --out reports/planted --results-dir reports/planted/results 2>&1 | tail -4 | log
# 4. faults on the GPU: 20 cases, an OOB-write crash, a spinning hang, an OOM
IDS=$(python3 -m harness list --matrix tests/data/faults20.toml | awk 'NR>2 && /^\| Tiny/ {print $2}')
C=$(echo "$IDS" | sed -n 4p); H=$(echo "$IDS" | sed -n 12p); M=$(echo "$IDS" | sed -n 18p)
t python3 -m harness run --matrix tests/data/faults20.toml --backends fault_injector \
  --inject-faults "crash@$C,hang@$H,oom@$M" --case-timeout 20 --no-build \
  --out reports/faults --results-dir reports/faults/results 2>&1 | tail -6 | log
# 5. overhead of fault handling on a fault-free smoke run: watchdog + in-flight marker
#    (the default) vs none (--case-timeout 0); both are one resumable test process.
for i in 1 2 3; do
  t python3 -m harness run --matrix matrices/smoke.toml --no-build \
    --out reports/ovh_on$i --results-dir reports/ovh_on$i/results 2>&1 | tail -1 | log
  t python3 -m harness run --matrix matrices/smoke.toml --no-build --case-timeout 0 \
    --out reports/ovh_off$i --results-dir reports/ovh_off$i/results 2>&1 | tail -1 | log
done
tar czf "$OUT/verdicts.tgz" reports
