#!/usr/bin/env python3
"""Checks the SASS of the warp-specialised Hopper backward for a miscompile seen with ptxas
of CUDA 13.0: register A fragments that a kernel loads once (ldmatrix, LDSM in SASS) and
reads in every iteration of a loop of wgmmas (HGMMA) must not be written inside that loop.
In a variant of flash_backward_sm90_ws.cuh ptxas put P^T into K's fragment registers there
although the PTX kept them live; the result was wrong dK and dV.

    check_wgmma_fragments.py OBJECT...

Also that no innermost loop of wgmmas moves a value into a uniform register (R2UR): a
schedule ptxas fell into once, ~10 % slower (uniform_moves).

OBJECT: the *_sm90a.cu.o files of the kernel (needs cuobjdump and nvdisasm on PATH, e.g.
from PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm). Exit status 1 if a loop of a
flash_backward_sm90_ws_kernel writes a register that an LDSM outside the loop loaded and
an HGMMA in the loop reads, or if its main loop has an R2UR.
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


def unpredicated(text):
    """An instruction without its guard predicate (`@!P0 BRA ...` -> `BRA ...`)."""
    return re.sub(r"^@!?U?P\w+\s+", "", text)


def written_registers(text):
    """Registers an instruction writes (its first operand), for ordinary ALU / load opcodes."""
    text = unpredicated(text)
    if text.startswith(("HGMMA", "ST", "RED", "ATOM", "SYNCS", "BAR", "WARPGROUP", "BRA", "MEMBAR", "FENCE")):
        return set()
    match = re.match(r"([A-Z0-9_.]+)\s+R(\d+)", text)
    if not match:
        return set()
    opcode, first = match.group(1), int(match.group(2))
    width = 4 if opcode.startswith("LDSM") or ".128" in opcode else 2 if ".64" in opcode else 1
    return {first + i for i in range(width)}


def branch_target(text):
    """The address a BRA jumps to (cuobjdump's `BRA 0x1fc0`, nvdisasm's `BRA `(.L_x_1) 0x1fc0`)."""
    match = re.search(r"BRA(?:\.\S+)?\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", text)
    return int(match.group(1), 16) if match else None


def ends_without_branch(text):
    """An EXIT or RET (predicated or not): the end of a basic block that names no target."""
    return re.match(r"(@!?U?P\w+\s+)?(EXIT|RET)", text) is not None


def loop_bodies(instructions):
    """The natural loop of each back edge (a branch to an address at or before it): the
    indices of the instructions of every basic block that reaches the branch without
    passing its target. ptxas may place a loop's latch after code that runs once the loop
    has ended (an epilogue), so the address range between target and branch is not the loop."""
    index = {address: i for i, (address, _) in enumerate(instructions)}
    count = len(instructions)
    leaders = {0}
    for i, (_, text) in enumerate(instructions):
        target = branch_target(text)
        if target is not None and target in index:
            leaders.add(index[target])
        if target is not None or ends_without_branch(text):
            leaders.add(i + 1)
    starts = sorted(leader for leader in leaders if leader < count)
    block_of = {}
    blocks = []
    for b, start in enumerate(starts):
        end = starts[b + 1] if b + 1 < len(starts) else count
        blocks.append(range(start, end))
        for i in range(start, end):
            block_of[i] = b
    predecessors = [set() for _ in blocks]
    for b, block in enumerate(blocks):
        last = instructions[block[-1]][1]
        predicated = last.startswith("@")
        target = branch_target(last)
        successors = []
        if target is not None and target in index:
            successors.append(block_of[index[target]])
        ends = target is not None or ends_without_branch(last)
        if (not ends or predicated) and block[-1] + 1 < count:
            successors.append(block_of[block[-1] + 1])
        for successor in successors:
            predecessors[successor].add(b)
    loops = []
    for i, (address, text) in enumerate(instructions):
        target = branch_target(text)
        if target is None or target > address or target not in index:
            continue
        header, latch = block_of[index[target]], block_of[i]
        body, work = {header}, []
        if latch != header:
            body.add(latch)
            work.append(latch)
        while work:
            for predecessor in predecessors[work.pop()]:
                if predecessor not in body:
                    body.add(predecessor)
                    work.append(predecessor)
        loops.append(sorted(j for b in body for j in blocks[b]))
    return loops


def problems(instructions):
    found = []
    for body_indices in loop_bodies(instructions):
        body = [instructions[j] for j in body_indices]
        inside = set(body_indices)
        loaded_before = set()
        for j, (_, t) in enumerate(instructions):
            if j not in inside and t.startswith("LDSM"):
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
    return sorted(set(found))


def uniform_moves(instructions):
    """R2UR in an innermost loop of wgmmas: a descriptor (or its base) moved from an
    ordinary register at every iteration. 64-bit remainders in the epilogue of the kStoreKv
    instantiation once made ptxas take its descriptors out of uniform registers this way
    (35 R2UR in its main loop, ~10 % slower; docs/benchmarks.md, twenty-fourth session)."""
    loops = [set(body) for body in loop_bodies(instructions)
             if any(unpredicated(instructions[j][1]).startswith("HGMMA") for j in body)]
    found = []
    for body in loops:
        if any(other < body for other in loops):
            continue  # not innermost: runs once a head or a CTA
        found += [f"{instructions[j][0]:#x} {instructions[j][1]}" for j in sorted(body)
                  if unpredicated(instructions[j][1]).startswith("R2UR")]
    return sorted(set(found))


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
            moves = uniform_moves(instructions)
            if moves:
                failed = True
                print(f"{path}: {name}: {len(moves)} R2UR in the main loop (descriptors out of uniform registers):",
                      *moves[:4], sep="\n  ")
    print("wgmma fragments and descriptors:", "PROBLEMS FOUND" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
