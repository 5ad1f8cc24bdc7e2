"""Merge re-timed shapes (bench/plan_calibrate.py's output) into the cost model's calibration
set, tests/data/plan_calibration_h100.jsonl.

After a kernel change the old times of the shapes it touches no longer describe the kernels;
`plan_calibrate.py --shapes SET --rows REGEX` re-times those shapes, and this puts the new
lines in place of the old ones (new shapes are appended) and takes the new run's occupancy
table. Both files must come from the same kind of GPU (device name and SM count). No GPU
needed.

Run: python3 bench/plan_calibrate_merge.py NEW.jsonl [NEW.jsonl ...] [--into SET]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "plan_calibration_h100.jsonl"
KEYS = ("shape", "seed", "times")  # what the set keeps of a line (the test replays these)


def read(path: Path) -> tuple[dict, list[dict]]:
    """A calibration file's head and records; ValueError naming the file if it is not one."""
    try:
        lines = path.read_text().splitlines()
        head, recs = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line]
    except (OSError, IndexError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a calibration file ({e})") from e
    for r in recs:
        if not all(k in r for k in KEYS):
            raise ValueError(f"{path}: a line lacks one of {KEYS}: {str(r)[:120]}")
    return head, recs


def merge(into: Path, news: list[Path]) -> tuple[int, int]:
    """Write `into` with the records of `news` in place of (or after) its own; returns
    (replaced, added)."""
    head, recs = read(into)
    by_shape = {tuple(r["shape"]): i for i, r in enumerate(recs)}
    replaced = added = 0
    for path in news:
        nhead, nrecs = read(path)
        if (nhead.get("device"), nhead.get("sms")) != (head["device"], head["sms"]):
            raise ValueError(
                f"{path}: timed on {nhead.get('device')} ({nhead.get('sms')} SMs), the set on"
                f" {head['device']} ({head['sms']} SMs)"
            )
        head["occupancy"].update(nhead["occupancy"])
        for r in nrecs:
            rec = {k: r[k] for k in KEYS}
            key = tuple(rec["shape"])
            if key in by_shape:
                # a seed row stays one when a spread over the grid re-times it
                rec["seed"] = rec["seed"] or recs[by_shape[key]]["seed"]
                recs[by_shape[key]] = rec
                replaced += 1
            else:
                by_shape[key] = len(recs)
                recs.append(rec)
                added += 1
    text = "\n".join(json.dumps(x, separators=(",", ":")) for x in [head, *recs])
    into.write_text(text + "\n")
    return replaced, added


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", nargs="+", type=Path, help="plan_calibrate.py output files")
    ap.add_argument("--into", type=Path, default=SET, help="the set to update")
    args = ap.parse_args(argv)
    try:
        replaced, added = merge(args.into, args.new)
    except ValueError as e:
        print(f"plan_calibrate_merge: {e}", file=sys.stderr)
        return 2
    print(f"{args.into}: {replaced} shapes re-timed, {added} added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
