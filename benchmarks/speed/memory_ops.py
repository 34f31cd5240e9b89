"""Episodic-memory operation costs at 100k, 1M and 5M entries per action (4-dim keys).

    python benchmarks/speed/memory_ops.py [--sizes 100000 1000000 5000000] [--actions 6]

For each size, an empty memory (Pong's 6 actions by default) is filled to that many entries
per action the way training fills it: ``add_episode`` of 1,000-step episodes of fresh keys
with random actions (returns computed backwards). Reported:

* episode write: total fill time / episodes, so every merge the growth triggers (the
  amortized rebuilds) is included;
* lookup: one ``lookup`` of a batch of 32 (key, action) pairs on the full memory, median
  over 2,000 batches: "hits" are stored pairs (a training batch: replay states whose
  episode has ended are all in the memory), "misses" are unseen keys (the worst case: the
  hash search finds nothing and the trees' tolerance search runs on every level);
* bytes per entry: the memory's arrays and trees / stored entries.

Targets: lookup <= 0.2 ms per batch at 5M per action; write <= 10 ms; <= 64 bytes/entry.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emdqn.agent.memory import EpisodicMemory


def fill(memory: EpisodicMemory, per_action: int,
         rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray], float, int]:
    """Write 1,000-step episodes until each action holds ``per_action`` entries on average."""
    sample_keys, sample_actions, seconds, episodes = [], [], 0.0, 0
    while len(memory) < per_action * memory.num_actions:
        keys = rng.normal(0, 1000, (1000, memory.key_dim)).astype(np.float32)
        actions = rng.integers(0, memory.num_actions, 1000)
        rewards = rng.normal(size=1000)
        start = time.perf_counter()
        memory.add_episode(keys, actions, rewards, 0.99)
        seconds += time.perf_counter() - start
        episodes += 1
        if episodes % 50 == 0:
            sample_keys.append(keys[:16])
            sample_actions.append(actions[:16])
    return (np.concatenate(sample_keys), np.concatenate(sample_actions)), seconds, episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--actions", type=int, default=6, help="actions (tables); Pong has 6")
    args = parser.parse_args()
    print(f"{'entries/action':>15} {'actions':>7} {'levels':>6} {'lookup ms/32':>12} {'(all misses)':>14} "
          f"{'write ms/episode':>16} "
          f"{'bytes/entry':>11}")
    for size in args.sizes:
        rng = np.random.default_rng(0)
        # Capacity above the fill level: this measures growth, not eviction.
        memory = EpisodicMemory(args.actions, (1,), key_dim=4, capacity=2 * size)
        stored, write_seconds, episodes = fill(memory, size, rng)
        fresh = rng.normal(0, 1000, (100_000, 4)).astype(np.float32)
        hit_keys, hit_actions = stored
        lookup_ms = {}
        for name in ("hits", "misses"):
            timings = []
            for _ in range(2000):
                if name == "hits":
                    rows = rng.integers(0, len(hit_keys), 32)
                    keys, actions = hit_keys[rows], hit_actions[rows]
                else:
                    keys, actions = fresh[rng.integers(0, len(fresh), 32)], rng.integers(0, args.actions, 32)
                start = time.perf_counter()
                memory.lookup(keys, actions)
                timings.append(time.perf_counter() - start)
            lookup_ms[name] = 1e3 * float(np.median(timings))
        write_ms = 1e3 * write_seconds / episodes
        bytes_per_entry = memory.nbytes() / len(memory)
        levels = sum(level is not None for level in memory.levels)
        print(f"{size:>15,} {args.actions:>7} {levels:>6} {lookup_ms['hits']:>12.3f} {lookup_ms['misses']:>14.3f} "
              f"{write_ms:>16.2f} "
              f"{bytes_per_entry:>11.1f}   ({episodes:,} episodes, {memory.rebuild_seconds:.0f}s of "
              f"{write_seconds:.0f}s in tree builds)", flush=True)
    print("targets: lookup <= 0.2 ms per batch of 32 at 5M/action; write <= 10 ms per 1,000-step episode; "
          "<= 64 bytes per entry")


if __name__ == "__main__":
    main()
