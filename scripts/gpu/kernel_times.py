#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum) by kernel.

Usage: kernel_times.py PROFILE.csv [TOP] [--cycle K PATTERN]
Prints, per kernel name (template arguments kept), the launches, the total time in ms and
its share of all profiled time, largest first: where a program's GPU time goes.
--cycle K PATTERN: also the median time of the launches of the kernels whose name contains
PATTERN by position in a cycle of K launches, e.g. `--cycle 5 flash_backward_sm90` gives
the backward's time per pattern when each layer launches five patterns in order.
"""
import csv
import statistics
import sys
from collections import defaultdict

# ncu writes the unit either spelled out or abbreviated, depending on its version.
MS_PER_UNIT = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0,
               "second": 1e3, "s": 1e3}


def launches(path):
    """(kernel name, ms) per profiled launch, in launch order."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own messages are unquoted
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = row.get("Metric Unit", "nsecond")
        if unit not in MS_PER_UNIT:
            raise SystemExit(f"{path}: unknown time unit '{unit}'")
        yield row["Kernel Name"], float(row["Metric Value"].replace(",", "")) * MS_PER_UNIT[unit]


def main() -> int:
    args = sys.argv[1:]
    cycle = None
    if "--cycle" in args:
        i = args.index("--cycle")
        if len(args) < i + 3:
            raise SystemExit("--cycle needs K and PATTERN")
        cycle = (int(args[i + 1]), args[i + 2])
        del args[i:i + 3]
    if not args:
        raise SystemExit(__doc__)
    path = args[0]
    top = int(args[1]) if len(args) > 1 else 40
    totals = defaultdict(float)
    counts = defaultdict(int)
    matching = []
    for name, ms in launches(path):
        totals[name] += ms
        counts[name] += 1
        if cycle and cycle[1] in name:
            matching.append(ms)
    grand = sum(totals.values())
    print(f"{'ms':>10} {'share':>7} {'launches':>8}  kernel")
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{ms:10.3f} {100 * ms / grand:6.1f}% {counts[name]:8d}  {name[:150]}")
    print(f"{grand:10.3f} 100.0% {sum(counts.values()):8d}  all profiled kernels")
    if cycle:
        k, pattern = cycle
        print(f"\nlaunches of *{pattern}* by position in a cycle of {k} ({len(matching)} launches): median ms")
        for position in range(k):
            times = matching[position::k]
            if times:
                print(f"  {position}: {statistics.median(times):.4f} ({len(times)} launches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
