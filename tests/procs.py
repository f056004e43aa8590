"""Whether a process the tests started is still running, race-free against its reaping.

A process can be reaped between any two looks at ``/proc``, and a zombie still answers ``kill(pid, 0)``, so
every look treats a vanished ``/proc`` entry as gone and reads the state once.
"""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs: not reaped, not a zombie."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # reaped, possibly between our checks
        return False


def wait_gone(pid: int, timeout: float = 15) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to stop; True if it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
