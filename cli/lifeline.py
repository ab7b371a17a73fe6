"""A child of ``corral up`` never outlives it: the kernel signals the child when ``up`` dies (Linux's
``PR_SET_PDEATHSIG``), or elsewhere a thread of the child notices that its parent changed.

``corral up`` passes ``PID:SIGNAL`` in ``_CORRAL_PARENT`` (no ``CORRAL_`` prefix: it is not a setting); the child
calls ``tie_to_parent`` first thing. A parent that died before that call is caught by comparing ``getppid()``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

PARENT_ENV = "_CORRAL_PARENT"
PR_SET_PDEATHSIG = 1


def tie_to_parent() -> bool:
    """Arrange for the signal named in ``_CORRAL_PARENT`` when that parent dies; True when there is one."""
    pid, _, sig_number = os.environ.pop(PARENT_ENV, "").partition(":")
    if not (pid.isdigit() and sig_number.isdigit()):
        return False
    parent, sig = int(pid), int(sig_number)
    if not (sys.platform.startswith("linux") and _pdeathsig(sig)):
        threading.Thread(target=_watch, args=(parent, sig), name="corral-lifeline", daemon=True).start()
    if os.getppid() != parent:  # it died before the tie was made
        os.kill(os.getpid(), sig)
    return True


def _pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), sig)
