#!/usr/bin/env python3
"""One kernel inside a training step, from a CUPTI timeline (scripts/gpu/timeline/
cupti_timeline.cpp's CSV, plain or .xz): the durations of the kernels whose name matches
REGEX (as the recorder writes names: template arguments separated by ';'), the time
kernels of other streams overlapped them, the gaps before and after them on their own
stream, and what ran there just before and after. What Nsight Compute times alone (its
caches flushed, clocks at their maximum) can differ from this: the summing gradient
conversion was faster alone and slower here in one CTA order (docs/benchmarks.md,
2026-12-07, twenty-sixth session).

  kernel_in_step.py timeline.csv.xz REGEX
"""
import collections
import pathlib
import re
import signal
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import timeline  # noqa: E402  (the recorder's rows, short kernel names)

WINDOW = 50  # neighbours looked at on each side (the step's launches are ~1-2 us apart)


def load(path):
    """Kernels, memsets and copies as (start_ns, end_ns, stream, name), by start."""
    return sorted((int(r["start_ns"]), int(r["end_ns"]), r["stream"], r["name"]) for r in timeline.records(path)
                  if r["kind"] in ("K", "S", "C"))


def in_step(rows, pattern):
    """For each kernel matching `pattern` (a compiled regex), in us: its duration, the time
    other streams' work overlapped it, the gaps to the work before and after it on its own
    stream; and the names of that work, counted."""
    found = {"durations": [], "overlaps": [], "before": [], "after": [],
             "before_names": collections.Counter(), "after_names": collections.Counter()}
    for i, (start, end, stream, name) in enumerate(rows):
        if not pattern.search(name):
            continue
        found["durations"].append((end - start) / 1e3)
        nearby = rows[max(0, i - WINDOW):i + WINDOW]
        found["overlaps"].append(sum(min(end, e) - max(start, s) for s, e, st, _ in nearby
                                     if st != stream and s < end and e > start) / 1e3)
        previous = [r for r in rows[max(0, i - WINDOW):i] if r[2] == stream]
        following = [r for r in rows[i + 1:i + WINDOW] if r[2] == stream]
        if previous:
            found["before"].append((start - previous[-1][1]) / 1e3)
            found["before_names"][timeline.short(previous[-1][3])] += 1
        if following:
            found["after"].append((following[0][0] - end) / 1e3)
            found["after_names"][timeline.short(following[0][3])] += 1
    return found


def median(values):
    return f"{statistics.median(values):.1f}" if values else "-"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    found = in_step(load(sys.argv[1]), re.compile(sys.argv[2]))
    durations = found["durations"]
    if not durations:
        sys.exit(f"no kernel matches {sys.argv[2]!r}")
    print(f"{sys.argv[2]}: {len(durations)} launches; us, median: duration {median(durations)} "
          f"(min {min(durations):.1f}, max {max(durations):.1f}), other streams overlapping "
          f"{median(found['overlaps'])}, gap before {median(found['before'])}, after {median(found['after'])}")
    print("  before it:", dict(found["before_names"].most_common(3)))
    print("  after it:", dict(found["after_names"].most_common(3)))


if __name__ == "__main__":
    main()
