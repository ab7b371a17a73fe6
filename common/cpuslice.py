"""A short CPU time slice for the processes on the path to a first token (Linux 6.12 and later).

Each hop of a first token through Corral is a process waking up: on a machine whose cores other processes keep
busy, a woken process waits for the running one to use up its slice (1.4 ms by default on a 2-core machine), and
a first token crosses six such wake-ups more than a direct call. Since Linux 6.12 the EEVDF scheduler lets any
process ask for a shorter slice for itself (``sched_setattr`` with ``sched_runtime`` under ``SCHED_OTHER``, no
privilege needed): a woken task with a shorter slice has an earlier deadline and preempts the running one at once.
It changes no priority or share of the CPU: a process that runs long is only preempted sooner.

``request_cpu_slice`` does nothing (and says so) on other systems, older kernels, or a process run under
another policy (``chrt``, ``SCHED_BATCH``, ``SCHED_IDLE``): those are the operator's choice.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

# sched_setattr's number per architecture (it is not in Python's os module)
SYSCALLS = {"x86_64": 314, "aarch64": 274, "arm64": 274}
# struct sched_attr (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice, priority, runtime, deadline, period
ATTR = struct.Struct("IIQiIQQQ")


def request_cpu_slice(microseconds: int, tid: int = 0) -> bool:
    """Ask the kernel for a ``microseconds`` slice for thread ``tid`` (0: the calling thread; threads it starts
    later inherit it): True when it took it. 0 asks for nothing."""
    number = SYSCALLS.get(platform.machine())
    if microseconds <= 0 or number is None or not sys.platform.startswith("linux"):
        return False
    if os.sched_getscheduler(tid) != os.SCHED_OTHER:
        return False
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    attr = ctypes.create_string_buffer(
        ATTR.pack(ATTR.size, os.SCHED_OTHER, 0, nice, 0, microseconds * 1000, 0, 0)
    )
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.syscall(number, tid, attr, 0) == 0)


__all__ = ["request_cpu_slice"]
