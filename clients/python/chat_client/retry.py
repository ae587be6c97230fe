"""Timings of the follower, with the browser client's defaults (static/chat/stream-client.js, docs/client.md)."""

import random as _random
from dataclasses import dataclass

from .errors import AttemptFailed


@dataclass(frozen=True)
class Config:
    """How a stream is followed. Every default is the browser client's, so both behave alike."""

    # No byte for this long, keepalive comments included, means a dead connection even if TCP has
    # not noticed (a phone that changed networks). Keep it above the server's CHAT_STREAM_KEEPALIVE_S.
    stall_s: float = 10.0
    # Reconnect delays are uniform in [0, min(cap, base * 2^n)) (full jitter). None: the server's
    # `retry:` hint when it sent one, else 0.5 s, the browser's.
    backoff_base_s: float | None = None
    backoff_cap_s: float = 8.0
    # Failed attempts in a row, with no event between them, before reading the stored answer instead.
    max_failed_attempts: int = 3
    # The fallback asks again for a still-running answer after this long, doubling up to the cap.
    fallback_poll_s: float = 1.0
    # Stop (StreamFailed) after this long without progress; None keeps trying, like the browser.
    give_up_after_s: float | None = None


DEFAULT_BACKOFF_BASE_S = 0.5


def backoff_delay(attempt: int, base_s: float, cap_s: float, random=_random.random) -> float:
    """Delay before retry number `attempt` (0-based): exponential, capped, full jitter."""
    return random() * min(cap_s, base_s * 2**attempt)


def retry_delay(failure: AttemptFailed, attempt: int, base_s: float, cap_s: float, random=_random.random) -> float:
    """The backoff, but never sooner than the server asked (Retry-After), plus up to half that again at
    random, so that the clients a busy server turned away together do not all come back together."""
    backoff = backoff_delay(attempt, base_s, cap_s, random)
    asked = failure.retry_after
    return max(backoff, asked * (1 + random() / 2)) if asked else backoff
