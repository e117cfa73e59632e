#!/usr/bin/env python3
"""Writes the corpus of malformed safetensors files used by tests/io (and as fuzzer seeds).

Each file gets a line in manifest.json: the file name and a phrase the reader's error
message must contain. Re-run after changing the cases: python3 scripts/make_malformed_safetensors.py
"""
import json
import os
import struct
import sys

out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "io", "malformed")
os.makedirs(out_dir, exist_ok=True)


def header_file(header, data=b"", raw_header=None, length=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


cases = {
    "empty_file": (b"", "truncated header"),
    "truncated_header_length": (b"\x10\x00\x00", "truncated header"),
    "header_beyond_file": (header_file({}, length=4096), "extends beyond the end of the file"),
    "header_over_limit": (struct.pack("<Q", 200_000_000) + b"{}", "exceeds the limit"),
    "not_an_object": (header_file(None, raw_header=b"[1, 2]  "), "does not start with a JSON object"),
    "bad_json": (header_file(None, raw_header=b'{"a": {"dtype": "F32",'), "not valid JSON"),
    "invalid_utf8_name": (header_file(None, raw_header=b'{"\xff\xfe": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}',
                                      ) + b"\0\0\0\0", "not valid JSON"),
    "unknown_dtype": (header_file({"x": tensor("F7", [1], 0, 4)}, b"\0" * 4), "unknown dtype 'F7'"),
    "dtype_not_string": (header_file({"x": tensor(3, [1], 0, 4)}, b"\0" * 4), "dtype must be a string"),
    "negative_shape": (header_file({"x": tensor("F32", [-1], 0, 4)}, b"\0" * 4), "non-negative integer"),
    "fractional_shape": (header_file({"x": tensor("F32", [1.5], 0, 4)}, b"\0" * 4), "non-negative integer"),
    "shape_not_array": (header_file({"x": tensor("F32", 4, 0, 16)}, b"\0" * 16), "shape must be an array"),
    "shape_overflow": (header_file({"x": tensor("F64", [2**40, 2**40], 0, 8)}, b"\0" * 8), "more bytes than 2^64"),
    "size_mismatch": (header_file({"x": tensor("F32", [3], 0, 8)}, b"\0" * 8), "size mismatch"),
    "offsets_out_of_range": (header_file({"x": tensor("F32", [4], 0, 16)}, b"\0" * 8), "out of range"),
    "offsets_reversed": (header_file({"x": tensor("F32", [0], 8, 4)}, b"\0" * 8), "begin after end"),
    "offsets_wrong_arity": (header_file({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4),
                            "data_offsets must be [begin, end]"),
    "overlapping_offsets": (header_file({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, b"\0" * 12),
                            "overlapping data_offsets"),
    "hole_between_tensors": (header_file({"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)}, b"\0" * 12),
                             "hole in the data section"),
    "trailing_bytes": (header_file({"a": tensor("F32", [1], 0, 4)}, b"\0" * 12), "trailing bytes"),
    "truncated_data": (header_file({"a": tensor("F32", [4], 0, 16)}, b"\0" * 10), "out of range"),
    "missing_field": (header_file({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "must have dtype, shape and data_offsets"),
    "unknown_field": (header_file({"a": dict(tensor("F32", [1], 0, 4), extra=1)}, b"\0" * 4), "unknown field 'extra'"),
    "entry_not_object": (header_file({"a": [1, 2, 3]}, b""), "must be an object"),
    "metadata_not_strings": (header_file({"__metadata__": {"step": 3}}), "must be a string"),
    "duplicate_name": (header_file(None, raw_header=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                                                    b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}') + b"\0" * 4,
                       "more than once"),
}

manifest = []
for name, (content, expect) in sorted(cases.items()):
    file_name = name + ".safetensors"
    with open(os.path.join(out_dir, file_name), "wb") as f:
        f.write(content)
    manifest.append({"file": file_name, "expect": expect})
with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
    f.write("\n")
print(f"wrote {len(manifest)} malformed files to {out_dir}")
