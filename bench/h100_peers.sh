#!/usr/bin/env bash
# One device call (<10 min): FlashInfer 0.7.2.post1 and torch SDPA beside our kernels.
# Carry .whl-peers (ci/fetch_peer_wheels.sh) and .whl-min (junitparser, nvidia-ml-py).
# 1. the peers' own selfcheck (every peer vs the reference) and bench on the anchor shapes;
# 2. spec_decode with both our kernels and every peer: the side-by-side report.
LOG=peers
source bench/prelude.sh
python3 -c "import flashinfer, sys; print('flashinfer', flashinfer.__version__, sys.version.split()[0])" 2>&1 | tee "$OUT/peers.log"
python3 -m kernels.build 2>&1 | tail -1 | tee -a "$OUT/peers.log"
t0=$(date +%s)
python3 -m harness.backends.peers --selfcheck --bench 2>&1 | tee -a "$OUT/peers.log" | tail -40
t1=$(date +%s)
python3 -m harness run --matrix matrices/spec_decode.toml --no-build --peers \
  --backends cuda_baseline,cuda_grouped --out reports/peers --results-dir reports/peers/results \
  2>&1 | tee "$OUT/spec_peers.log" | tail -12
t2=$(date +%s)
echo "wall s: selfcheck+bench $((t1-t0)) spec_decode+peers $((t2-t1))" | tee -a "$OUT/peers.log"
cp reports/peers/*.md "$OUT/" 2>/dev/null
tar czf "$OUT/peers.tgz" reports/peers
