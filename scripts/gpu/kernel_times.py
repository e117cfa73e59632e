#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum) by kernel.

Usage: kernel_times.py PROFILE.csv [TOP]
Prints, per kernel name (template arguments kept), the launches, the total time in ms and
its share of all profiled time, largest first: where a program's GPU time goes.
"""
import csv
import sys
from collections import defaultdict


def main() -> int:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own messages are unquoted
    totals = defaultdict(float)
    counts = defaultdict(int)
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(unit, 1e-6)
        name = row["Kernel Name"]
        totals[name] += value * scale
        counts[name] += 1
    grand = sum(totals.values())
    print(f"{'ms':>10} {'share':>7} {'launches':>8}  kernel")
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{ms:10.3f} {100 * ms / grand:6.1f}% {counts[name]:8d}  {name[:150]}")
    print(f"{grand:10.3f} 100.0% {sum(counts.values()):8d}  all profiled kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
