"""Runs as SLURM jobs (Hydra's submitit launcher): signals, requeues and failures.

A job gets SIGUSR2 ``hydra.launcher.signal_delay_s`` before its time limit (submitit asks
SLURM for it) and SIGTERM when it is preempted or requeued (``scontrol requeue``). In both
cases the run finishes its env step and writes its checkpoint (:class:`StopSignals` in
``emdqn.run.train``), then:

* at SIGUSR2, submitit's own handler takes over: it requeues the job (``max_num_timeout``
  times at most) and ends the process;
* at SIGTERM, when SLURM is requeueing the job (:func:`requeued_by_slurm`): the process
  ends without a result, so the sweep waits for the job's next attempt; when the job was
  cancelled (``scancel``) or hit its time limit unwarned, the job ends with its result, and
  the run is continued later with ``resume=``.

The job's next attempt starts ``train.py`` again in the same run folder; there it continues
the run from its checkpoint (:func:`requeued_attempt`), for the same config only.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess


def in_slurm_job() -> bool:
    """This process is a job submitit started on SLURM."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def requeued_attempt() -> int:
    """How many times SLURM has requeued this job (0 for its first attempt, and outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


class JobEnded(SystemExit):
    """Ends a job's process without a result: SLURM runs the job again (requeue, preemption)."""


def requeued_by_slurm() -> bool:
    """At a SIGTERM: whether SLURM is requeueing this job (``scontrol requeue``, a preemption
    that requeues) rather than ending it (``scancel``, the time limit). A requeue has already
    counted the next attempt in the job's ``Restarts``."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]], capture_output=True,
                               text=True, timeout=20).stdout
    except (OSError, KeyError, subprocess.TimeoutExpired):
        return False  # cannot tell: end as a finished job, so the sweep does not wait for an attempt that never comes
    found = re.search(r"\bRestarts=(\d+)", shown)
    return found is not None and int(found.group(1)) > requeued_attempt()


class _SchedulerPolling(logging.Filter):
    """submitit polls ``sacct`` for job states; on a cluster without accounting every poll
    warns ``Bypassing sacct error``. A job's end still reaches the sweep (each job leaves a
    result), so the warning says nothing to the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


def quiet_scheduler_polling(argv: list[str]) -> None:
    """For a sweep on SLURM (``+sweeps=lambda_slurm``, ``hydra/launcher=submitit_slurm``):
    keep sacct's own complaint (``Slurm accounting storage is disabled``, on stderr at every
    poll) and submitit's warning about it off the console."""
    if not any("slurm" in argument for argument in argv[1:]):
        return
    logging.getLogger("submitit").addFilter(_SchedulerPolling())
    try:
        from submitit.slurm.slurm import SlurmInfoWatcher
    except ImportError:  # the launcher is not installed: Hydra says so
        return
    make_command = SlurmInfoWatcher._make_command

    def without_stderr(watcher: SlurmInfoWatcher) -> list[str] | None:
        command = make_command(watcher)
        return None if command is None else ["sh", "-c", '"$0" "$@" 2>/dev/null', *command]

    SlurmInfoWatcher._make_command = without_stderr


def failed_job_line(error: BaseException) -> str | None:
    """One line for a sweep job that failed on the cluster (submitit's error carries the job's
    whole traceback): the job's own last line and where its log is; None for other errors."""
    if type(error).__name__ not in ("FailedJobError", "UncompletedJobError"):
        return None
    text = str(error)
    trace = text.split("----------------------")
    lines = [line.strip() for line in (trace[1] if len(trace) > 2 else text).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    last = re.sub(r"^(\w+\.)*(ConfigError|CheckpointError|FileExistsError|RuntimeError): ", "", last)
    logs = re.findall(r"^\s*- (\S+\.err)$", text, flags=re.MULTILINE)
    return f"a SLURM job of the sweep failed: {last}" + (f" (its log: {logs[0]})" if logs else "")
