#!/usr/bin/env python3
"""Reads a CUPTI timeline (scripts/gpu/timeline/cupti_timeline.cpp's CSV) of a training run
and says, step by step, where the device was idle: the step's span, the time some kernel,
memset or copy ran, and the gaps between them, each gap counted as the host's (the call
that launched the next piece of work began after the device ran dry) or the device's
(launch latency, a dependency). Then the largest gaps with what the host was doing, the
kernels by time, and the host's time by API call.

  timeline.py timeline.csv [--step-end REGEX] [--top N]

A step ends with the last of a run of kernels whose name matches --step-end (default: the
batched AdamW kernel, step_many_kernel); step 0 (from the program's start) is left out.
"""
import argparse
import bisect
import collections
import csv
import lzma
import re
import sys


def short(name, width=70):
    name = re.sub(r"\(anonymous namespace\)::|longnet::|kernels::|^void ", "", name)
    if name.endswith(")"):  # drop the argument list: the balanced parentheses at the end
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return name if len(name) <= width else name[: width - 3] + "..."


def records(path):
    """The recorder's rows as dicts, from its CSV as written or compressed (.xz, as run.sh
    brings it back)."""
    opener = lzma.open if str(path).endswith(".xz") else open
    with opener(path, "rt", newline="") as f:
        yield from csv.DictReader(f)


def load(path):
    """Device work (K, S, C), API calls (R, D) and memory events (A, F, P: LONGNET_TIMELINE_MEMORY=1)."""
    device, api, memory = [], [], []
    for row in records(path):
        item = (int(row["start_ns"]), int(row["end_ns"]), int(row["correlation"]), row["kind"], row["name"])
        kind = row["kind"]
        (device if kind in "KSC" else memory if kind in "AFP" else api).append(item + (int(row["bytes"]),))
    device = [d[:5] for d in sorted(device)]
    api = [a[:5] for a in sorted(api)]
    memory.sort()
    return device, api, memory


def pool_size(event):
    """The stream-ordered pool's size after an allocation or free (its row's name), else None."""
    words = event[4].split()
    return int(words[2]) if event[3] in "AF" and words[:2] == ["pool", "size"] else None


def pool_growths(memory, lo, hi):
    """Allocations in (lo, hi] after which the pool was larger than before: (time, size
    before, size after, bytes allocated, correlation id)."""
    before = [pool_size(m) for m in memory if m[0] <= lo and pool_size(m) is not None]
    previous = before[-1] if before else None
    growths = []
    for m in memory:
        size = pool_size(m)
        if not lo < m[0] <= hi or size is None:
            continue
        if m[3] == "A" and previous is not None and size > previous:
            growths.append((m[0], previous, size, m[5], m[2]))
        previous = size
    return growths


def pool_report(memory, lo, hi, api):
    """The step's allocations, the pool's size range, pool operations and growths."""
    events = [m for m in memory if lo < m[0] <= hi]
    if not events:
        return
    sizes = [pool_size(m) for m in events if pool_size(m) is not None]
    allocations = sum(1 for m in events if m[3] == "A")
    frees = sum(1 for m in events if m[3] == "F")
    print(f"   memory: {allocations} allocations, {frees} frees" +
          (f", pool size {min(sizes) / 2**30:.2f}-{max(sizes) / 2**30:.2f} GiB" if sizes else ""))
    for m in events:
        if m[3] == "P":
            print(f"     pool event at {(m[0] - lo) / 1e3:.1f} us: {m[4]}")
    call_time = {a[2]: a[1] - a[0] for a in api}
    for when, old, new, nbytes, corr in pool_growths(memory, lo, hi):
        print(f"     the pool grew {old / 2**20:.0f} -> {new / 2**20:.0f} MiB at {(when - lo) / 1e3:.1f} us "
              f"allocating {nbytes / 2**20:.1f} MiB (the call took {call_time.get(corr, 0) / 1e3:.0f} us)")


def steps_of(device, pattern):
    """(first index, last index) of each step's device activities."""
    ends = []
    for i, (_, _, _, kind, name) in enumerate(device):
        is_end = kind == "K" and pattern.search(name)
        next_is_end = i + 1 < len(device) and device[i + 1][3] == "K" and pattern.search(device[i + 1][4])
        if is_end and not next_is_end:
            ends.append(i)
    return [(a + 1, b) for a, b in zip(ends, ends[1:])]


