"""Scheduling delays that follow the fleet: how long a job waits for a warm host (the cold delay) and how long a
model nobody serves waits before a full host switches to it (the switch delay), derived per model from what this
host measured.

Waiting for a warm host is worth it while the wait is shorter than what not waiting costs (the ski-rental rule:
wait up to the price of the alternative, then pay it). Not waiting costs a load, and on a host whose models are
busy, a load also waits for the model it evicts to finish its requests (Ollama's head-of-line blocking), about one
job's time; and a warm host frees a slot after about one job's time. So the unit is the longer of the model's load
time and its job time on this host, both measured by the worker from the engine's answers (``load_duration`` of a
job that found the model cold; ``total_duration`` minus ``load_duration`` of every job). With the delays unset,
the cold delay is ``CORRAL_COLD_DELAY_FACTOR`` units and the switch delay ``CORRAL_SWITCH_DELAY_FACTOR`` units. A
model not measured yet takes the median of this host's other models; a host that has measured nothing the fixed
fallbacks (2 s and 10 s). ``CORRAL_COLD_DELAY`` and ``CORRAL_SWITCH_DELAY``, when set, are fixed seconds for every
model. See docs/scheduling.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from .settings import Settings

COLD_FALLBACK = 2.0  # seconds, before this host has measured anything
SWITCH_FALLBACK = 10.0
LOAD_SMOOTHING = 0.5  # weight of a new measurement against the running estimate (loads are few)
JOB_SMOOTHING = 0.1  # (jobs are many, and vary)
LOAD_FLOOR = 0.005  # seconds: a shorter load_duration is a model that was loaded after all, not a load


def _median_or_own(values: dict[str, float], model: str) -> float | None:
    if model in values:
        return values[model]
    return statistics.median(values.values()) if values else None


def _average(values: dict[str, float], model: str, seconds: float, weight: float) -> None:
    old = values.get(model)
    values[model] = seconds if old is None else old + weight * (seconds - old)


@dataclass
class LoadTimes:
    """Seconds this host takes to load each model and to run one of its jobs: moving averages."""

    seconds: dict[str, float] = field(default_factory=dict)  # loads
    jobs: dict[str, float] = field(default_factory=dict)

    def observe(self, model: str, seconds: float) -> None:
        """One load of ``model``."""
        if seconds >= LOAD_FLOOR:  # (false for NaN)
            _average(self.seconds, model, seconds, LOAD_SMOOTHING)

    def observe_job(self, model: str, seconds: float) -> None:
        """One job of ``model``: the engine's time on it, its load left out."""
        if seconds > 0:
            _average(self.jobs, model, seconds, JOB_SMOOTHING)

    def estimate(self, model: str) -> float | None:
        """The longer of the model's load time and job time here (each, when not measured for this model, the
        median of this host's other models); None: nothing measured."""
        known = [
            x
            for x in (_median_or_own(self.seconds, model), _median_or_own(self.jobs, model))
            if x is not None
        ]
        return max(known) if known else None

    def report(self) -> dict[str, float]:
        """For the heartbeat: model -> load seconds, rounded."""
        return {m: round(s, 3) for m, s in sorted(self.seconds.items())}


@dataclass(frozen=True)
class Delays:
    """The pop's delays: ``cold``/``switch`` fixed seconds when set, else ``*_factor`` times the model's unit
    (``LoadTimes.estimate``)."""

    cold: float | None = None
    switch: float | None = None
    cold_factor: float = 1.0
    switch_factor: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Delays:
        return cls(
            settings.cold_delay,
            settings.switch_delay,
            settings.cold_delay_factor,
            settings.switch_delay_factor,
        )

    def for_model(self, model: str, times: LoadTimes) -> tuple[float, float]:
        """(cold delay, switch delay) in seconds for a job of ``model`` on this host."""
        unit = times.estimate(model)
        cold = self.cold if self.cold is not None else (
            COLD_FALLBACK if unit is None else self.cold_factor * unit)  # fmt: skip
        switch = self.switch if self.switch is not None else (
            SWITCH_FALLBACK if unit is None else self.switch_factor * unit)  # fmt: skip
        return cold, switch

    def arguments(self, models: Sequence[str], times: LoadTimes) -> tuple[str, str]:
        """POP's ``cold_delay`` and ``switch_delay`` arguments: one number per queue, space-separated."""
        pairs = [self.for_model(m, times) for m in models]
        return " ".join(f"{c:.3f}" for c, _ in pairs), " ".join(f"{s:.3f}" for _, s in pairs)
