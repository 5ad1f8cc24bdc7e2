#!/usr/bin/env bash
# One device call for the software-pipelined wgmma kernels (Q K^T of stage it+1 under the
# softmax of stage it): build + full self-check + sanitizers on the first 17 cases, then the
# q_len 8 rows of the seed grid (the rows the wgmma kernels run) three ways in one call:
# mma.sync (PD_NO_WGMMA=1), the committed HEAD's kernels (REF, default HEAD), and this tree.
LOG=wgpipe
source bench/prelude.sh
kernels_ok
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  $CS --tool $tool --error-exitcode 9 python3 -m kernels.selfcheck --cases 17 > /tmp/sc_$tool.log 2>&1
  echo "selfcheck $tool rc=$? $(grep -c '^ok' /tmp/sc_$tool.log) cases ok; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log)" | log
done
REF=${REF:-HEAD}
rm -rf /tmp/ref && mkdir -p /tmp/ref
git -c safe.directory='*' archive "$REF" | tar -x -C /tmp/ref
(cd /tmp/ref && python3 -m kernels.build 2>&1 | tail -1) | log
F=${FILTER:-seqLenQ8}
for round in 1 2; do
  PD_NO_WGMMA=1 python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F" > "$OUT/q8_mma_$round.log" 2>&1
  (cd /tmp/ref && python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F") > "$OUT/q8_ref_$round.log" 2>&1
  python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F" > "$OUT/q8_new_$round.log" 2>&1
done
