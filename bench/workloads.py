"""The scheduling benchmark's two workloads: one fleet shape each, one request list each, the same for every
dispatcher.

``affinity`` is the case Corral is built for: loads much longer than answers, a skewed model mix, bursts. ``spread``
is the case where its advantage should be small: loads short next to long generations and a uniform mix, so where a
model is loaded matters less than keeping every host busy. Every simulated delay is multiplied by ``TIME_SCALE`` so a
run takes seconds; the hosts, like Ollama, take requests one at a time and a request that needs a load waits for a
busy model to go idle (head-of-line blocking, documented in docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

TIME_SCALE = 0.05
SPEEDS = (1.0, 0.7, 1.4)  # three hosts: tokens/s multiplied, delays divided


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the start
    model: str
    prompt: str


@dataclass(frozen=True)
class Workload:
    name: str
    about: str  # one line for the report
    models: list[str]
    sim_options: dict[str, Any]  # `corral simulate` options, the same for every host
    load_times: list[float]  # simulated seconds to load each model
    weights: list[float]  # popularity of each model
    bursts: int = 10
    gap: float = 3.0  # real seconds between bursts at TIME_SCALE (60 simulated seconds)
    spread: float = 0.5  # real seconds a burst is spread over at TIME_SCALE
    tags: dict[str, str] = field(default_factory=dict)

    def specs(self) -> dict[str, dict[str, float]]:
        return {m: {"load_time": t} for m, t in zip(self.models, self.load_times, strict=True)}

    def requests(self, n: int, seed: int = 7) -> list[Request]:
        """``n`` requests in ``bursts`` bursts ``gap`` s apart, each spread over ``spread`` s."""
        rng = random.Random(seed)
        out = []
        for i in range(n):
            burst = i * self.bursts // n
            model = rng.choices(self.models, self.weights)[0]
            out.append(
                Request(burst * self.gap + rng.uniform(0, self.spread), model, f"job {i} about {model}")
            )
        return sorted(out, key=lambda r: r.at)

    def static_assignment(self) -> dict[str, int]:
        """The best fixed model -> host map a person would write: most popular first, each to the host with the
        least popularity per unit of speed that still has room (``max_loaded`` models per host)."""
        room = int(self.sim_options["max_loaded"])
        load = [0.0] * len(SPEEDS)
        held = [0] * len(SPEEDS)
        out: dict[str, int] = {}
        for model, weight in sorted(zip(self.models, self.weights, strict=True), key=lambda mw: -mw[1]):
            free = [h for h in range(len(SPEEDS)) if held[h] < room] or list(range(len(SPEEDS)))
            host = min(free, key=lambda h: (load[h] + weight) / SPEEDS[h])
            out[model] = host
            load[host] += weight
            held[host] += 1
        return out


def zipf(k: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(k)]


# every host: 16 GB, models of 8 GB (2 fit), 4 parallel slots per loaded model, nothing evicted by age
HOST = {"parallel": 4, "max_loaded": 2, "memory_gb": 16, "size_gb": 8, "max_queue": 100_000, "keep_alive": 3600,
        "time_scale": TIME_SCALE}  # fmt: skip

AFFINITY = Workload(
    name="affinity",
    about="Zipf(1.1) over 6 models of 8 GB, 2 fit per host, loads 10-20 s, 2 s to first token, 6-token answers "
    "at 2 tokens/s, 10 bursts 60 s apart",
    models=[f"bench-m{i}:latest" for i in range(6)],
    sim_options={**HOST, "ttft": 2.0, "tps": 2, "min_tokens": 6},
    load_times=[10 + 2 * i for i in range(6)],
    weights=zipf(6),
)

SPREAD = Workload(
    name="spread",
    about="uniform over 4 models of 8 GB, 2 fit per host, loads 1-2 s, 0.5 s to first token, 60-token answers "
    "at 4 tokens/s, 10 bursts 60 s apart",
    models=[f"bench-u{i}:latest" for i in range(4)],
    sim_options={**HOST, "ttft": 0.5, "tps": 4, "min_tokens": 60},
    load_times=[1.0 + i / 3 for i in range(4)],
    weights=[1.0] * 4,
)

WORKLOADS = {w.name: w for w in (AFFINITY, SPREAD)}


def at_time_scale(work: Workload, scale: float) -> Workload:
    """``work`` with every simulated delay multiplied by ``scale`` instead of ``TIME_SCALE``, and its bursts' gap and
    spread stretched alike: the same workload in simulated time, on a clock compressed less (or more). The
    dispatchers' own settings are not scaled: with ``scale`` 1 the run takes as long as it would on real hosts."""
    factor = scale / TIME_SCALE
    return dataclasses.replace(work, sim_options={**work.sim_options, "time_scale": scale},
                               gap=work.gap * factor, spread=work.spread * factor)  # fmt: skip
