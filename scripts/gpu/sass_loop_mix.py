#!/usr/bin/env python3
"""Instruction mix of the loops of a kernel's SASS, to count what a change removes before
running it (the Hopper attention kernels are bound by issuing instructions, so an
iteration's instruction count predicts much of their speed).

    sass_loop_mix.py OBJECT [--kernel SUBSTRING] [--min-length N] [--skip-over N]

OBJECT: a .cu.o (needs cuobjdump on PATH, e.g. PyPI's nvidia-cuda-cuobjdump). For every
loop (a backward branch) of at least --min-length instructions in the kernels whose name
contains --kernel, prints its address range, its length, and the mix of the path that
skips every forward branch over more than --skip-over instructions (the masked or rare
blocks: the iteration most tiles run), opcodes without their modifiers.
"""
import argparse
import collections
import sys

from check_wgmma_fragments import branch_target, kernels  # BRA targets; the SASS of an object, by kernel


def opcode(text):
    words = text.split()
    word = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
    return word.split(".")[0]


def loop_mixes(code, min_length=200, skip_over=50):
    """(start, end, length, main-path Counter) of each loop of `code` ((address, text)
    pairs) with at least min_length instructions."""
    index = {address: i for i, (address, _) in enumerate(code)}
    loops = []
    for i, (address, text) in enumerate(code):
        target = branch_target(text)
        if target is None or target >= address or target not in index:
            continue
        body = code[index[target]:i + 1]
        if len(body) < min_length:
            continue
        skipped = []
        for at, line in body:
            forward = branch_target(line)
            jumped_over = (forward - at) // 16 - 1 if forward else 0  # instructions the branch skips
            if forward and forward > at and jumped_over > skip_over and forward <= address:
                skipped.append((at + 16, forward))
        path = [line for at, line in body if not any(low <= at < high for low, high in skipped)]
        loops.append((target, address, len(body), collections.Counter(opcode(line) for line in path)))
    return loops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("object")
    parser.add_argument("--kernel", default="", help="substring of the kernels' mangled names")
    parser.add_argument("--min-length", type=int, default=200, help="shortest loop reported (instructions)")
    parser.add_argument("--skip-over", type=int, default=50,
                        help="forward branches over more instructions than this are taken as skipped")
    parser.add_argument("--top", type=int, default=25, help="opcodes listed per loop")
    args = parser.parse_args()
    for name, code in kernels(args.object).items():
        if args.kernel not in name:
            continue
        print(f"== {name}")
        for start, end, length, mix in loop_mixes(code, args.min_length, args.skip_over):
            top = ", ".join(f"{op} {count}" for op, count in mix.most_common(args.top))
            print(f"loop {start:#x}-{end:#x}: {length} instructions, main path {sum(mix.values())}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
