"""The child processes of ``corral up`` and how they stop.

Each child leads its own process group (a Ctrl-C in the terminal reaches ``up`` only, which then stops the parts in
order) and is tied to ``up`` (``lifeline``): if ``up`` is killed, its children die with it. A first SIGINT, SIGTERM
or SIGHUP drains: the worker finishes its running jobs under a visible countdown, then the others stop. A second
one forces: every group is killed at once (Redis gets SIGTERM, which flushes its AOF in milliseconds) and the
worker's running jobs go back to their queue as after a worker crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .lifeline import PARENT_ENV

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signals:
    """Counts the stop signals ``up`` receives. The handlers only count: a signal never interrupts a stop half-way
    (a second Ctrl-C raising ``KeyboardInterrupt`` inside ``stop`` is what left children running)."""

    def __init__(self) -> None:
        self.count = 0
        self.previous = {sig: signal.signal(sig, self._received) for sig in STOP_SIGNALS}

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _received(self, signum: int, _frame: object) -> None:
        self.count += 1

    def wait(self, seconds: float, above: int) -> bool:
        """Sleep up to ``seconds``; True as soon as more than ``above`` signals have arrived."""
        deadline = time.monotonic() + seconds
        while self.count <= above:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))
        return True


class Child:
    def __init__(self, name: str, process: subprocess.Popen[bytes], kill_signal: int) -> None:
        self.name, self.process, self.kill_signal = name, process, kill_signal

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        """``sig`` to the child's whole process group (what it may have forked too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


class Children:
    """The parts ``corral up`` started, stopped in reverse order."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.children: list[Child] = []
        self.out = out

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], kill_signal: int = signal.SIGKILL
    ) -> None:
        """Start ``corral ARGV``; ``kill_signal`` is what it gets when ``up`` dies or forces a stop (Redis:
        SIGTERM, which flushes its AOF)."""
        env = {**env, PARENT_ENV: f"{os.getpid()}:{int(kill_signal)}"}
        process = subprocess.Popen([sys.executable, "-m", "corral", *argv], env=env, start_new_session=True)
        self.children.append(Child(name, process, kill_signal))

    def find(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def exited(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def say(self, line: str, end: str = "\n") -> None:
        self.out.write(line + end)
        self.out.flush()

    def drain_worker(self, signals: Signals, seconds: float, busy: Callable[[], int | None]) -> bool:
        """SIGTERM the worker and show a countdown while it finishes its jobs; False when a second signal (or
        the deadline) cut it short."""
        # (the API's own worker, corral api --worker, when there is no other)
        worker = self.find("worker") or self.find("fleet") or self.find("api")
        if worker is None or not worker.alive():
            return True
        worker.signal(signal.SIGTERM)
        before, jobs = signals.count, busy()
        if jobs == 0:
            self.say("corral up: stopping (no job running)")
        else:
            what = f"{jobs} running job(s)" if jobs is not None else "its running jobs"
            self.say(f"corral up: stopping; the worker finishes {what} (at most {seconds:.0f} s). "
                     "Press Ctrl-C again to stop now: running jobs go back to their queue.")  # fmt: skip
        tty, deadline, shown = self.out.isatty(), time.monotonic() + seconds, -1
        while worker.alive():
            left = deadline - time.monotonic()
            if left <= 0 or signals.wait(min(1.0, left), above=before):
                if tty and shown >= 0:
                    self.say("")
                return False
            step = int(left)
            if jobs == 0:  # nothing to count down: the worker is only closing its connections
                continue
            if tty:
                self.say(f"\rcorral up: draining, {step} s left at most (Ctrl-C again forces)  ", end="")
                shown = step
            elif shown < 0 or shown - step >= 5:
                self.say(f"corral up: draining, {step} s left at most (Ctrl-C again forces)")
                shown = step
        if tty and shown >= 0:
            self.say("")
        return True

    def stop(self, signals: Signals, drain_seconds: float, busy: Callable[[], int | None]) -> bool:
        """Stop every child: drain the worker unless a second signal came, then the rest in reverse order.
        True when the stop was clean (nothing forced)."""
        clean = signals.count < 2 and self.drain_worker(signals, drain_seconds, busy)
        if not clean:
            self.force()
            return False
        deadline, before = time.monotonic() + 10.0, signals.count
        for child in reversed(self.children):  # the API before Redis: it sees no Redis vanish under it
            if child.alive():
                child.signal(signal.SIGTERM)
            while child.alive():
                if signals.wait(0.05, above=before) or time.monotonic() > deadline:
                    self.force()
                    return False
        return True

    def force(self) -> None:
        """Kill every group now (Redis: SIGTERM, then SIGKILL if it is not gone in 5 s)."""
        self.say("corral up: stopping now; running jobs go back to their queue")
        for child in self.children:
            if child.alive():
                child.signal(child.kill_signal)
        deadline = time.monotonic() + 5.0
        for child in self.children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGKILL)
                child.process.wait()
