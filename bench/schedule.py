"""The token schedule every benchmark server follows, so the client knows when each token was due.

Token `seq` (from 1) of a stream is due at `t0 + (seq - 1) / rate` on the
machine's wall clock. The client runs on the same machine, so arrival minus
due time is the delivery lag, with nothing added to the stream.
"""

import asyncio
import time


def due(t0: float, seq: int, rate: float) -> float:
    return t0 + (seq - 1) / rate


def word(seq: int) -> str:
    """The bare servers' token `seq`; their whole text is therefore known to the client."""
    return f" word{seq}"


async def sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def on_schedule(t0: float, tokens: int, rate: float):
    """Yield 1..tokens, each at its due time (at once if the server is behind)."""
    for seq in range(1, tokens + 1):
        await sleep_until(due(t0, seq, rate))
        yield seq


def stream_params(query) -> tuple[float, int, float]:
    """t0, tokens and rate of a bare server's `/stream?t0=&tokens=&rate=` (t0 defaults to now)."""
    return float(query.get("t0") or time.time()), int(query.get("tokens", "100")), float(query.get("rate", "50"))
