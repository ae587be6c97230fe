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
    """One wait: its condition, its deadline and its failure message."""

    def __init__(
        self,
        check: Callable,
        *,
        until: Callable[[Any], Any] = bool,
        what: str | None = None,
        timeout: float = TIMEOUT_S,
        interval: float = INTERVAL_S,
    ):
        self.until = until
        self.what = what or getattr(check, "__qualname__", repr(check))
        self.timeout = timeout
        self.interval = interval
        self.deadline = time.monotonic() + timeout

    def done(self, value: Any) -> bool:
        """Whether `value` ends the wait; past the deadline, fail."""
        if self.until(value):
            return True
        if time.monotonic() >= self.deadline:
            raise AssertionError(f"waited {self.timeout:g} s for {self.what}; last saw {value!r}")
        return False


async def eventually(check: Callable[[], Any], **options) -> Any:
    """Call `check` (sync, or returning an awaitable) until `until(value)` holds, and return that value.

    Options: `until` (default: truthy), `what` (for the failure message), `timeout`, `interval`.
    """
    poll = Poll(check, **options)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if poll.done(value):
            return value
        await asyncio.sleep(poll.interval)


def eventually_sync(check: Callable[[], Any], **options) -> Any:
    """`eventually` for code without an event loop (a server starting, a sync test)."""
    poll = Poll(check, **options)
    while not poll.done(value := check()):
        time.sleep(poll.interval)
    return value
