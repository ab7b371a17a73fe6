"""Scheduling delays that follow the fleet: how long a job waits for a warm host (the cold delay) and how long a
model nobody serves waits before a full host switches to it (the switch delay), in multiples of the time this
host takes to load that model.

Waiting for a warm host is worth it while the wait is shorter than the load it saves (the ski-rental rule: wait
up to the price of the alternative, then pay it; never worse than twice the best choice in hindsight). So with
the delays unset, a worker derives them per model from the load times it measured itself (Ollama's
``load_duration`` of a job that found the model cold): ``CORRAL_COLD_DELAY_LOADS`` and
``CORRAL_SWITCH_DELAY_LOADS`` times the load. A model not measured yet takes the median of this host's other
models, and a host that has measured nothing the fixed fallbacks (2 s and 10 s). ``CORRAL_COLD_DELAY`` and
``CORRAL_SWITCH_DELAY``, when set, are fixed seconds for every model. See docs/scheduling.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from .settings import Settings

COLD_FALLBACK = 2.0  # seconds, before this host has measured any load
SWITCH_FALLBACK = 10.0
SMOOTHING = 0.5  # weight of a new measurement against the running estimate
LOAD_FLOOR = 0.005  # seconds: a shorter load_duration is a model that was loaded after all, not a load


@dataclass
class LoadTimes:
    """Seconds this host takes to load each model: a moving average of the measured loads."""

    seconds: dict[str, float] = field(default_factory=dict)

    def observe(self, model: str, seconds: float) -> None:
        if not seconds >= LOAD_FLOOR:  # (also NaN)
            return
        old = self.seconds.get(model)
        self.seconds[model] = seconds if old is None else old + SMOOTHING * (seconds - old)

    def estimate(self, model: str) -> float | None:
        """The model's load time here; else the median of this host's other models; None: nothing measured."""
        if model in self.seconds:
            return self.seconds[model]
        return statistics.median(self.seconds.values()) if self.seconds else None

    def report(self) -> dict[str, float]:
        """For the heartbeat: model -> seconds, rounded."""
        return {m: round(s, 3) for m, s in sorted(self.seconds.items())}


@dataclass(frozen=True)
class Delays:
    """The pop's delays: ``cold``/``switch`` fixed seconds when set, else ``*_loads`` times the model's load."""

    cold: float | None = None
    switch: float | None = None
    cold_loads: float = 1.0
    switch_loads: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Delays:
        return cls(
            settings.cold_delay, settings.switch_delay, settings.cold_delay_loads, settings.switch_delay_loads
        )

    @property
    def adaptive(self) -> bool:
        return self.cold is None or self.switch is None

    def for_model(self, model: str, times: LoadTimes) -> tuple[float, float]:
        """(cold delay, switch delay) in seconds for a job of ``model`` on this host."""
        load = times.estimate(model)
        cold = self.cold if self.cold is not None else (
            COLD_FALLBACK if load is None else self.cold_loads * load)  # fmt: skip
        switch = self.switch if self.switch is not None else (
            SWITCH_FALLBACK if load is None else self.switch_loads * load)  # fmt: skip
        return cold, switch

    def arguments(self, models: Sequence[str], times: LoadTimes) -> tuple[str, str]:
        """POP's ``cold_delay`` and ``switch_delay`` arguments: one number per queue, space-separated."""
        pairs = [self.for_model(m, times) for m in models]
        return " ".join(f"{c:.3f}" for c, _ in pairs), " ".join(f"{s:.3f}" for _, s in pairs)
