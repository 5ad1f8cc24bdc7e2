#!/usr/bin/env bash
# Download the peer backends' wheels for a GPU machine that has no package index:
# flashinfer-python (the version ../shared/anchors was measured with) and the
# apache-tvm-ffi it requires, for CPython 3.12 on manylinux x86_64, into .whl-peers/
# (git-ignored), each packed by ci/wheels.py into NAME.whl.xz (flashinfer's 62 MB wheel
# becomes 17 MB, so it fits a device call's 64 MiB beside the tree; PACK=0 keeps the .whl).
# Carry that folder to the GPU machine, then either
#   nox -s gpu_matrix -- --peers            (installs them into .whl-peers/site), or
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
#     $(python3 ci/wheels.py list .whl-peers)
#   PYTHONPATH=/tmp/site python3 -m harness run --peers ...
# (bench/prelude.sh does the install for the device scripts).
# flashinfer's other imports (nvidia-ml-py, einops, tqdm, numpy, requests, packaging,
# ninja) are expected on the GPU machine already; its CUDA extras are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
FLASHINFER="${FLASHINFER_SPEC:-flashinfer-python==0.7.2.post1}"
TVM_FFI="${TVM_FFI_SPEC:-apache-tvm-ffi>=0.1.11,<0.2}"  # Requires-Dist of flashinfer 0.7.2.post1
DEST="${1:-.whl-peers}"
mkdir -p "$DEST"
rm -f "$DEST"/*.whl.xz  # packed ones of an earlier run: this run's wheels replace them
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$DEST" "$FLASHINFER" "$TVM_FFI"
# Keep exactly one version of each (an older download beside a newer one breaks the install).
for name in flashinfer_python apache_tvm_ffi; do
  n=$(find "$DEST" -maxdepth 1 -name "${name}-*.whl" | wc -l)
  if [ "$n" -ne 1 ]; then
    echo "error: $n wheels of $name in $DEST; keep one" >&2
    exit 1
  fi
done
[ "${PACK:-1}" = 0 ] || python3 ci/wheels.py pack "$DEST"
total=$(find "$DEST" -maxdepth 1 -name '*.whl*' -printf '%s\n' | awk '{s+=$1} END {print s}')
ls -l "$DEST"/*.whl*
awk -v b="$total" 'BEGIN {printf "total %d bytes = %.2f MiB (a device call carries 64 MiB with the rest of the tree)\n", b, b/1048576}'
