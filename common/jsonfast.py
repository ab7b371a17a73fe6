"""JSON on the job path: orjson where it takes the value, the standard library where it does not.

A submit and its first token go through about a dozen JSON encodes and decodes (the request body, the job's call,
its hash and events, the worker's request to Ollama, each chunk and its event, the reader's line); the standard
library spends 5-10 us on each of these small objects, orjson under 1.5 us.

The output is compact JSON (no spaces, as ``separators=(",", ":")``) with non-ASCII characters written as UTF-8
rather than ``\\u`` escapes, and a non-finite float written as ``null`` (the standard library writes ``NaN``, which
is not JSON). orjson refuses a few values the standard library takes, and those fall back to it, so nothing that
worked before is refused now: lone surrogates (``"\\ud800"`` parses to a str orjson cannot encode), integers over
64 bits, non-string dict keys, and, when reading, ``NaN`` / ``Infinity`` (callers that refuse those pass
``parse_constant``, which the fallback applies). orjson reads an integer past 64 bits as a float, so ``loads_exact``
(for JSON a caller wrote) reads text with a run of 19 or more digits with the standard library, which keeps it
exact; ``loads`` is for JSON Corral or Ollama wrote, which has no such integer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """JSON written by Corral or by Ollama (no integer past 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # lone surrogate escapes, NaN: the standard library reads them
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


def loads_exact(data: bytes | str, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """JSON a caller wrote (a request body, the job data made from it): an integer of any size stays exact."""
    if isinstance(data, str):
        long_number = _LONG_DIGITS_TEXT.search(data) is not None
    else:
        long_number = _LONG_DIGITS.search(data) is not None
    if not long_number:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=parse_constant)


def dumpb(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8 encoded."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":")).encode()


def dumps(value: Any) -> str:
    """``value`` as compact JSON."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"))
