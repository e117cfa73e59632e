#!/usr/bin/env python3
"""A model of the causal Hopper forward's persistent schedule (flash_forward_sm90_ws.cuh).

    forward_schedule.py [--seq N] [--heads H] [--segments W,...] [--dilations R,...]
                        [--sms S] [--consumers C]

For each LongNet pattern (one launch each, LongNet mode: every head one offset) it counts
each work item's cost in warpgroup key-tile products (64 query rows x 128 keys; a consumer
warpgroup stops at its own last row, as consumer_key_tiles in dilation.hpp), orders the
items as cost_ordered_item does within the groups of forward_cost_group, and gives the
busiest CTA's load under the static rounds (alternating directions) and under the item
counter (list scheduling in that order), against the average load. Used in
docs/benchmarks.md (2026-12-06, twenty-second session) to choose the L2 group rule and the
counter; costs ignore memory and the item's set-up, so compare the variants, not seconds.
"""
import argparse
import heapq
import math

BLOCK_N = 128


def item_cost(q_begin, length, consumers):
    """Warpgroup key-tile products of the item whose rows start at q_begin."""
    cost = 0
    for g in range(consumers):
        first = q_begin + 64 * g
        if first >= length:
            cost += 1  # a warpgroup past the sequence takes one tile's turn
            continue
        cost += math.ceil(min(length, first + 64) / BLOCK_N)
    return cost


def cost_group(sequence_bytes, sequences):
    """forward_cost_group (dilation.hpp)."""
    if sequence_bytes <= 0 or sequences <= 1 or sequences <= (32 << 20) // sequence_bytes:
        return 0
    most = max(1, (16 << 20) // sequence_bytes)
    groups = -(-sequences // most)
    group = -(-sequences // groups)
    return group if group < sequences else 0


def cost_ordered(local, sequences, tiles, group):
    """cost_ordered_item (dilation.hpp): (sequence, tile)."""
    if group <= 0 or group > sequences:
        group = sequences
    first = local // (group * tiles) * group
    size = min(sequences - first, group)
    within = local - first * tiles
    return first + within % size, tiles - 1 - within // size


def launch_items(seq, heads, window, rate, consumers, head_dim=64):
    rows = 64 * consumers
    length = math.ceil(min(window, seq) / rate)
    sequences = (seq // window) * heads
    tiles = math.ceil(length / rows)
    group = cost_group(2 * length * head_dim * 2, sequences)
    return [item_cost(cost_ordered(i, sequences, tiles, group)[1] * rows, length, consumers)
            for i in range(sequences * tiles)], group


def static_rounds(costs, sms):
    load = [0] * sms
    for start in range(0, len(costs), sms):
        reversed_round = (start // sms) % 2 == 1
        for cta in range(sms):
            item = start + (sms - 1 - cta if reversed_round else cta)
            if item < len(costs):
                load[cta] += costs[item]
    return max(load)


def counter(costs, sms):
    finish = [0] * min(sms, len(costs))
    heapq.heapify(finish)
    for cost in costs:
        heapq.heappush(finish, heapq.heappop(finish) + cost)
    return max(finish)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--segments", default="2048,4096,8192,16384,32768")
    parser.add_argument("--dilations", default="1,2,4,6,12")
    parser.add_argument("--sms", type=int, default=132)
    parser.add_argument("--consumers", type=int, default=3, choices=(2, 3))
    a = parser.parse_args()
    totals = [0, 0, 0.0]
    print(f"{'w':>7} {'r':>3} {'group':>5} {'items':>6} {'static':>7} {'counter':>8} {'average':>8}")
    for w, r in zip(map(int, a.segments.split(",")), map(int, a.dilations.split(","))):
        costs, group = launch_items(a.seq, a.heads, w, r, a.consumers)
        s, c, avg = static_rounds(costs, a.sms), counter(costs, a.sms), sum(costs) / a.sms
        totals = [totals[0] + s, totals[1] + c, totals[2] + avg]
        print(f"{w:>7} {r:>3} {group:>5} {len(costs):>6} {s:>7} {c:>8} {avg:>8.1f}")
    print(f"{'all':>7} {'':>3} {'':>5} {'':>6} {totals[0]:>7} {totals[1]:>8} {totals[2]:>8.1f}")


if __name__ == "__main__":
    main()
