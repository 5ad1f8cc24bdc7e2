LOG=call3
source bench/prelude.sh
python3 -m kernels.build 2>&1 | tail -1 | log
timeout 400 python3 bench/plan_calibrate.py --no-seed -n 240 --spread-seed 25 --out "$OUT/heldout.jsonl" --budget 330 > "$OUT/heldout.log" 2>&1
tail -n 2 "$OUT/heldout.log" | log
