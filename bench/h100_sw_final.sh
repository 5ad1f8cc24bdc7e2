#!/usr/bin/env bash
# One device call for the final swapped-operand fp8 kernel (grouped_sw.cuh): build + full
# self-check; memcheck and racecheck on the self-check's first 12 cases (cases 3 and 10 run
# the new kernel, 10 with a fully masked second consumer warpgroup); the harness's coverage
# run, and its timed spec_decode (with --peers: FlashInfer beside ours when .whl-peers was
# carried) and spec_decode_bf16 runs. Carry .whl-min (+ .whl-peers).
LOG=sw_final
source bench/prelude.sh
kernels_ok
sanitize_selfcheck 12 240
PEERS=""
ls .whl-peers/*.whl* > /dev/null 2>&1 && PEERS="--peers"
harness_matrix coverage --no-timing
harness_matrix spec_decode $PEERS
harness_matrix spec_decode_bf16
