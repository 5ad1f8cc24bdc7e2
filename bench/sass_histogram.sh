#!/usr/bin/env bash
# SASS of one kernel of the built library (KERNEL: a substring of its mangled name) and the
# opcode histogram of its instructions, into $OUT (needs cuobjdump: the GPU machine has it).
set -uo pipefail
OUT=${OUT:-/tmp/out}
SO=$(ls -t kernels/_build/*/libpaged_decode.so | head -1)
CUOBJ=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
# Every function whose mangled name contains $KERNEL (cuobjdump -fun wants an exact name).
$CUOBJ -sass "$SO" | awk -v k="$KERNEL" '/Function :/{p=index($0,k)>0} p' > "$OUT/sass_$KERNEL.txt"
grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_]+(\.[A-Z0-9_]+)*' "$OUT/sass_$KERNEL.txt" |
  awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -nr > "$OUT/sass_hist_$KERNEL.txt"
echo "sass $KERNEL: $(wc -l < "$OUT/sass_$KERNEL.txt") lines; $(head -25 "$OUT/sass_hist_$KERNEL.txt" | awk '{printf "%s %s, ", $2, $1}')"
