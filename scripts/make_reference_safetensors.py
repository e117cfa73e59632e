#!/usr/bin/env python3
"""Writes tests/io/reference/python_written.safetensors with the official Python
`safetensors` package (pip install safetensors numpy), so tests check that we read what
the reference implementation writes. The values are simple closed forms the test recomputes."""
import os
import sys

import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "io", "reference",
                                                          "python_written.safetensors")
os.makedirs(os.path.dirname(out), exist_ok=True)
ramp = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 8.0 - 1.0
tensors = {
    "f64": ramp,
    "f32": ramp.astype(np.float32),
    "f16": ramp.astype(np.float16),
    "i32": np.arange(6, dtype=np.int32).reshape(3, 2) - 2,
    "i64": np.arange(5, dtype=np.int64) * 1_000_000_007,
    "u8": np.arange(7, dtype=np.uint8) * 30,
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((3, 0), dtype=np.float32),
}
save_file(tensors, out, metadata={"format": "pt", "note": "written by safetensors (Python)"})
print("wrote", out)
