#!/usr/bin/env python3
"""Greedy-dispatch model of causal dilated backward launches (a planning aid, not a
measurement): one CTA per SM, CTAs dispatched in index order to the first free SM, a
CTA's cost = its query steps (64-row tiles it walks) + a fixed overhead. Compares the
numberings the backward kernels use (backward_order.cuh):

  atomic         sequence order, the last ~4 waves of sequences numbered tile-major
  deterministic  sequence order, each sequence's key tiles last to first (what the
                 diagonal-down dQ order needs)
  pairs          key tiles t and T - 1 - t in one CTA (not implemented; equal work a CTA)

Usage: dispatch_model.py [--sms 132] [--overhead 2] SEQUENCES:TILES ...
Default: the five launches of one issue-5 training layer (causal LongNet mode, 12 heads,
N = 32768, w = 2048..32768, r = 1, 2, 4, 6, 12).
"""
import argparse
import heapq
import math


def makespan(costs, sms, overhead):
    free = [0.0] * sms
    end = 0.0
    for cost in costs:
        start = heapq.heappop(free)
        finish = start + cost + overhead
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


def atomic_order(sequences, tiles, sms):
    # A key tile t CTA walks 2 (T - t) query steps of 64 rows (tiles of 128 keys).
    tail = min(sequences, math.ceil(4 * sms / tiles))
    order = [2 * (tiles - t) for _ in range(sequences - tail) for t in range(tiles)]
    order += [2 * (tiles - t) for t in range(tiles) for _ in range(tail)]
    return order


def deterministic_order(sequences, tiles):
    return [2 * (tiles - t) for _ in range(sequences) for t in reversed(range(tiles))]


def paired_order(sequences, tiles):
    pairs = [2 * (tiles - t) + 2 * (t + 1) for t in range(tiles // 2)]
    if tiles % 2:
        pairs.append(2 * (tiles - tiles // 2))
    return pairs * sequences


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sms", type=int, default=132)
    parser.add_argument("--overhead", type=float, default=2.0, help="steps a CTA costs beyond its walk")
    parser.add_argument("launches", nargs="*", default=["192:16", "96:16", "48:16", "24:22", "12:22"],
                        help="SEQUENCES:TILES per launch (tiles of 128 keys a sequence)")
    args = parser.parse_args()
    totals = {"work/SM": 0.0, "atomic": 0.0, "deterministic": 0.0, "pairs": 0.0}
    print(f"{'launch':>10} {'work/SM':>8} {'atomic':>8} {'determ.':>8} {'pairs':>8}")
    for launch in args.launches:
        sequences, tiles = (int(x) for x in launch.split(":"))
        row = {
            "work/SM": sequences * tiles * (tiles + 1) / args.sms,
            "atomic": makespan(atomic_order(sequences, tiles, args.sms), args.sms, args.overhead),
            "deterministic": makespan(deterministic_order(sequences, tiles), args.sms, args.overhead),
            "pairs": makespan(paired_order(sequences, tiles), args.sms, args.overhead),
        }
        for key in totals:
            totals[key] += row[key]
        print(f"{launch:>10} " + " ".join(f"{row[k]:8.0f}" for k in totals))
    print(f"{'total':>10} " + " ".join(f"{totals[k]:8.0f}" for k in totals))


if __name__ == "__main__":
    main()
