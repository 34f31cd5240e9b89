"""The RAM a resume needs for its replay: the peak resident memory of restoring a Pong
checkpoint, beside the replay's size on disk, per checkout.

    python benchmarks/speed/resume_memory.py --slots 50000
    python benchmarks/speed/resume_memory.py --slots 50000 --before /path/to/other/clone --record benchmarks/results/resume_memory.json

One Pong run of ``--slots`` env steps (a buffer of as many slots, no memory, learning from
its last step, so it only fills the buffer) writes a checkpoint. Then, in a fresh process per
checkout (that checkout's ``emdqn`` first on the path), the run's parts are built as a resume
builds them and restored from the checkpoint. The figure is the peak resident memory during
the restore (VmHWM, reset just before it) minus the resident memory just before it: what the
restore adds, of which the filled buffer itself is about the replay's size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from startup import environment  # that checkout's emdqn first on the path

from emdqn.analysis.records import REPO_ROOT, git_commit, metadata_block, write_record

PROBE = """
import json, sys
from omegaconf import OmegaConf
from emdqn.agent.collector import Collector
from emdqn.agent.learner import Learner
from emdqn.run.checkpoint import load_checkpoint, restore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

run = sys.argv[1]
cfg = OmegaConf.load(f"{run}/config.yaml")
collector = Collector.from_config(cfg)
learner = Learner.from_config(cfg, collector.envs.observation_shape, collector.envs.num_actions)
state = load_checkpoint(run)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # resets VmHWM to the current resident size
restore(state, learner, collector)
print(json.dumps({"rss_before": before, "peak": status("VmHWM"), "rss_after": status("VmRSS")}))
"""


def replay_bytes(run: Path) -> int:
    return sum(path.stat().st_size for path in (run / "checkpoints" / "replay").iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=50_000, help="env steps played = buffer slots filled")
    parser.add_argument("--before", type=Path, help="another clone, measured on the same checkpoint")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    if args.slots < 1000:
        parser.error(f"--slots {args.slots}: at least 1000 (a smaller replay is lost in the process's own memory)")
    checkouts = {"before": args.before.resolve(), "after": REPO_ROOT} if args.before else {"this checkout": REPO_ROOT}
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "pong"
        print(f"filling a Pong buffer of {args.slots:,} slots...", flush=True)
        filled = subprocess.run([sys.executable, "train.py", "env=pong", "memory=none",
                                 f"agent.total_steps={args.slots}", f"agent.learning_starts={args.slots}",
                                 f"buffer.capacity={args.slots}", "eval.episodes=0", "logger=csv",
                                 "trainer.threads=1", f"hydra.run.dir={run}"],
                                cwd=REPO_ROOT, env=environment(REPO_ROOT), capture_output=True, text=True)
        if filled.returncode != 0:
            sys.exit(f"error: the Pong run that fills the buffer failed: {filled.stderr.strip().splitlines()[-1]}")
        size = replay_bytes(run)
        results: dict[str, list[dict]] = {side: [] for side in checkouts}
        for repeat in range(args.repeats):
            for side, checkout in checkouts.items():
                probe = subprocess.run([sys.executable, "-c", PROBE, str(run)], cwd=checkout,
                                       env=environment(checkout), check=True, capture_output=True, text=True)
                measured = json.loads(probe.stdout.strip().splitlines()[-1])
                measured["restore_adds"] = measured["peak"] - measured["rss_before"]
                results[side].append(measured)
                print(f"{side}: the restore of a {size / 1e6:,.0f} MB replay adds {measured['restore_adds'] / 1e6:,.0f} "
                      f"MB at its peak ({measured['restore_adds'] / size:.2f}× the replay)", flush=True)
    if args.record:
        write_record(args.record, {**metadata_block(" ".join(["python", *sys.argv])), "slots": args.slots,
                                   "replay_bytes": size, "results": results,
                                   "checkouts": {side: {"path": str(path), "commit": git_commit(path)}
                                                 for side, path in checkouts.items()}})
        print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
