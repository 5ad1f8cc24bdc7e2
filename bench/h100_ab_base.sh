#!/usr/bin/env bash
# Same-call A/B of this tree's kernels against a base commit's (make the base with
# `mkdir -p .ab-base && git archive BASE kernels | gzip -9 > .ab-base/kernels.tar` (tar reads
# it either way; gzip keeps .ab-base, .whl-min and .whl-peers under the device's 64 MiB);
# carry .ab-base and .whl-min): build + full self-check of this tree; the base's self-check on the first
# SAN_CASES cases (default 13; for the error comparison); the AB_FILTER seed rows (default
# fp8) with base, this tree and each define set in VARIANTS ("NAME=VAL ..." built with
# HARNESS_KERNEL_DEFINES), alternating, ROUNDS times (default 2); memcheck/racecheck on
# this tree's first SAN_CASES self-check cases (each cut at SAN_TIMEOUT s, default 240);
# then the harness's timed spec_decode run unless SKIP_HARNESS=1 (SKIP_SAN=1 skips the sanitizers).
# CHECK_VARIANTS: variants to run the full self-check on; CHECKED: the one variant the
# sanitizers and the harness run on instead.
LOG=ab
source bench/prelude.sh
kernels_ok
BASE=/tmp/ab_base
mkdir -p "$BASE" && tar -xf .ab-base/kernels.tar -C "$BASE"
(cd "$BASE" && python3 -m kernels.build 2>&1 | tail -1 && python3 -m kernels.selfcheck --cases "${SAN_CASES:-13}") > "$OUT/selfcheck_base.log" 2>&1
F=${AB_FILTER:-fp8}
bench() {  # bench LABEL ROUND [env assignments...]: the seed rows' grouped times
  local label=$1 r=$2
  shift 2
  if [ "$label" = base ]; then
    (cd "$BASE" && env "$@" python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F") > "/tmp/ab_${label}_$r.log" 2>&1
  else
    env "$@" python3 -m kernels.selfcheck --only-bench --kernels grouped --filter "$F" > "/tmp/ab_${label}_$r.log" 2>&1
  fi
}
labels=(base new)
for v in ${VARIANTS:-}; do
  python3 -m kernels.build $(echo "$v" | tr ',' '\n' | sed 's/^/--define /') 2>&1 | tail -3 | log
  labels+=("$v")
done
for r in $(seq 1 "${ROUNDS:-2}"); do
  bench base $r
  bench new $r
  for v in ${VARIANTS:-}; do bench "$v" $r HARNESS_KERNEL_DEFINES="$v"; done
done
cp /tmp/ab_new_1.log "$OUT/bench_new.log"
R=${ROUNDS:-2}
for l in "${labels[@]}"; do
  for r in $(seq 1 "$R"); do grep -E "^(Qwen|GPT)" "/tmp/ab_${l}_$r.log" | awk '{print $3}' > "/tmp/col_${l}_$r"; done
done
echo "case | ${labels[*]} (us, $R runs each) | ratios of the sums to base's" | log
paste <(grep -E "^(Qwen|GPT)" /tmp/ab_base_1.log | awk '{print $1}') \
  $(for l in "${labels[@]}"; do for r in $(seq 1 "$R"); do echo "/tmp/col_${l}_$r"; done; done) |
  awk -v R="$R" '{printf "%-42s", $1; for (i = 2; i <= NF; i++) printf " %8s", $i;
        b = 0; for (k = 0; k < R; k++) b += $(2 + k);
        for (i = 2 + R; i <= NF; i += R) { x = 0; for (k = 0; k < R; k++) x += $(i + k); printf "  %.3f", x / b }
        printf "\n"}' | log
for v in ${CHECK_VARIANTS:-}; do  # full self-check of each: correctness of a variant
  HARNESS_KERNEL_DEFINES=$v python3 -m kernels.selfcheck > "/tmp/sc_$v.log" 2>&1
  echo "variant $v: $(grep -c '^ok' "/tmp/sc_$v.log") cases ok; $(grep CORRECTNESS "/tmp/sc_$v.log")" | log
done
export HARNESS_KERNEL_DEFINES=${CHECKED:-}  # the sanitizers and the harness run on this one
[ -z "$HARNESS_KERNEL_DEFINES" ] || echo "sanitizers and harness on $HARNESS_KERNEL_DEFINES" | log
[ -n "${SKIP_SAN:-}" ] || sanitize_selfcheck "${SAN_CASES:-13}" "${SAN_TIMEOUT:-240}"
[ -n "${SKIP_HARNESS:-}" ] || harness_matrix spec_decode
