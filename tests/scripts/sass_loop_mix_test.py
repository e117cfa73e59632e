#!/usr/bin/env python3
"""Unit test of scripts/gpu/sass_loop_mix.py on hand-written SASS: a loop is found by its
back edge, a long forward branch inside it (a masked block) is left out of the main path
while a short one is not, and predicated opcodes are counted without their predicate and
modifiers."""
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import sass_loop_mix as mix  # noqa: E402


def sass(*lines):
    return [(0x100 + 0x10 * i, text) for i, text in enumerate(lines)]


class SassLoopMix(unittest.TestCase):
    def test_main_path_skips_long_forward_branches_only(self):
        # 0x100 loop head; 0x110 skips the three-instruction block to 0x150.
        code = sass("HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], RZ", "@P0 BRA 0x150", "ISETP.GT.AND P1, PT, R9, 0x8, PT",
                    "FSEL R60, R60, RZ, !P1", "FSEL R61, R61, RZ, !P1", "MUFU.EX2 R24, R24", "@P2 MUFU.EX2 R25, R25",
                    "@!P3 BRA 0x100")
        (start, end, length, counts), = mix.loop_mixes(code, min_length=1, skip_over=2)
        self.assertEqual((start, end, length), (0x100, 0x170, 8))
        self.assertEqual(counts["MUFU"], 2)
        self.assertEqual(counts["FSEL"], 0)
        self.assertEqual(counts["ISETP"], 0)
        # With a longer threshold the block is part of the main path.
        (_, _, _, counts), = mix.loop_mixes(code, min_length=1, skip_over=3)
        self.assertEqual(counts["FSEL"], 2)

    def test_short_loops_and_forward_branches_are_not_loops(self):
        code = sass("IADD3 R1, R1, 0x1, RZ", "@P0 BRA 0x100", "BRA 0x140", "NOP", "EXIT")
        self.assertEqual(len(mix.loop_mixes(code, min_length=1)), 1)
        self.assertEqual(mix.loop_mixes(code, min_length=3), [])

    def test_opcode_drops_predicate_and_modifiers(self):
        self.assertEqual(mix.opcode("@!P0 LDS.128 R4, [R2]"), "LDS")
        self.assertEqual(mix.opcode("WARPGROUP.DEPBAR.LE gsb0, 0x1"), "WARPGROUP")


if __name__ == "__main__":
    unittest.main()
