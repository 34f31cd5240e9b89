"""Resumable checkpoints in ``<run>/checkpoints/``, committed by one atomic rename.

A checkpoint is a set of files and the manifest that names them:

* ``state_<env step>.ckpt`` (torch.save): the networks, the optimizer, every counter, the
  RNG states, the environments (pickled, with the emulator state including its RNG; ale-py's
  vector env cannot be saved, so with it a resumed run starts new games), the episodes in
  progress and the episodic memory;
* ``weights_<env step>.pt``: the online network's weights alone (tensors only, loadable with
  ``torch.load(weights_only=True)``): evaluation reads only this file;
* ``replay/``: the replay buffer in chunk files (up to 7 GB for a 1M Atari buffer), each
  rewritten only when the buffer changed in it (:mod:`emdqn.run.replay_files`);
* ``manifest.json``: the env step, the run's config, and the size and SHA-256 of every
  file above, each hashed as it was written.

Every file is written under a temporary name, synced and renamed; the manifest is written
last, and its rename is the moment the new checkpoint replaces the previous one. Files the
new manifest does not name are removed only after it. A kill at any point of a save leaves
one complete checkpoint: the previous one, or the new one.

Every file a resume or an evaluation reads is checked against the manifest first (size,
then hash): a corrupted file is refused with one line naming it. ``state_*.ckpt`` holds
pickled objects, so loading it runs code: it is only unpickled when its hash matches. The
hash protects against corruption (a flipped byte, a truncated copy), not against a tampered
folder: whoever can write the manifest can write the checkpoint too, so a checkpoint from
someone else is trusted like code, and the weights-only file is the safe way to share.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from emdqn.run.replay_files import ReplayFilesPlan, SavedArray, remove_unnamed, replay_bytes, saved_arrays

log = logging.getLogger("emdqn")

CHECKPOINT_DIR = "checkpoints"
MANIFEST_FILE = "manifest.json"
STATE_PATTERN = "state_*.ckpt"
WEIGHTS_PATTERN = "weights_*.pt"
BEST_WEIGHTS_FILE = "weights_best.pt"  # eval.keep_best: kept beside the newest weights
FORMAT_VERSION = 6  # 6: each part's own state (learner, collector with its memory feed); 5: the manifest
EARLIER_LAYOUT = ("last.ckpt", "last.json")  # formats 3-4: resumed by the emdqn version that wrote them


@contextmanager
def reporting(what: str, size: int, threshold: int = 100_000_000) -> Iterator[None]:
    """A line before and after work on a large file (a full Atari replay is ~7 GB: half a minute or more)."""
    if size < threshold:
        yield
        return
    start = time.perf_counter()
    log.info("%s (%.1f GB)...", what, size / 1e9)
    yield
    log.info("%s: done in %.0f s", what, time.perf_counter() - start)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """The manifest of a run's checkpoint: it exists once a checkpoint is complete."""
    return Path(run_dir) / CHECKPOINT_DIR / MANIFEST_FILE


@dataclass(frozen=True)
class FileDigest:
    """What a file held when it was written: its size and SHA-256."""

    size: int
    sha256: str

    def as_json(self) -> list:
        return [self.size, self.sha256]


class _HashingWriter:
    """A file object that hashes what passes through it (no second read of a large file)."""

    def __init__(self, file: Any):
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        return self.file.write(view)

    def flush(self) -> None:
        self.file.flush()


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> FileDigest:
    """Write ``path`` through a temporary file (synced, then renamed); returns its digest."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as file:
            hashing = _HashingWriter(file)
            write(hashing)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path} ({error.strerror or error}); the previous checkpoint "
                              "is kept") from None
    return FileDigest(hashing.size, hashing.digest.hexdigest())


def _atomic_torch_save(obj: Any, path: Path) -> FileDigest:
    return _atomic_write(path, lambda file: torch.save(obj, file))


def verified_bytes(path: Path, expected: Any) -> bytes:
    """The bytes of ``path`` if they are what the manifest recorded (``[size, sha256]``)."""
    size, sha256 = expected
    try:
        actual_size = path.stat().st_size
        if actual_size != size:
            raise CheckpointError(f"{path} is not the file emdqn wrote ({actual_size:,} bytes, the manifest "
                                  f"records {size:,}): a truncated or replaced file; refusing to read it")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint's manifest names it") from None
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path} is not the file emdqn wrote (its SHA-256 differs from the manifest's): a "
                              "corrupted or replaced file; refusing to read it")
    return data


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a run's checkpoint, or None when it has none (CheckpointError when unreadable)."""
    path = checkpoint_path(run_dir)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is unreadable ({type(error).__name__}): the checkpoint cannot be "
                              "trusted") from None
    if not isinstance(manifest, dict) or manifest.get("written_by") != "emdqn" or "state" not in manifest:
        raise CheckpointError(f"{path} is not a manifest emdqn wrote: the checkpoint cannot be trusted")
    return manifest


def latest_weights(run_dir: str | os.PathLike) -> tuple[Path, int, list] | None:
    """The weights-only file the run's checkpoint names, its env step and its digest; or None."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    name, digest = manifest["weights"]
    return Path(run_dir) / CHECKPOINT_DIR / name, int(manifest["env_steps"]), digest


def load_weights_file(path: Path, digest: Any) -> dict[str, torch.Tensor]:
    """Tensors from a weights-only file the manifest names, checked, never unpickling objects."""
    data = verified_bytes(path, digest)
    try:
        weights = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses any object that is not tensors and containers
        raise CheckpointError(f"{path} is not a weights-only file ({type(error).__name__}); refusing to load it") \
            from None
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise CheckpointError(f"{path} does not hold a network's weights (a dict of tensors)")
    return weights


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with a counter when the current checkpoint already names it (a
    second save at the same env step must not overwrite a file the manifest relies on)."""
    stem, suffix = name.rsplit(".", 1)
    candidate, count = name, 1
    while candidate in taken:
        candidate, count = f"{stem}.{count}.{suffix}", count + 1
    return candidate


