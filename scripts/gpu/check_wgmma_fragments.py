#!/usr/bin/env python3
"""Checks the SASS of the warp-specialised Hopper backward for a miscompile seen with ptxas
of CUDA 13.0: register A fragments that a kernel loads once (ldmatrix, LDSM in SASS) and
reads in every iteration of a loop of wgmmas (HGMMA) must not be written inside that loop.
In a variant of flash_backward_sm90_ws.cuh ptxas put P^T into K's fragment registers there
although the PTX kept them live; the result was wrong dK and dV.

    check_wgmma_fragments.py OBJECT...

OBJECT: the *_sm90a.cu.o files of the kernel (needs cuobjdump and nvdisasm on PATH, e.g.
from PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm). Exit status 1 if a loop of a
flash_backward_sm90_ws_kernel writes a register that an LDSM outside the loop loaded and
an HGMMA in the loop reads.
"""
import re
import subprocess
import sys


def kernels(path):
    sass = subprocess.run(["cuobjdump", "-sass", path], capture_output=True, text=True, check=True).stdout
    current, found = None, {}
    for line in sass.splitlines():
        name = re.search(r"Function : (\S+)", line)
        if name:
            current = name.group(1)
            found[current] = []
            continue
        instruction = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if instruction and current:
            found[current].append((int(instruction.group(1), 16), instruction.group(2).strip()))
    return found


def written_registers(text):
    """Registers an instruction writes (its first operand), for ordinary ALU / load opcodes."""
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    if text.startswith(("HGMMA", "ST", "RED", "ATOM", "SYNCS", "BAR", "WARPGROUP", "BRA", "MEMBAR", "FENCE")):
        return set()
    match = re.match(r"([A-Z0-9_.]+)\s+R(\d+)", text)
    if not match:
        return set()
    opcode, first = match.group(1), int(match.group(2))
    width = 4 if opcode.startswith("LDSM") or ".128" in opcode else 2 if ".64" in opcode else 1
    return {first + i for i in range(width)}


def problems(instructions):
    found = []
    for address, text in instructions:
        branch = re.search(r"BRA (0x[0-9a-f]+)", text)
        if not branch or int(branch.group(1), 16) >= address:
            continue
        start = int(branch.group(1), 16)
        body = [(a, t) for a, t in instructions if start <= a <= address]
        loaded_before = set()
        for a, t in instructions:
            if a < start and t.startswith("LDSM"):
                loaded_before |= written_registers(t)
        read_by_products = set()
        for _, t in body:
            operand = re.search(r"HGMMA\S*\s+R\d+,\s+R(\d+),", t)
            if operand:
                read_by_products |= {int(operand.group(1)) + i for i in range(4)}
        held = loaded_before & read_by_products
        for a, t in body:
            if written_registers(t) & held:
                found.append(f"{a:#x} {t}")
    return found


def main():
    failed = False
    for path in sys.argv[1:]:
        for name, instructions in kernels(path).items():
            if "flash_backward_sm90_ws_kernel" not in name:
                continue
            bad = problems(instructions)
            if bad:
                failed = True
                print(f"{path}: {name}: fragment registers written inside the loop:", *bad[:4], sep="\n  ")
    print("wgmma fragments:", "PROBLEMS FOUND" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