def idle_gaps(work, api):
    """The step's span, busy time and gaps: (span, busy, [(gap, from, to, owner, next name)]),
    owner "host" when the call that launched the next work began after the device ran dry."""
    launch_start = {}
    for start, _, corr, _, _ in api:
        if corr not in launch_start or start < launch_start[corr]:
            launch_start[corr] = start
    span = work[-1][1] - work[0][0]
    busy = 0
    gaps = []
    reach = work[0][0]
    for start, end, corr, kind, name in work:
        gap = start - reach
        if gap > 0:
            launched = launch_start.get(corr)
            owner = "host" if launched is not None and launched >= reach else "device"
            gaps.append((gap, reach, start, owner, name))
        busy += max(0, end - max(start, reach))
        reach = max(reach, end)
    return span, busy, gaps


def report(device, api, first, last, top, index):
    work = device[first : last + 1]
    span, busy, gaps = idle_gaps(work, api)
    host_gap = sum(g[0] for g in gaps if g[3] == "host")
    device_gap = sum(g[0] for g in gaps if g[3] == "device")
    counts = collections.Counter(kind for _, _, _, kind, _ in work)
    print(f"== step {index}: span {span / 1e6:.3f} ms, device busy {busy / 1e6:.3f} ms, idle "
          f"{(span - busy) / 1e6:.3f} ms (host late {host_gap / 1e6:.3f}, device side {device_gap / 1e6:.3f}) in "
          f"{len(gaps)} gaps; {counts['K']} kernels, {counts['S']} memsets, {counts['C']} copies")
    memset_ns = sum(e - s for s, e, _, k, _ in work if k == "S")
    print(f"   memsets ran {memset_ns / 1e6:.3f} ms; gaps by size: " + ", ".join(
        f"{label} {sum(g for g, *_ in gaps if lo * 1e3 <= g < hi * 1e3) / 1e6:.3f} ms"
        for label, lo, hi in (("<2us", 0, 2), ("2-5us", 2, 5), ("5-20us", 5, 20), ("20-100us", 20, 100),
                              (">=100us", 100, float("inf")))))
    # What preceded the device's time in gaps (summed by the next activity's name).
    by_next = collections.Counter()
    for gap, _, _, owner, name in gaps:
        by_next[(owner, short(name, 60))] += gap
    print("   idle time before (summed by the next piece of work):")
    for (owner, name), ns in by_next.most_common(top):
        print(f"     {ns / 1e3:9.1f} us  {owner:6s}  {name}")
    api_starts = [a[0] for a in api]
    print(f"   the {min(top, len(gaps))} largest gaps, with the host's longest calls during them:")
    for gap, lo, hi, owner, name in sorted(gaps, reverse=True)[:top]:
        during = []
        for start, end, _, kind, call in api[max(0, bisect.bisect_left(api_starts, lo) - 50) : bisect.bisect_right(api_starts, hi)]:
            overlap = min(end, hi) - max(start, lo)
            if overlap > 0:
                during.append((overlap, call))
        during.sort(reverse=True)
        calls = "; ".join(f"{call} {ns / 1e3:.0f}us" for ns, call in during[:3])
        print(f"     {gap / 1e3:8.1f} us {owner:6s} before {short(name, 50)}  [{calls}]")
    by_kernel = collections.defaultdict(lambda: [0, 0])
    for start, end, _, kind, name in work:
        entry = by_kernel[short(name)]
        entry[0] += 1
        entry[1] += end - start
    print("   device time by kernel:")
    for name, (n, ns) in sorted(by_kernel.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"     {ns / 1e6:8.3f} ms {n:5d}x  {name}")
    host = collections.defaultdict(lambda: [0, 0])
    lo, hi = work[0][0], work[-1][1]
    for start, end, _, kind, call in api:
        if lo <= start <= hi:
            host[call][0] += 1
            host[call][1] += end - start
    print("   host time in API calls during the step:")
    for call, (n, ns) in sorted(host.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"     {ns / 1e6:8.3f} ms {n:5d}x  {call}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--step-end", default="step_many_kernel")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    device, api, memory = load(args.csv)
    if not device:
        sys.exit(f"{args.csv}: no device activity recorded")
    steps = steps_of(device, re.compile(args.step_end))
    if not steps:
        sys.exit(f"{args.csv}: no two step ends (kernels matching {args.step_end!r}) found")
    for i, (first, last) in enumerate(steps, start=1):
        report(device, api, first, last, args.top, i)
        pool_report(memory, device[first - 1][1], device[last][1], api)  # from the previous step's end


if __name__ == "__main__":
    main()