def save_checkpoint(run_dir: str | os.PathLike, learner: Any, collector: Any, save_replay: bool = True,
                    config: dict[str, Any] | None = None) -> Path:
    """Write a resumable checkpoint of the run (the state the learner and the collector give,
    and ``config``, the run's resolved config); returns its manifest's path."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"could not create {directory} ({error.strerror or error})") from None
    previous = read_manifest_quietly(run_dir)
    taken = set(named_files(previous)) if previous else set()
    step = collector.env_steps
    replay_index = replay_meta = None
    if save_replay:
        replay_state = collector.replay_state()
        plan = ReplayFilesPlan(directory, step, replay_state, previous.get("replay") if previous else None)
        with reporting("Saving the replay buffer's changed part", plan.bytes_to_write):
            replay_index = plan.write(lambda path, write: _atomic_write(path, write).as_json())
        replay_meta = {key: value for key, value in replay_state.items() if key != "arrays"}
    state = {
        "format": FORMAT_VERSION,
        "env_steps": step,
        "learner": learner.state_dict(),
        "collector": collector.state_dict(),
        "replay_meta": replay_meta,
        "torch_rng": torch.get_rng_state(),
    }
    weights_name = _free_name(f"weights_{step}.pt", taken)
    weights = _atomic_torch_save(learner.online_weights(), directory / weights_name)
    state_name = _free_name(f"state_{step}.ckpt", taken)
    state_digest = _atomic_torch_save(state, directory / state_name)
    manifest = {"written_by": "emdqn", "format": FORMAT_VERSION, "env_steps": step,
                "state": [state_name, state_digest.as_json()], "weights": [weights_name, weights.as_json()],
                "replay": replay_index, "config": config}
    path = directory / MANIFEST_FILE
    _atomic_write(path, lambda file: file.write(json.dumps(manifest, indent=1).encode()))  # the commit point
    remove_unnamed(directory, replay_index)
    for old in [*directory.glob(STATE_PATTERN), *directory.glob(WEIGHTS_PATTERN), *directory.glob("*.tmp")]:
        if old.name not in (state_name, weights_name, BEST_WEIGHTS_FILE):
            old.unlink(missing_ok=True)
    return path


def save_best_weights(run_dir: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> Path:
    """The best network of the periodic evaluations (``eval.keep_best``), tensors only."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST_WEIGHTS_FILE
    _atomic_torch_save(tensors, path)
    return path


def read_manifest_quietly(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The current manifest for a save to build on; an unreadable one is replaced, not reused."""
    try:
        return read_manifest(run_dir)
    except CheckpointError:
        return None


def named_files(manifest: dict[str, Any]) -> list[str]:
    return [manifest["state"][0], manifest["weights"][0]]


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state of a run's checkpoint, its files checked against the manifest first;
    CheckpointError names the file on any problem. The replay is read by :func:`saved_replay`."""
    path = checkpoint_path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        directory = path.parent
        if all((directory / name).exists() for name in EARLIER_LAYOUT):
            raise CheckpointError(f"the checkpoint in {directory} was written by an earlier emdqn (last.ckpt, format "
                                  "4 or older): resume it with the version that wrote it")
        raise CheckpointError(f"no checkpoint at {path}: this run folder cannot be resumed")
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {manifest.get('format')}; this emdqn reads format "
                              f"{FORMAT_VERSION}")
    name, digest = manifest["state"]
    state_path = path.parent / name
    # Unpickling runs code: only the bytes emdqn wrote (their hash in the manifest) are opened.
    data = verified_bytes(state_path, digest)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"checkpoint {state_path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "learner" not in state:
        raise CheckpointError(f"checkpoint {state_path} does not hold an emdqn state of format {FORMAT_VERSION}")
    state.update(path=state_path, manifest=manifest, replay_index=manifest.get("replay"))
    return state


def restore(state: dict[str, Any], learner: Any, collector: Any) -> None:
    """Load a checkpoint into a freshly built learner and collector."""
    path = state["path"]
    try:
        learner.load_state_dict(state["learner"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {error}") from None
    arrays = saved_replay_chunks(state)
    if arrays is not None:
        size = replay_bytes(path.parent, state["replay_index"])
        try:
            with reporting("Loading the replay buffer", size):
                collector.load_replay_state({"arrays": arrays, **state["replay_meta"]})
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"the replay of checkpoint {path} does not fit this run: {error}") from None
    # After the replay: games that cannot be restored close their episodes in it.
    try:
        collector.load_state_dict(state["collector"], replay_restored=arrays is not None)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    torch.set_rng_state(state["torch_rng"])


def saved_replay_chunks(state: dict[str, Any]) -> dict[str, SavedArray] | None:
    """The replay arrays a loaded checkpoint names, each read chunk by chunk and each chunk
    checked against the manifest as it is read (None when it was saved without them)."""
    index = state.get("replay_index")
    if index is None:
        return None
    return saved_arrays(state["path"].parent, index,
                        lambda path, digest: np.load(io.BytesIO(verified_bytes(path, digest))))


def saved_replay(state: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The replay arrays a loaded checkpoint names, read whole (to inspect a checkpoint)."""
    chunks = saved_replay_chunks(state)
    return None if chunks is None else {name: saved.read() for name, saved in chunks.items()}
