"""Error replies as redis-py raises them: the lean client (``common.fastredis``) answers with the same exception
classes, so that a caller handles both clients alike."""

from __future__ import annotations

from typing import Any

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ExecAbortError,
    MaxClientsReachedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

# An error reply's code and the redis-py exception class redis-py raises for it, so that a caller handles both
# clients alike: NOSCRIPT makes a script load itself, LOADING is transient, NOPERM / WRONGPASS are refusals.
ERROR_CLASSES: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,
    "NOPERM": NoPermissionError,
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "EXECABORT": ExecAbortError,
}
# ERR replies that redis-py raises as a class of their own (the rest of ERR: ResponseError)
ERR_CLASSES: dict[str, type[RedisError]] = {
    "invalid password": AuthenticationError,
    "max number of clients reached": MaxClientsReachedError,
    "Client sent AUTH, but no password is set": AuthenticationError,
    "AUTH <password> called without any password configured for the default user. Are you sure your "
    "configuration is correct?": AuthenticationError,
}


def error_of(message: str) -> RedisError:
    """The exception redis-py raises for an error reply (``message`` as Redis sent it, code first): a known
    code (ERR included) is left out of the message, as redis-py does."""
    code, _, rest = message.partition(" ")
    if code == "ERR":
        return ERR_CLASSES.get(rest, ResponseError)(rest)
    if code in ERROR_CLASSES:
        return ERROR_CLASSES[code](rest)
    return ResponseError(message)


def raise_for(reply: Any) -> Any:
    if isinstance(reply, ResponseError):
        raise error_of(str(reply))
    return reply


__all__ = ["ERROR_CLASSES", "ERR_CLASSES", "error_of", "raise_for"]
