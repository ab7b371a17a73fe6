"""How every ``corral`` command ends: one line on stderr and a documented exit code, never a traceback.

Exit codes (docs/operations.md#exit-codes):

0    ok
1    a job failed or was cancelled (for a batch: any job); ``corral up``: a part exited by itself; an unexpected
     error (``CORRAL_LOG_LEVEL=DEBUG`` prints its traceback)
2    bad usage, settings or file; a 4xx from the API (bad input, unknown job or model); a port in use; Redis
     refusing a command (an ACL user without the right)
3    the API, Redis or a backend cannot be reached
4-7  ``corral worker --check``: unreachable, auth refused, no models, generation failed
130  interrupted (Ctrl-C); ``corral up``: stopped by a second signal without draining
141  the output pipe closed (``corral watch ID | head``): quietly, as a tool killed by SIGPIPE
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from redis.exceptions import RedisError

from corral.common.connections import TRANSIENT
from corral.common.errors import BackendUnavailable, CorralError
from corral.common.settings import redacted_url

OK, JOB_FAILED, BAD_REQUEST, UNAVAILABLE = 0, 1, 2, 3
INTERRUPTED, PIPE_CLOSED = 130, 141


def say(command: str, message: str) -> None:
    """One line on stderr, the command named: ``corral keys: Redis at … does not answer (…)``."""
    line = " ".join(str(message).split())  # one line, whatever the message held
    print(f"corral {command}: {line}", file=sys.stderr, flush=True)


def api_unreachable(url: str, exc: Exception) -> str:
    return f"the API is unavailable at {redacted_url(url)} ({exc or type(exc).__name__})"


def run(command: str, action: Callable[[], int], api_url: str, redis_url: str, debug: bool = False) -> int:
    """``action()``'s exit code, or the code of what it raised (said in one line)."""
    try:
        return action()
    except BrokenPipeError:
        return pipe_closed()
    except KeyboardInterrupt:
        return INTERRUPTED
    except TRANSIENT as exc:
        say(command, f"Redis at {redacted_url(redis_url)} does not answer ({exc})")
        return UNAVAILABLE
    except RedisError as exc:  # answered, and refused: an ACL user without the right, say
        say(command, f"Redis at {redacted_url(redis_url)} refused: {exc}")
        return BAD_REQUEST
    except CorralError as exc:
        say(command, exc.message)
        default = UNAVAILABLE if isinstance(exc, BackendUnavailable) else BAD_REQUEST
        return int(getattr(exc, "exit_code", default))
    except OSError as exc:
        say(command, str(exc))
        return BAD_REQUEST
    except Exception as exc:
        if unreached(exc):  # a client command that could not reach the API
            say(command, api_unreachable(api_url, exc))
            return UNAVAILABLE
        if debug:
            traceback.print_exc()
        say(command, f"unexpected error: {type(exc).__name__}: {exc} (CORRAL_LOG_LEVEL=DEBUG shows where)")
        return JOB_FAILED


def unreached(exc: Exception) -> bool:
    """Whether ``exc`` is httpx's failure to reach a server. httpx is not imported for this: a command that never
    imported it (``corral api``, ``worker``, ``simulate``) cannot have raised its errors, and starts faster."""
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(exc, httpx.TransportError)


def pipe_closed() -> int:
    """The reader of stdout went away: point stdout at /dev/null so the exit's flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a test's buffer): nothing will flush to it
        return PIPE_CLOSED
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return PIPE_CLOSED
