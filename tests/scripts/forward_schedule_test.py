#!/usr/bin/env python3
"""Unit test of scripts/gpu/forward_schedule.py: its group rule and item order agree with
forward_cost_group and cost_ordered_item (dilation.hpp, whose C++ tests pin the same
values), static rounds and the counter on hand-worked loads, and on the training
configuration the counter never loads a CTA more than the static rounds."""
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
import forward_schedule as fs  # noqa: E402


class ForwardSchedule(unittest.TestCase):
    def test_group_rule_matches_dilation_hpp(self):
        rows_2048, rows_2731 = 2 * 2048 * 64 * 2, 2 * 2731 * 64 * 2
        self.assertEqual(fs.cost_group(rows_2048, 192), 32)
        self.assertEqual(fs.cost_group(rows_2048, 96), 32)
        self.assertEqual(fs.cost_group(rows_2048, 48), 0)
        self.assertEqual(fs.cost_group(rows_2731, 24), 0)
        self.assertEqual(fs.cost_group(1 << 20, 48), 16)  # 48 MB: three equal groups of 16
        self.assertEqual(fs.cost_group(1 << 20, 40), 14)  # 40 MB: 14, 14, 12 (not 16, 16, 8)

    def test_cost_order_takes_every_item_once_heaviest_tile_first(self):
        for sequences, tiles, group in [(5, 3, 0), (33, 11, 32), (12, 4, 5)]:
            order = [fs.cost_ordered(i, sequences, tiles, group) for i in range(sequences * tiles)]
            self.assertEqual(sorted(order), [(s, t) for s in range(sequences) for t in range(tiles)])
            self.assertEqual(order[0][1], tiles - 1)

    def test_item_cost_counts_each_warpgroups_own_tiles(self):
        # 2048 rows: the last item (rows 1920..2111) has warpgroups ending at 1984, 2048 and
        # past the end: 16 + 16 + 1.
        self.assertEqual(fs.item_cost(1920, 2048, 3), 33)
        self.assertEqual(fs.item_cost(0, 2048, 3), 1 + 1 + 2)

    def test_static_rounds_and_counter_on_hand_worked_loads(self):
        costs = [6, 5, 1, 1, 1]
        # Rounds on two CTAs: (6, 5), reversed (1 to CTA 1, 1 to CTA 0), then 1 to CTA 0:
        # 8 and 6.
        self.assertEqual(fs.static_rounds(costs, 2), 8)
        # The counter: 6 and 5, then each 1 to the CTA free first: 7 and 7.
        self.assertEqual(fs.counter(costs, 2), 7)

    def test_counter_never_worse_on_the_training_patterns(self):
        for w, r in zip([2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12]):
            costs, _ = fs.launch_items(32768, 12, w, r, 3)
            self.assertLessEqual(fs.counter(costs, 132), fs.static_rounds(costs, 132))
            self.assertGreaterEqual(fs.counter(costs, 132), sum(costs) / 132)


if __name__ == "__main__":
    unittest.main()
