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
exact; ``loads`` is for JSON Corral or Ollama wrote, which has no such integer. ``loads_request`` reads a request
body: ``loads_exact`` that refuses (``ValueError``) what Corral cannot pass on: ``NaN`` / ``Infinity``, lone
surrogates (not Unicode text: Ollama cannot be sent them as UTF-8) and nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")
_SURROGATE = re.compile("[\ud800-\udfff]")
# deeper than this a request is refused: the job's own JSON (the request wrapped in a few levels) must stay within
# what the standard library writes without a RecursionError (about 1,000 levels less the stack in use)
MAX_DEPTH = 512


class RefusedJSON(ValueError):
    """JSON that parses but that Corral does not take (``loads_request``); the message says why."""


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
    try:
        return json.loads(data, parse_constant=parse_constant)
    except RecursionError:  # orjson refuses more than 1,024 levels; the standard library runs out of stack
        raise RefusedJSON(f"nested deeper than {MAX_DEPTH} levels") from None


def _refuse_constant(name: str) -> Any:
    raise RefusedJSON(f"{name} is not JSON")


def loads_request(data: bytes | str) -> Any:
    """A request body: ``loads_exact`` without ``NaN`` / ``Infinity``, lone surrogates, or more than
    ``MAX_DEPTH`` levels (``RefusedJSON``, a ``ValueError``, says which)."""
    long_number = (_LONG_DIGITS_TEXT if isinstance(data, str) else _LONG_DIGITS).search(data)  # type: ignore[arg-type]
    if long_number is None:
        try:
            value = orjson.loads(data)  # it refuses lone surrogates, NaN and more than 1,024 levels
        except orjson.JSONDecodeError:
            pass
        else:
            brackets = (
                data.count("[") + data.count("{")
                if isinstance(data, str)
                else data.count(b"[") + data.count(b"{")
            )
            if brackets > MAX_DEPTH:  # else it cannot be that deep: no walk on the hot path
                _check(value, strings=False)
            return value
    value = loads_exact(data, parse_constant=_refuse_constant)
    _check(value, strings=True)
    return value


def _check(value: Any, strings: bool) -> None:
    """``RefusedJSON`` when ``value`` nests deeper than ``MAX_DEPTH`` or (``strings``) holds a lone surrogate."""
    kinds = (dict, list, str) if strings else (dict, list)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise RefusedJSON(
                    "a string holds a lone surrogate (such as \\ud800), which is not Unicode text"
                )
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise RefusedJSON(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item if strings)
                item = item.values()
            stack.extend((c, depth + 1) for c in item if isinstance(c, kinds))


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
