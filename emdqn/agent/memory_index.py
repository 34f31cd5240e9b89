"""The episodic memory's index: immutable cKDTree levels, and exact-key searches over them.

How it differs from the original code's index, and why:

* **No stale window.** The original rebuilt its k-d trees every 40k steps, so entries
  written in between were invisible (and duplicated). Here every write is indexed at once:
  the index is a short list of immutable cKDTree *levels* (a log-structured merge with
  leveling). Level t holds at most ``base_level_size * merge_ratio**(t+1)`` entries; a
  write is merged into level 0, and a level that overflows is carried into the next one,
  all in one rebuild. Each entry is rebuilt about ``merge_ratio / 2`` times per level, so
  the rebuild cost stays amortized and there are only log(n) levels to query.
* **One query per level per batch.** A level indexes all actions together: each point is
  ``(key, action * memory.ACTION_SEPARATION)``, so a neighbour of another action is at least
  1e12 away and is never accepted. Capacity and LRU stay per action, as in the original's
  one table per action.
* **Trees never alias written arrays.** A level's points are never written after its tree
  is built; values and LRU clocks (0 = evicted) live in separate arrays.
* **Duplicate checks by hash.** A write finds stored (key, action) pairs by a binary search
  over each level's sorted 32-bit hashes of the exact key bytes, not a tree query per key.
  Keys of uint8 observations are bit-exact (above), so this is the exact-match rule; keys
  that differ by less than ``tolerance`` without being identical are stored separately
  and a lookup returns the nearest.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree


_HASH_SEED = np.uint64(0x9E3779B97F4A7C15)
_HASH_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)
_HASH_SHIFT = np.uint64(31)


def hash_points(points: np.ndarray) -> np.ndarray:
    """A 32-bit hash of each row's exact float64 bytes (for duplicate checks on write)."""
    words = np.ascontiguousarray(points, dtype=np.float64).view(np.uint64)
    h = np.full(len(words), _HASH_SEED, dtype=np.uint64)
    # Integer arrays wrap modulo 2**64 without a warning, as this hash needs: no errstate
    # context, whose cost is most of a small batch's hash.
    for column in range(words.shape[1]):
        h ^= words[:, column]
        h *= _HASH_MULTIPLIER
        h ^= h >> _HASH_SHIFT
    return (h >> np.uint64(32)).astype(np.uint32)


def unique_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(points, axis=0, return_inverse=True)`` for a 2-D array, at a fraction of its
    cost (``np.unique`` sorts a structured view of the rows): the distinct rows in
    lexicographic order, and for each row the index of its distinct row. Rows equal as
    numbers are one row (as in ``np.unique``); where they differ only in the sign of a zero,
    the row kept may be another one of them than ``np.unique`` keeps."""
    order = np.lexsort(points.T[::-1])  # the first column is the primary key
    ordered = points[order]
    starts = np.empty(len(points), dtype=bool)
    starts[:1] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    inverse = np.empty(len(points), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse


class TreeLevel:
    """An immutable cKDTree over points, with mutable values, LRU clocks and visit counts.

    Entries are stored in the order of their hash, so ``hashes`` is sorted and a duplicate
    check is a binary search. A clock of 0 marks an evicted entry (clocks start at 1).
    ``visits`` counts the episode steps whose return was max-updated into the entry.
    """

    __slots__ = ("points", "tree", "values", "last_used", "visits", "hashes", "num_alive")

    def __init__(self, points: np.ndarray, values: np.ndarray, last_used: np.ndarray, visits: np.ndarray,
                 leafsize: int):
        hashes = hash_points(points)
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.points = np.ascontiguousarray(np.asarray(points, dtype=np.float64)[order])
        # copy_data=False is safe: self.points is never written after this line.
        self.tree = cKDTree(self.points, leafsize=leafsize, compact_nodes=False, balanced_tree=False,
                            copy_data=False)
        self.values = np.asarray(values, dtype=np.float32)[order]
        self.last_used = np.asarray(last_used, dtype=np.uint32)[order]
        self.visits = np.asarray(visits, dtype=np.uint32)[order]
        self.num_alive = int(np.count_nonzero(self.last_used))

    @property
    def alive(self) -> np.ndarray:
        return self.last_used != 0

    def __len__(self) -> int:
        return len(self.points)

    def nbytes(self) -> int:
        node_bytes = self.tree.size * 72  # ckdtreenode: 9 eight-byte fields
        return (self.points.nbytes + self.tree.indices.nbytes + node_bytes + self.values.nbytes
                + self.last_used.nbytes + self.visits.nbytes + self.hashes.nbytes)


Levels = Sequence[tuple[int, TreeLevel]]  # (level index, level) of the live levels, smallest first


def find_within(levels: Levels, points: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """(level index, entry index) of a live entry closer than ``bound`` to each point; -1 where none."""
    level_of = np.full(len(points), -1, dtype=np.int64)
    entry_of = np.full(len(points), -1, dtype=np.int64)
    for level_index, level in levels:
        # Big batches (episode writes) use every core; a training batch stays on one.
        workers = -1 if len(points) >= 256 else 1
        distance, entry = level.tree.query(points, k=1, distance_upper_bound=bound, workers=workers)
        hit = np.isfinite(distance)
        hit[hit] = level.last_used[entry[hit]] != 0
        level_of[hit] = level_index
        entry_of[hit] = entry[hit]
    return level_of, entry_of


def find_equal(levels: Levels, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`find_within` for bit-identical points, by binary search on hashes.

    Writes check every level for duplicates; a hash search costs a fraction of a tree
    query, which keeps episode writes cheap on tables of millions of entries.
    """
    level_of = np.full(len(points), -1, dtype=np.int64)
    entry_of = np.full(len(points), -1, dtype=np.int64)
    if not levels or not len(points):
        return level_of, entry_of
    hashes = hash_points(points)
    pending = np.arange(len(points))
    # Largest level first: it holds most entries, so most hits end the search early.
    for level_index, level in reversed(levels):
        rows, position = pending, np.searchsorted(level.hashes, hashes[pending])
        while rows.size:  # walk runs of equal hashes (collisions are rare)
            inside = position < len(level)
            rows, position = rows[inside], position[inside]
            same_hash = level.hashes[position] == hashes[rows]
            rows, position = rows[same_hash], position[same_hash]
            equal = (level.points[position] == points[rows]).all(axis=1) & (level.last_used[position] != 0)
            level_of[rows[equal]] = level_index
            entry_of[rows[equal]] = position[equal]
            rows, position = rows[~equal], position[~equal] + 1
        pending = np.flatnonzero(level_of < 0)  # a (key, action) is stored once at most
        if not pending.size:
            break
    return level_of, entry_of
