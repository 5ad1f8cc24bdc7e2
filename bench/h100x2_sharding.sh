#!/usr/bin/env bash
# Issue 9 in one device call on a 2-GPU host (kind nvidia-h100-x2 or nvidia-h200-x2): the
# README's main command sharded over both GPUs and on one, for coverage and spec_decode,
# which GPU each case ran on (from the result rows), and a crash/hang/OOM matrix sharded over
# two workers. Carry .whl-nox and .whl-min (nox runs on the system interpreter there).
# MATRICES="coverage" picks the matrices, N_LIST="2" the worker counts, SKIP_FAULTS=1 skips
# the fault run.
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl-nox/*.whl .whl-min/*.whl && export PYTHONPATH=/tmp/site
log() { tee -a "$OUT/x2.log"; }
nvidia-smi -L | log
python3 -m kernels.build 2>&1 | tail -1 | log
# Which GPU (uuid, and the worker's CUDA_VISIBLE_DEVICES) ran how many result rows.
where() {
  python3 - "$1" <<'PY' | log
import collections, json, pathlib, sys
c = collections.Counter()
for f in pathlib.Path(sys.argv[1]).glob("*.jsonl"):
    for line in f.read_text().splitlines():
        r = json.loads(line)
        d = r.get("device", {})
        c[(r.get("worker", ""), d.get("visible_devices", ""), d.get("uuid", "")[:12], r["status"])] += 1
for k, v in sorted(c.items()):
    print(sys.argv[1], *k, v)
PY
}
# coverage correctness-only unless COV_TIMING=1 (316 timed items may not fit one call);
# spec_decode timed, as the README runs it.
for m in ${MATRICES:-coverage spec_decode}; do
  extra=""
  [ "$m" = coverage ] && [ "${COV_TIMING:-0}" != 1 ] && extra="--no-timing"
  for n in ${N_LIST:-2 1}; do
    s=$(date +%s)
    python3 -m nox -s gpu_matrix -- -n $n --matrix matrices/$m.toml --no-build $extra \
      --backends cuda_baseline,cuda_grouped --out reports/${m}_n$n \
      --results-dir reports/${m}_n$n/results > "/tmp/${m}_n$n.log" 2>&1
    echo "$m -n $n: rc=$? wall $(( $(date +%s) - s )) s; $(grep 'report:' /tmp/${m}_n$n.log | tail -1)" | log
    grep -E '^\[harness\] (run |done in)|passed.* in [0-9.]+s' "/tmp/${m}_n$n.log" | log
    where "reports/${m}_n$n/results"
  done
done
[ -d reports/spec_decode_n2 ] && cp reports/spec_decode_n2/summary.md "$OUT/summary_spec_decode_n2.md" &&
  cp reports/spec_decode_n2/junit.xml "$OUT/junit_spec_decode_n2.xml"
[ "${SKIP_FAULTS:-0}" = 1 ] && exit 0
# A worker whose GPU faults: crash (illegal address), hang and OOM, two workers.
IDS=$(python3 -m harness list --matrix tests/data/faults20.toml | awk 'NR>2 && /^\| Tiny/ {print $2}')
C=$(echo "$IDS" | sed -n 4p); H=$(echo "$IDS" | sed -n 12p); M=$(echo "$IDS" | sed -n 18p)
python3 -m harness run -n 2 --matrix tests/data/faults20.toml --backends fault_injector \
  --inject-faults "crash@$C,hang@$H,oom@$M" --case-timeout 20 --no-build \
  --out reports/faults_n2 --results-dir reports/faults_n2/results > /tmp/faults_n2.log 2>&1
echo "faults -n 2: rc=$? $(grep 'report:' /tmp/faults_n2.log | tail -1)" | log
where reports/faults_n2/results
