#!/usr/bin/env python3
"""Unit test of scripts/gpu/check_wgmma_fragments.py on hand-written SASS: the miscompile
it looks for (a fragment register that an LDSM before a loop loaded, that an HGMMA in the
loop reads, written inside the loop) is flagged; the same loop without the write, a
loop that reloads its fragments, and code that runs after the loop but sits before its latch
(ptxas places epilogues there), are not."""
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import check_wgmma_fragments as check  # noqa: E402


def sass(*lines):
    return [(0x100 + 0x10 * i, text) for i, text in enumerate(lines)]


PROLOGUE = ("LDSM.16.M88.4 R152, [R12]",)
LOOP_HEAD = ("SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R7", "HGMMA.64x64x16.F32.BF16 R56, R152, gdesc[UR20], RZ, gsb0",
             "WARPGROUP.DEPBAR.LE gsb0, 0x0")
BACK_EDGE = "@!P0 BRA 0x110"  # to the first loop instruction


class CheckWgmmaFragments(unittest.TestCase):
    def test_a_write_to_a_held_fragment_inside_the_loop_is_flagged(self):
        code = sass(*PROLOGUE, *LOOP_HEAD, "F2FP.BF16.F32.PACK_AB R153, R57, R56", BACK_EDGE)
        found = check.problems(code)
        self.assertEqual(len(found), 1)
        self.assertIn("R153", found[0])

    def test_the_loop_without_the_write_passes(self):
        code = sass(*PROLOGUE, *LOOP_HEAD, "F2FP.BF16.F32.PACK_AB R60, R57, R56", BACK_EDGE)
        self.assertEqual(check.problems(code), [])

    def test_fragments_reloaded_inside_the_loop_pass(self):
        code = sass("MOV R1, R2", "LDSM.16.M88.4 R152, [R12]", *LOOP_HEAD, "F2FP.BF16.F32.PACK_AB R153, R57, R56",
                    BACK_EDGE)
        self.assertEqual(check.problems(code), [])

    def test_code_placed_between_the_loop_and_its_latch_is_not_in_the_loop(self):
        # 0x110 loop head; 0x140 leaves the loop for the epilogue at 0x150, which writes the
        # fragment register once the loop is over; the latch at 0x170 branches back.
        code = sass(*PROLOGUE, *LOOP_HEAD, "@P1 BRA 0x170", "LOP3.LUT R153, R24, 0x10, RZ, 0xfc, !PT", "EXIT",
                    "BRA 0x110")
        self.assertEqual(check.problems(code), [])
        # The same write inside the loop (on the path to the latch) is flagged.
        code = sass(*PROLOGUE, *LOOP_HEAD, "@P1 BRA 0x170", "EXIT", "NOP", "LOP3.LUT R153, R24, 0x10, RZ, 0xfc, !PT",
                    "BRA 0x110")
        self.assertEqual(len(check.problems(code)), 1)

    def test_written_registers_follows_the_access_width(self):
        self.assertEqual(check.written_registers("LDS.128 R4, [R2]"), {4, 5, 6, 7})
        self.assertEqual(check.written_registers("@P0 LDS.64 R8, [R2]"), {8, 9})
        self.assertEqual(check.written_registers("STS [R2], R4"), set())


class UniformMoves(unittest.TestCase):
    """check.uniform_moves: an R2UR in an innermost loop of wgmmas is flagged (ptxas once moved
    the descriptors out of uniform registers that way); one in an enclosing loop that runs
    once a head is not, nor a loop without one."""

    def test_an_r2ur_in_the_innermost_loop_of_wgmmas_is_flagged(self):
        code = sass(*PROLOGUE, *LOOP_HEAD, "R2UR UR20, R3", BACK_EDGE)
        found = check.uniform_moves(code)
        self.assertEqual(len(found), 1)
        self.assertIn("R2UR UR20, R3", found[0])

    def test_the_loop_without_it_passes(self):
        self.assertEqual(check.uniform_moves(sass(*PROLOGUE, *LOOP_HEAD, "MOV R3, R4", BACK_EDGE)), [])

    def test_an_r2ur_in_an_enclosing_loop_passes(self):
        code = sass(*PROLOGUE, "MOV R3, R4", "R2UR UR20, R3", "HGMMA.64x64x16.F32.BF16 R56, R152, gdesc[UR20], RZ, gsb0",
                    "@!P0 BRA 0x130", "@!P1 BRA 0x110")
        self.assertEqual(check.uniform_moves(code), [])
        # The same R2UR inside the inner loop is flagged.
        code = sass(*PROLOGUE, "MOV R3, R4", "HGMMA.64x64x16.F32.BF16 R56, R152, gdesc[UR20], RZ, gsb0",
                    "R2UR UR20, R3", "@!P0 BRA 0x120", "@!P1 BRA 0x110")
        self.assertEqual(len(check.uniform_moves(code)), 1)


if __name__ == "__main__":
    unittest.main()
