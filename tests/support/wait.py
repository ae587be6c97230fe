"""Wait for a condition by polling it, never by sleeping a guessed time.

A busy machine makes everything slower, but a condition that becomes true
still becomes true: poll it until a generous deadline, and fail saying what
it waited for and what it last saw.
"""

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

# Far above what an idle machine needs: a loaded one may take many times longer.
TIMEOUT_S = 30.0
INTERVAL_S = 0.05


class Poll:
    """One wait's deadline and failure message, shared by `eventually` and `eventually_sync`."""

    def __init__(self, check: Callable, what: str | None, timeout: float):
        self.what = what or getattr(check, "__qualname__", repr(check))
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self, last: Any) -> AssertionError:
        return AssertionError(f"waited {self.timeout:g} s for {self.what}; last saw {last!r}")


async def eventually(
    check: Callable[[], Any],
    *,
    until: Callable[[Any], Any] = bool,
    what: str | None = None,
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
) -> Any:
    """Call `check` (sync, or returning an awaitable) until `until(value)` holds, and return that value."""
    poll = Poll(check, what, timeout)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if poll.expired():
            raise poll.failure(value)
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], Any],
    *,
    until: Callable[[Any], Any] = bool,
    what: str | None = None,
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
) -> Any:
    """`eventually` for code without an event loop (a server starting, a sync test)."""
    poll = Poll(check, what, timeout)
    while not until(value := check()):
        if poll.expired():
            raise poll.failure(value)
        time.sleep(interval)
    return value
