#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction, from Nsight Compute's source page.

    sass_hotspots.py SOURCE_CSV [TOP]

SOURCE_CSV is what `scripts/gpu/run.sh profile-source` writes ($OUT/source.csv). Prints
the stall samples by reason, by opcode, and the TOP instructions (default 25) with their
index in the kernel, their samples and their two largest stall reasons. A sample is one
warp observed in one state; "selected" means issuing.
"""
import csv
import sys
from collections import Counter, defaultdict


def rows(path):
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    header = None
    for record in csv.reader(lines):
        if record and record[0] == "Address":
            header = record
            continue
        if header and len(record) == len(header):
            yield dict(zip(header, record))


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    instructions = list(rows(path))
    if not instructions:
        sys.exit(f"{path}: no instruction rows (was it written with --page source --csv?)")
    reasons = [k for k in instructions[0] if k.startswith("stall_") and "Not Issued" not in k]
    total = sum(int(r["Warp Stall Sampling (All Samples)"] or 0) for r in instructions)
    by_reason = Counter()
    by_opcode = Counter()
    opcode_count = Counter()
    for r in instructions:
        opcode = r["Source"].split()[0] if r["Source"].split() else "?"
        if opcode.startswith("@"):
            opcode = r["Source"].split()[1]
        opcode = opcode.split(".")[0]
        samples = int(r["Warp Stall Sampling (All Samples)"] or 0)
        by_opcode[opcode] += samples
        opcode_count[opcode] += 1
        for k in reasons:
            by_reason[k] += int(r[k] or 0)
    print(f"{len(instructions)} instructions, {total} samples")
    print("\nby stall reason (share of samples):")
    for k, v in by_reason.most_common():
        if v:
            print(f"  {k[6:]:<20} {100.0 * v / total:5.1f} %")
    print("\nby opcode (share of samples, instructions):")
    for k, v in by_opcode.most_common(20):
        print(f"  {k:<10} {100.0 * v / total:5.1f} %  {opcode_count[k]:5d}")
    print(f"\ntop {top} instructions:")
    ranked = sorted(enumerate(instructions), key=lambda x: -int(x[1]["Warp Stall Sampling (All Samples)"] or 0))
    for index, r in ranked[:top]:
        samples = int(r["Warp Stall Sampling (All Samples)"] or 0)
        stalls = sorted(((int(r[k] or 0), k[6:]) for k in reasons), reverse=True)[:2]
        why = ", ".join(f"{name} {100.0 * n / max(samples, 1):.0f}%" for n, name in stalls if n)
        print(f"  {index:5d} {100.0 * samples / total:5.2f} %  {r['Source'].strip()[:70]:<70} {why}")


if __name__ == "__main__":
    main()
