"""Model names: validation and normalisation, the way Ollama parses them.

``llama3`` and ``llama3:latest`` are one model and one queue; names compare case-insensitively.
"""

from __future__ import annotations

import re

from .errors import InvalidRequest

MAX_MODEL_NAME = 200
_PART = r"[a-z0-9][a-z0-9._-]{0,79}"
_TAG = r"[a-z0-9_][a-z0-9._-]{0,127}"
_NAME_RE = re.compile(rf"^(?:{_PART}/){{0,2}}{_PART}(?::{_TAG})?$")
JOB_ID_RE = re.compile(r"^[a-f0-9]{32}$")
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")


def normalise_model(name: str) -> str:
    """Return the canonical name (lower case, explicit tag) or raise ``InvalidRequest``."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("model is required")
    if len(name) > MAX_MODEL_NAME:
        raise InvalidRequest(f"model name longer than {MAX_MODEL_NAME} characters")
    canonical = name.lower()
    last = canonical.rsplit("/", 1)[-1]
    if ":" not in last:
        canonical += ":latest"
    if not _NAME_RE.fullmatch(canonical):
        raise InvalidRequest(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '-', '/' and one ':tag'"
        )
    return canonical


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_RE.fullmatch(value))
