"""Episodic-memory operation costs at 100k, 1M and 5M entries per action (4-dim keys).

    python benchmarks/memory_ops.py [--sizes 100000 1000000 5000000] [--actions 6]

For each size the memory is filled to that many entries per action by writing 1,000-step
episodes (the build cost of filling is not timed), then:

* lookup: one ``lookup`` of a batch of 32 keys with random actions, half of them stored
  (hits) and half new (misses); median over 2,000 batches;
* episode write: ``add_episode`` of a fresh 1,000-step episode (new keys, returns computed
  backwards), timed over 200 consecutive episodes so the merges it triggers (the amortized
  rebuilds) are included: total time / 200;
* bytes per entry: the memory's arrays and trees / stored entries.

Targets: lookup <= 0.2 ms per batch at 5M per action; write <= 10 ms; <= 64 bytes/entry.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emdqn.memory import EpisodicMemory


def fill(memory: EpisodicMemory, per_action: int, rng: np.random.Generator) -> np.ndarray:
    """Write entries in chunks (as merged levels) until each action holds ``per_action``."""
    chunk = 200_000
    stored = []
    actions_total = per_action * memory.num_actions
    written = 0
    while written < actions_total:
        n = min(chunk, actions_total - written)
        keys = rng.normal(0, 1000, (n, memory.key_dim)).astype(np.float32)
        actions = np.arange(written, written + n) % memory.num_actions
        memory.write(keys, actions, rng.normal(size=n))
        stored.append(keys[:64])
        written += n
    return np.concatenate(stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--actions", type=int, default=6, help="actions (tables); Pong has 6")
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    print(f"{'entries/action':>15} {'actions':>7} {'levels':>6} {'lookup ms/32':>12} {'write ms/episode':>16} "
          f"{'bytes/entry':>11}")
    for size in args.sizes:
        rng = np.random.default_rng(0)
        memory = EpisodicMemory(args.actions, (1,), key_dim=4, capacity=size)
        stored = fill(memory, size, rng)
        fresh = rng.normal(0, 1000, (100_000, 4)).astype(np.float32)
        timings = []
        for i in range(2000):
            keys = np.concatenate([stored[rng.integers(0, len(stored), 16)], fresh[rng.integers(0, len(fresh), 16)]])
            actions = rng.integers(0, args.actions, 32)
            start = time.perf_counter()
            memory.lookup(keys, actions)
            timings.append(time.perf_counter() - start)
        lookup_ms = 1e3 * float(np.median(timings))
        start = time.perf_counter()
        for _ in range(args.episodes):
            keys = rng.normal(0, 1000, (1000, 4)).astype(np.float32)
            memory.add_episode(keys, rng.integers(0, args.actions, 1000), rng.normal(size=1000), 0.99)
        write_ms = 1e3 * (time.perf_counter() - start) / args.episodes
        bytes_per_entry = memory.nbytes() / len(memory)
        print(f"{size:>15,} {args.actions:>7} {len(memory.levels):>6} {lookup_ms:>12.3f} {write_ms:>16.2f} "
              f"{bytes_per_entry:>11.1f}", flush=True)
    print("targets: lookup <= 0.2 ms per batch of 32 at 5M/action; write <= 10 ms per 1,000-step episode; "
          "<= 64 bytes per entry")


if __name__ == "__main__":
    main()
