"""Untrusted input beyond what the schema's types say: Ollama's option names and types, base64 images. Pure
functions, used by the schema's validators (the size limits that are settings are the API's: ``api/inputs.py``)."""

from __future__ import annotations

import binascii
import math
from typing import Any

INT, FLOAT, BOOL, STRINGS = "int", "float", "bool", "strings"
# The option names Ollama reads (its api.Options and runner options, older ones it still accepts included).
OLLAMA_OPTIONS: dict[str, str] = {
    "num_keep": INT, "seed": INT, "num_predict": INT, "top_k": INT, "top_p": FLOAT, "min_p": FLOAT,
    "typical_p": FLOAT, "repeat_last_n": INT, "temperature": FLOAT, "repeat_penalty": FLOAT,
    "presence_penalty": FLOAT, "frequency_penalty": FLOAT, "penalize_newline": BOOL, "stop": STRINGS,
    "mirostat": INT, "mirostat_tau": FLOAT, "mirostat_eta": FLOAT, "tfs_z": FLOAT,
    "num_ctx": INT, "num_batch": INT, "num_gpu": INT, "main_gpu": INT, "num_thread": INT, "use_mmap": BOOL,
    "use_mlock": BOOL, "low_vram": BOOL, "f16_kv": BOOL, "logits_all": BOOL, "vocab_only": BOOL, "numa": BOOL,
}  # fmt: skip
MAX_INT = 2**31 - 1
MAX_STOP_WORDS = 64


def _option(name: str, value: Any) -> Any:
    kind = OLLAMA_OPTIONS.get(name)
    if kind is None:
        raise ValueError(f"unknown option {name[:64]!r} (Ollama's options: num_ctx, temperature, top_p, …)")
    ok = True
    if kind == INT:
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT
    elif kind == FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and abs(value) <= MAX_INT
    elif kind == BOOL:
        ok = isinstance(value, bool)
    else:
        value = [value] if isinstance(value, str) else value
        ok = (
            isinstance(value, list)
            and len(value) <= MAX_STOP_WORDS
            and all(isinstance(s, str) for s in value)
        )
    if not ok:
        wanted = {INT: "an integer", FLOAT: "a number", BOOL: "true or false", STRINGS: "a list of strings"}
        raise ValueError(f"option {name!r} must be {wanted[kind]}")
    return value


def check_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Only Ollama's option names, each with a value of its type (``stop`` may be one string)."""
    if options is None:
        return None
    return {name: _option(name, value) for name, value in options.items()}


def check_image(image: str) -> str:
    """An image is base64 data (what Ollama takes); a URL or anything else is refused."""
    try:
        binascii.a2b_base64(image.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError("images must be base64-encoded data") from None
    return image
