"""An Ollama simulator: Ollama's HTTP wire format with a performance model, for demos, tests and benchmarks.

``model`` is the performance model (memory, LRU eviction, parallel slots, load time, first-token delay, tokens/s,
host speed, time scale), ``generation`` one request's tokens and timings, ``app`` the Ollama front end and
``command`` the command line. Replies are deterministic (see ``reply_words``) so a test can check every token. This
package imports nothing of Corral: run it with ``corral simulate`` or ``python -m corral.simulator``.
"""

from __future__ import annotations

from .app import build_app
from .command import DEMO_MODELS, config_from_args, main, parse_args
from .generation import Generation
from .model import ModelSpec, SimConfig, Simulator, expected_text, normalise, reply_words

__all__ = [
    "DEMO_MODELS",
    "Generation",
    "ModelSpec",
    "SimConfig",
    "Simulator",
    "build_app",
    "config_from_args",
    "expected_text",
    "main",
    "normalise",
    "parse_args",
    "reply_words",
]
