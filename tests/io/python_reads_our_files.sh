#!/bin/sh
# Checks that the official Python safetensors reader loads a file longnet wrote.
# Exit 77 (skip) when Python lacks safetensors or numpy.
set -e
"$PYTHON" -c "import safetensors, numpy" 2>/dev/null || { echo "python safetensors/numpy missing: skip"; exit 77; }
"$1" "$2"
"$PYTHON" - "$2" <<'PY'
import json, struct, sys
import numpy as np
from safetensors import safe_open

path = sys.argv[1]
ramp = (np.arange(24, dtype=np.float32) / 8.0 - 1.0).reshape(2, 3, 4)
with safe_open(path, framework="numpy") as f:
    assert f.metadata() == {"writer": "longnet"}
    names = set(f.keys())
    assert names == {"f32", "f64_transposed", "bf16", "f16", "i64", "scalar", "empty"}, names
    assert np.array_equal(f.get_tensor("f32"), ramp)
    assert np.array_equal(f.get_tensor("f64_transposed"), ramp.transpose(2, 1, 0).astype(np.float64))
    assert np.array_equal(f.get_tensor("f16"), ramp.astype(np.float16))
    assert f.get_tensor("i64").tolist() == [-3, 0, 9]
    scalar = f.get_tensor("scalar")
    assert scalar.shape == () and float(scalar) == 2.5
    assert f.get_tensor("empty").shape == (3, 0)
# numpy has no bfloat16: decode it from the raw bytes the header points at.
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
entry = json.loads(raw[8:8 + n])["bf16"]
begin, end = entry["data_offsets"]
bits = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype="<u2").astype(np.uint32) << 16
assert entry["dtype"] == "BF16" and entry["shape"] == [2, 3, 4]
assert np.array_equal(bits.view(np.float32).reshape(2, 3, 4), ramp)  # these values are exact in bf16
print("python safetensors read all 7 tensors")
PY
