"""A real single-node SLURM cluster on this machine, for the cluster tests.

Debian's ``slurmctld``, ``slurmd`` and ``munge`` (``.ci/run`` installs them), started as
root with a configuration of their own in a temporary folder (``SLURM_CONF`` points every
client command at it): one node with this machine's CPUs, one partition ``cpu``, no
accounting database (job ends reach the sweep through each job's result file).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue")
PARTITION = "cpu"


def missing_parts() -> str | None:
    """Why no cluster can start here, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None
               and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmd slurmctld munge "
                "slurm-client, as .ci/run does")
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root; this user is not root"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _start_munge() -> None:
    if subprocess.run(["sh", "-c", "munge -n | unmunge"], capture_output=True).returncode == 0:
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "-c"], check=True, capture_output=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", _binary("munged")], check=True, capture_output=True)


def configuration(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    memory_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 1024
    return "\n".join([
        "ClusterName=emdqn-test", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "ReturnToService=2",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none", "MinJobAge=600", "KillWait=30", "JobRequeue=1",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


class Cluster:
    """Start with :meth:`start`; every command run with :attr:`env` talks to this cluster."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, timeout: float = 60) -> None:
        for name in ("state", "spool"):
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(configuration(self.folder))
        _start_munge()
        subprocess.run([_binary("slurmctld"), "-f", str(self.conf)], check=True, env=self.env)
        subprocess.run([_binary("slurmd"), "-f", str(self.conf)], check=True, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
            if state.stdout.strip() == "idle":
                return
            time.sleep(1)
        raise RuntimeError(f"the test cluster did not come up; see {self.folder}/slurmctld.log and slurmd.log")

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], capture_output=True, env=self.env)
        for name in ("slurmd", "slurmctld"):
            pid_file = self.folder / f"{name}.pid"
            deadline = time.time() + 20
            while pid_file.exists() and time.time() < deadline:
                try:
                    os.kill(int(pid_file.read_text().strip()), 0)
                except (OSError, ValueError):
                    break
                time.sleep(0.5)

    def release_requeued(self) -> None:
        """Start requeued jobs now: SLURM holds a requeued job for about two minutes (its begin
        time), which a test of a few minutes cannot wait for; an administrator can do the same."""
        listed = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], capture_output=True, text=True,
                                env=self.env)
        for line in listed.stdout.splitlines():
            job, reason = line.split(maxsplit=1)
            if reason.strip() == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True,
                               env=self.env)

    def jobs(self) -> dict[str, str]:
        """Job id -> state of the jobs in the queue."""
        listed = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=self.env)
        return dict(line.split() for line in listed.stdout.splitlines() if line.strip())
