#!/usr/bin/env python3
"""Unit test of scripts/gpu/kernel_in_step.py on a hand-written timeline: a kernel's
durations, the time other streams' work overlapped it (work on its own stream does not
count), the gaps to the work before and after it on its own stream and that work's names;
API records are left out, and an .xz timeline reads as a plain one."""
import csv
import lzma
import pathlib
import re
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import kernel_in_step  # noqa: E402

HEADER = ["kind", "start_ns", "end_ns", "correlation", "stream", "bytes", "name"]
ROWS = [
    ["R", 0, 500, 1, 0, 0, "cudaLaunchKernel"],  # an API call: not device work
    ["K", 1000, 2000, 1, 7, 0, "gemm_a"],
    ["K", 3000, 7000, 2, 7, 0, "convert<bf16; 1>"],  # 1 us after gemm_a
    ["K", 2500, 4000, 3, 9, 0, "side_gemm"],  # overlaps it by 1 us
    ["S", 6500, 9000, 4, 9, 0, "memset"],  # and by 0.5 us
    ["K", 9000, 10000, 5, 7, 0, "column_sums"],  # 2 us after it
    ["K", 12000, 14000, 6, 7, 0, "convert<bf16; 1>"],  # 2 us after column_sums, nothing beside it
]


def write(rows, compressed=False):
    path = pathlib.Path(tempfile.mkdtemp()) / ("timeline.csv.xz" if compressed else "timeline.csv")
    with (lzma.open(path, "wt", newline="") if compressed else open(path, "w", newline="")) as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(rows)
    return str(path)


class KernelInStep(unittest.TestCase):
    def test_durations_overlaps_gaps_and_neighbours(self):
        found = kernel_in_step.in_step(kernel_in_step.load(write(ROWS)), re.compile(r"convert<bf16; 1>"))
        self.assertEqual(found["durations"], [4.0, 2.0])
        self.assertEqual(found["overlaps"], [1.5, 0.0])
        self.assertEqual(found["before"], [1.0, 2.0])
        self.assertEqual(found["after"], [2.0])  # the last launch has nothing after it
        self.assertEqual(dict(found["before_names"]), {"gemm_a": 1, "column_sums": 1})
        self.assertEqual(dict(found["after_names"]), {"column_sums": 1})

    def test_api_records_are_not_device_work_and_xz_reads_the_same(self):
        rows = kernel_in_step.load(write(ROWS, compressed=True))
        self.assertEqual(len(rows), 6)
        self.assertEqual(rows, kernel_in_step.load(write(ROWS)))
        self.assertEqual(kernel_in_step.in_step(rows, re.compile("cudaLaunch"))["durations"], [])


if __name__ == "__main__":
    unittest.main()
