"""What the scripts in ``benchmarks/`` share: quiet logs, worker processes that end with their parent."""

from __future__ import annotations

import logging


def quiet_logs() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "emdqn"):
        logging.getLogger(name).setLevel(logging.WARNING)



def end_with_parent() -> None:
    """A worker process's initializer: the worker gets SIGTERM when its parent dies (killed by
    ``timeout`` or a signal), instead of going on alone (Linux; elsewhere a no-op)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
