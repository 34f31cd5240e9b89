"""Result records: what a published figure was measured with, written beside the figure.

The benchmarks and the experiment drivers in ``benchmarks/`` write them; the reports read them.

A record is a small JSON file under ``benchmarks/results/``: the command, the git commit,
the date, the machine (CPU model and cores), the library versions, and the values.
The documents quote figures from records; ``tests/test_records.py`` checks that they agree.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]  # the clone the package runs from
LIBRARIES = ("torch", "pytorch-lightning", "hydra-core", "gymnasium", "ale-py", "minatar", "scipy", "numpy")


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, with ``+dirty`` when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def config_hash(config: Any) -> str:
    """A short hash of a (plain) config: equal hashes, equal settings."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def metadata_block(command: str | None = None, repo: Path = REPO_ROOT) -> dict[str, Any]:
    return {
        "command": command if command is not None else " ".join(["python", *sys.argv]),
        "commit": git_commit(repo),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "versions": library_versions(),
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: a record is either the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    os.replace(temporary, path)


def commit_files(paths: list[Path], message: str) -> None:
    """Commit only ``paths`` (other staged work stays staged); retry while git is busy."""
    paths = [Path(path).resolve() for path in paths]  # git -C below would read relative paths from there
    repo = paths[0].parent
    for attempt in range(10):
        added = subprocess.run(["git", "-C", str(repo), "add", "--", *map(str, paths)], capture_output=True, text=True)
        done = added.returncode == 0 and subprocess.run(
            ["git", "-C", str(repo), "commit", "-q", "-m", message, "--", *map(str, paths)],
            capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(2 + attempt)
    print(f"warning: could not commit {', '.join(map(str, paths))}; the files are written", flush=True)
