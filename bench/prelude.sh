# Sourced first by every bench script on a GPU machine (no package index there): the shell
# options, unbuffered Python, sm_90a-only kernel builds unless HARNESS_CUDA_ARCHS says
# otherwise, $OUT, every carried wheel (.whl/, .whl-min/, .whl-peers/: whichever this call
# carried; one version of each package, or pip stops; NAME.whl.xz ones unpacked first by
# ci/wheels.py) installed into /tmp/site, and helpers.
# Make .whl-min (git-ignored) with
#   python3 -m pip download --no-deps -d .whl-min 'junitparser>=4,<6' nvidia-ml-py
# and .whl-peers with ci/fetch_peer_wheels.sh; carry them (and .ab-base for an A/B).
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CUDA_ARCHS=${HARNESS_CUDA_ARCHS:-90a}
OUT=${OUT:-/tmp/out}
shopt -s nullglob
dirs=(.whl*/)
shopt -u nullglob
wheels=()
[ ${#dirs[@]} -eq 0 ] || mapfile -t wheels < <(python3 ci/wheels.py list "${dirs[@]}")
if [ ${#wheels[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${wheels[@]}" && export PYTHONPATH=/tmp/site
fi

# Append stdin to $OUT/$LOG.log and echo it.
log() { tee -a "$OUT/${LOG:-bench}.log"; }

# Build the kernels and run their self-check against the reference (cut at SELFCHECK_TIMEOUT
# s, default 900: a hung kernel still leaves the log of the cases before it); stop unless it
# passes.
kernels_ok() {
  python3 -m kernels.build 2>&1 | tail -1 | log
  timeout "${SELFCHECK_TIMEOUT:-900}" python3 -m kernels.selfcheck 2>&1 | tee "$OUT/selfcheck.log" | tail -8 | log
  grep -q "CORRECTNESS: PASS" "$OUT/selfcheck.log" || { echo "selfcheck failed: stopping" | log; exit 1; }
}

# The harness on matrices/NAME.toml with both CUDA kernels (already built; extra arguments
# passed on): its report and timing lines logged, its summary copied to $OUT/summary_NAME.md.
harness_matrix() {
  local m=$1
  shift
  python3 -m harness run --matrix "matrices/$m.toml" --no-build "$@" \
    --backends cuda_baseline,cuda_grouped --out "/tmp/$m" --results-dir "/tmp/$m/results" 2>&1 |
    grep -E "report:|done in|warm" | tail -4 | log
  cp "/tmp/$m/summary.md" "$OUT/summary_$m.md"
}

# compute-sanitizer memcheck and racecheck on the kernel self-check's first N cases (each
# cut at T seconds, default 200): their summaries logged, and the first errors or hazards.
sanitize_selfcheck() {
  local n=$1 t=${2:-200} cs
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    timeout "$t" "$cs" --tool $tool --error-exitcode 9 python3 -m kernels.selfcheck --cases "$n" > /tmp/sc_$tool.log 2>&1
    echo "selfcheck $tool rc=$? $(grep -c '^ok' /tmp/sc_$tool.log) cases ok; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log | head -1)" | log
    grep -E "^FAIL|rror|azard" /tmp/sc_$tool.log | head -5 | log
  done
}
