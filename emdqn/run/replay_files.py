"""The replay buffer on disk: chunk files, rewritten only where the buffer changed.

Each replay array (per env: frames, actions, rewards, flags, memory keys) is cut into
chunks of ``chunk_slots`` slots, one ``.npy`` file each in ``<run>/checkpoints/replay/``,
named by array, chunk and the env step that wrote it. A checkpoint writes the chunks that
hold a slot written since the previous checkpoint and names the previous checkpoint's
files for the others, so its cost follows what changed (250k new Atari frames: ~1.8 GB)
rather than the buffer's size (up to 7 GB). New files are written before the checkpoint
that names them and files no checkpoint names are removed after it, so a kill while saving
leaves the previous checkpoint loadable.

    plan = ReplayFilesPlan(directory, tag, replay_state, previous_index)
    plan.bytes_to_write          # for a progress line
    index = plan.write(write_atomically)
    arrays = saved_arrays(directory, index, read_checked)   # read chunk by chunk
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

REPLAY_DIR = "replay"
CHUNK_SLOTS = 1 << 15  # 32,768 slots: 231 MB of 84x84 frames per chunk


def changed_chunks(filled: int, cursor: int, slots_written: int, previous_written: int | None, capacity: int,
                   chunk_slots: int) -> set[int]:
    """Chunks of one env's buffer that differ from the previous checkpoint's files.

    Frames are written one slot after another, wrapping at ``capacity``: the
    ``slots_written - previous_written`` frames since the previous checkpoint end just
    before ``cursor``, and the slot before them may have received its action and reward.
    """
    count = max(1, -(-filled // chunk_slots))
    new_frames = slots_written - previous_written if previous_written is not None else -1
    if new_frames < 0 or new_frames + 1 >= capacity:
        return set(range(count))
    slots = np.arange(cursor - new_frames - 1, cursor) % capacity
    return {int(chunk) for chunk in np.unique(slots // chunk_slots)}


class ReplayFilesPlan:
    """Which chunk files a checkpoint of ``replay_state`` (``MultiEnvReplay.state_dict()``)
    writes and which it keeps from the checkpoint ``previous`` (its index, or None)."""

    def __init__(self, directory: Path, tag: int, replay_state: dict[str, Any], previous: dict[str, Any] | None,
                 chunk_slots: int | None = None):
        self.folder = directory / REPLAY_DIR
        self.chunk_slots = chunk_slots = chunk_slots or CHUNK_SLOTS
        self.slots_written = [int(stream["slots_written"]) for stream in replay_state["streams"]]
        self.capacities = [int(stream["capacity"]) for stream in replay_state["streams"]]
        # The previous files are only reused for the same layout (a resume may change the buffer).
        usable = (previous is not None and "digests" in previous and previous.get("chunk_slots") == chunk_slots
                  and previous.get("capacities") == self.capacities
                  and all((self.folder / name).exists() for names in previous["files"].values() for name in names))
        self.previous_digests: dict[str, Any] = previous.get("digests", {}) if usable else {}
        self.files: dict[str, list[str]] = {}
        self.to_write: list[tuple[str, np.ndarray]] = []
        for index, stream in enumerate(replay_state["streams"]):
            changed = changed_chunks(int(stream["filled"]), int(stream["cursor"]), self.slots_written[index],
                                     previous["slots_written"][index] if usable else None, self.capacities[index],
                                     chunk_slots)
            prefix = f"env{index}_"
            for name, array in replay_state["arrays"].items():
                if not name.startswith(prefix):
                    continue
                kept = previous["files"].get(name, []) if usable else []
                names = []
                for chunk in range(max(1, -(-len(array) // chunk_slots))):
                    if chunk not in changed and chunk < len(kept):
                        names.append(kept[chunk])
                        continue
                    names.append(f"{name}.c{chunk:04d}.s{tag}.npy")
                    self.to_write.append((names[-1], array[chunk * chunk_slots:(chunk + 1) * chunk_slots]))
                self.files[name] = names

    @property
    def bytes_to_write(self) -> int:
        return sum(part.nbytes for _, part in self.to_write)

    def write(self, write_atomically: Callable[[Path, Callable], Any]) -> dict[str, Any]:
        """Write the changed chunks; returns the index naming every chunk's file and, under
        ``digests``, what ``write_atomically`` returned for it (kept files keep theirs)."""
        self.folder.mkdir(exist_ok=True)
        digests = {name: self.previous_digests[name] for names in self.files.values() for name in names
                   if name in self.previous_digests}
        for file_name, part in self.to_write:
            digests[file_name] = write_atomically(self.folder / file_name, lambda file, part=part: np.save(file, part))
        return {"chunk_slots": self.chunk_slots, "files": self.files, "slots_written": self.slots_written,
                "capacities": self.capacities, "digests": digests}


class SavedArray:
    """One replay array of a checkpoint, read from its chunk files one chunk at a time.

    A resume copies it chunk by chunk into the buffer it already holds (``chunks()``), so it
    never holds a second copy of the buffer (a full Pong buffer is 7 GB). Each chunk is
    checked by ``read_checked(path, digest)`` as it is read; its shape comes from the
    ``.npy`` headers.
    """

    def __init__(self, paths: list[Path], digests: list[Any], read_checked: Callable[[Path, Any], np.ndarray]):
        self.paths, self.digests, self.read_checked = paths, digests, read_checked
        lengths, rows = [], ()
        for path, digest in zip(paths, digests):
            try:
                with path.open("rb") as file:
                    version = np.lib.format.read_magic(file)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, self.dtype = read_header(file)
            except (OSError, ValueError):
                read_checked(path, digest)  # names the file that is missing or not what was written
                raise
            lengths.append(shape[0])
            rows = shape[1:]
        self.shape = (sum(lengths), *rows)

    def __len__(self) -> int:
        return self.shape[0]

    def chunks(self) -> Iterator[np.ndarray]:
        for path, digest in zip(self.paths, self.digests):
            yield self.read_checked(path, digest)

    def read(self) -> np.ndarray:
        """The whole array at once (for inspection; a resume copies the chunks instead)."""
        return np.concatenate(list(self.chunks()))


def saved_arrays(directory: Path, index: dict[str, Any],
                 read_checked: Callable[[Path, Any], np.ndarray]) -> dict[str, SavedArray]:
    """The replay arrays that ``index`` names, to be read chunk by chunk from their files by
    ``read_checked(path, digest)``, which refuses a file that is not what was written."""
    folder = directory / REPLAY_DIR
    return {name: SavedArray([folder / file_name for file_name in names],
                             [index["digests"][file_name] for file_name in names], read_checked)
            for name, names in index["files"].items()}


def replay_bytes(directory: Path, index: dict[str, Any]) -> int:
    return sum(index["digests"][name][0] for names in index["files"].values() for name in names)


def remove_unnamed(directory: Path, index: dict[str, Any] | None) -> None:
    """Delete the chunk files the current checkpoint does not name (once it is in place)."""
    folder = directory / REPLAY_DIR
    if not folder.is_dir():
        return
    named = {name for names in index["files"].values() for name in names} if index else set()
    for path in folder.iterdir():
        if path.name not in named:
            path.unlink(missing_ok=True)
