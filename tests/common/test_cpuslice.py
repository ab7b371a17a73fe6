"""The short CPU slice the processes on a first token's path ask for (common/cpuslice.py)."""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from typing import Any

import pytest

from corral.common.cpuslice import request_cpu_slice

pytestmark = pytest.mark.unit


def kernel_slices() -> bool:
    """Linux 6.12 or later on an architecture whose syscall number the module knows."""
    major, minor = (int(p) for p in platform.release().split(".")[:2])
    return platform.machine() in ("x86_64", "aarch64") and (major, minor) >= (6, 12)


def in_thread(action: Callable[[], Any]) -> Any:
    """``action``'s result, run in a thread of its own (a slice or policy set there leaves the test's alone)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(action()))
    thread.start()
    thread.join(10)
    return out[0]


def slice_ns() -> int:
    with open("/proc/thread-self/sched") as sched:
        return int(next(line for line in sched if line.startswith("se.slice")).split()[-1])


def test_a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice() -> None:
    def ask() -> tuple[bool, int, int]:
        return request_cpu_slice(250), slice_ns(), os.getpriority(os.PRIO_PROCESS, 0)

    nice = os.getpriority(os.PRIO_PROCESS, 0)
    took, ns, nice_after = in_thread(ask)
    assert took is kernel_slices()
    if took:
        assert ns == 250_000
    assert nice_after == nice


def test_zero_asks_for_nothing() -> None:
    assert in_thread(lambda: (request_cpu_slice(0), slice_ns())) == (False, in_thread(slice_ns))


def test_another_policy_is_left_alone() -> None:
    def batch_then_ask() -> tuple[bool, int]:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        return request_cpu_slice(250), os.sched_getscheduler(0)

    assert in_thread(batch_then_ask) == (False, os.SCHED_BATCH)
