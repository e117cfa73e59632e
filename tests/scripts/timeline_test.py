#!/usr/bin/env python3
"""Unit test of scripts/gpu/timeline.py on a hand-written timeline: steps end with the last
of a run of AdamW launches; a gap counts as the host's when the call that launched the
next work began after the device ran dry, else as the device's; overlapping work is busy
time once; an allocation that enlarged the pool is reported, one that reused it is not."""
import csv
import pathlib
import re
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import timeline  # noqa: E402

HEADER = ["kind", "start_ns", "end_ns", "correlation", "stream", "bytes", "name"]


def write(rows):
    path = pathlib.Path(tempfile.mkdtemp()) / "timeline.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(rows)
    return path


class Timeline(unittest.TestCase):
    def setUp(self):
        rows = [
            # step 0 ends with two AdamW launches
            ["R", 0, 1000, 1, 0, 0, "cudaLaunchKernel"], ["K", 2000, 3000, 1, 7, 0, "step_many_kernel<float>"],
            ["R", 1000, 1500, 2, 0, 0, "cudaLaunchKernel"], ["K", 3000, 4000, 2, 7, 0, "step_many_kernel<float>"],
            # step 1: a kernel launched long before it ran (device-side gap of 1000 ns)...
            ["R", 1500, 2000, 3, 0, 0, "cudaLaunchKernel"], ["K", 5000, 9000, 3, 7, 0, "void longnet::a(int)"],
            # ...a second overlapping the first (busy once)...
            ["R", 2000, 2500, 4, 0, 0, "cudaLaunchKernel"], ["K", 8000, 10000, 4, 8, 0, "void longnet::b(int)"],
            # ...then the host was late: launched at 12000, after the device ran dry at 10000
            ["R", 12000, 12500, 5, 0, 0, "cudaMallocFromPoolAsync"],
            ["A", 12100, 12100, 5, 7, 1 << 20, f"pool size {3 << 20} used 100"],
            ["R", 12600, 13000, 6, 0, 0, "cudaLaunchKernel"], ["K", 14000, 15000, 6, 7, 0, "step_many_kernel<float>"],
            # step 2: an allocation that reuses the pool, one that grows it
            ["A", 15500, 15500, 7, 7, 1 << 20, f"pool size {3 << 20} used 200"],
            ["R", 15600, 15700, 8, 0, 0, "cudaLaunchKernel"], ["K", 16000, 17000, 8, 7, 0, "void longnet::a(int)"],
            ["R", 17100, 17500, 9, 0, 0, "cudaMallocFromPoolAsync"],
            ["A", 17200, 17200, 9, 7, 2 << 20, f"pool size {5 << 20} used 300"],
            ["R", 17600, 17700, 10, 0, 0, "cudaLaunchKernel"], ["K", 18000, 19000, 10, 7, 0, "step_many_kernel<float>"],
        ]
        self.device, self.api, self.memory = timeline.load(write(rows))

    def test_steps_end_with_the_last_adamw_of_a_run(self):
        steps = timeline.steps_of(self.device, re.compile("step_many_kernel"))
        self.assertEqual([(self.device[a][4], self.device[b][4]) for a, b in steps],
                         [("void longnet::a(int)", "step_many_kernel<float>")] * 2)

    def test_gaps_are_the_hosts_or_the_devices(self):
        first, last = timeline.steps_of(self.device, re.compile("step_many_kernel"))[0]
        span, busy, gaps = timeline.idle_gaps(self.device[first:last + 1], self.api)
        self.assertEqual(span, 15000 - 5000)
        self.assertEqual(busy, (10000 - 5000) + (15000 - 14000))  # the overlap counted once
        self.assertEqual([(g[0], g[3]) for g in gaps], [(4000, "host")])

    def test_device_side_gap_before_a_kernel_launched_early(self):
        # From step 0's end (4000) the next kernel, launched at 1500, began at 5000.
        span, busy, gaps = timeline.idle_gaps(self.device[1:4], self.api)
        self.assertEqual([(g[0], g[3]) for g in gaps], [(1000, "device")])

    def test_only_an_allocation_that_enlarged_the_pool_is_a_growth(self):
        self.assertEqual(timeline.pool_growths(self.memory, 15000, 19000), [(17200, 3 << 20, 5 << 20, 2 << 20, 9)])
        self.assertEqual(timeline.pool_growths(self.memory, 4000, 15000), [])  # the first size seen

    def test_short_names_drop_namespaces_and_arguments(self):
        self.assertEqual(timeline.short("void longnet::kernels::(anonymous namespace)::f<int, (bool)1>(Params)"),
                         "f<int, (bool)1>")


if __name__ == "__main__":
    unittest.main()
