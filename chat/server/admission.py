"""Admission: how many streams a user and a process may hold open, and when a process is too busy for more.

One user must not starve the others. Every open stream (SSE, WebSocket, the
event channel, a Durable Streams live read) holds a slot; past
CHAT_MAX_STREAMS_PER_USER for its user, or CHAT_MAX_STREAMS_PER_PROCESS in its
process, a new one gets 429 with Retry-After. With REDIS_URL a user's slots
are counted across every process (leases in a sorted set, renewed while the
stream is open, so a crashed process's slots expire); without it, per process.

Overload degrades instead of collapsing: a process whose event loop runs late
by more than CHAT_OVERLOAD_LAG_MS (smoothed) refuses new streams and new
answers with 503 and Retry-After, so that the streams already open keep their
pace; clients retry, and a balancer sends them to a less busy process. A burst
of new answers can leave them waiting for the database threads while the loop
itself keeps time, so a process whose oldest answer still being created is
older than CHAT_OVERLOAD_START_MS refuses new answers too.
"""

import asyncio
import contextvars
import logging
import time
import uuid
import weakref
from collections import Counter
from contextlib import contextmanager

from django.conf import settings

from ..errors import ApiError

logger = logging.getLogger(__name__)

# How often the loop's lateness is sampled, and how fast old samples fade.
LAG_SAMPLE_S = 0.1
LAG_DECAY = 0.8
# A lease outlives a crashed process by at most this long; open streams renew theirs at a third of it.
LEASE_S = 60
RETRY_AFTER_S = 5

# Count the user's live leases and take one more, in one step (Redis runs a script atomically).
ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class LoopLag:
    """How late this event loop runs its timers, smoothed: the process's own measure of overload."""

    def __init__(self):
        self.lag = 0.0
        self.samples = 0
        self.task = asyncio.get_running_loop().create_task(self.sample(), context=contextvars.Context())

    async def sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_SAMPLE_S
            await asyncio.sleep(LAG_SAMPLE_S)
            self.observe(loop.time() - due)

    def observe(self, late_s: float) -> None:
        self.lag = max(late_s, self.lag * LAG_DECAY)
        self.samples += 1


class Admission:
    """This event loop's open stream slots, and its lag."""

    def __init__(self):
        self.by_user: Counter = Counter()
        self.total = 0
        self.leases: dict[str, int] = {}  # Slot id -> user id, while open.
        self.lag = LoopLag()
        self.starting: dict[object, float] = {}  # The answers being created: loop time each began, oldest first.
        self.loop = asyncio.get_running_loop()
        self.redis = None
        self.renewer: asyncio.Task | None = None
        if settings.REDIS_URL:
            from redis import asyncio as aioredis

            self.redis = aioredis.from_url(settings.REDIS_URL)
            self.acquire_script = self.redis.register_script(ACQUIRE_SCRIPT)

    def check_load(self) -> None:
        """Refuse new work while the loop runs late: the streams already open come first."""
        limit_s = settings.CHAT_OVERLOAD_LAG_MS / 1000
        if limit_s and self.lag.lag > limit_s:
            raise overloaded()

    @contextmanager
    def starting_answer(self):
        """Admit a new answer, counted as being created until the block ends (it is launched)."""
        self.check_load()
        limit_s = settings.CHAT_OVERLOAD_START_MS / 1000
        if limit_s and self.starting and self.loop.time() - next(iter(self.starting.values())) > limit_s:
            raise overloaded()
        key = object()
        self.starting[key] = self.loop.time()
        try:
            yield
        finally:
            del self.starting[key]

    async def open_stream(self, user_id) -> str:
        """Take a stream slot for the user, or raise 429/503; give it back with `close_stream`."""
        self.check_load()
        if self.total >= settings.CHAT_MAX_STREAMS_PER_PROCESS:
            raise ApiError(
                429, "server_full", "This server holds as many streams as it can; try again shortly.",
                retry_after=RETRY_AFTER_S,
            )
        limit = settings.CHAT_MAX_STREAMS_PER_USER
        slot = uuid.uuid4().hex
        if limit and not await self.take_user_slot(user_id, slot, limit):
            raise ApiError(
                429,
                "too_many_streams",
                f"You have {limit} streams open, the most one user may; close one (another tab or device) first.",
                retry_after=RETRY_AFTER_S,
            )
        self.by_user[user_id] += 1
        self.total += 1
        self.leases[slot] = user_id
        return slot

    async def take_user_slot(self, user_id, slot: str, limit: int) -> bool:
        if self.redis is not None:
            try:
                now = time.time()
                taken = await self.acquire_script(
                    keys=[user_key(user_id)], args=[now, limit, now + LEASE_S, slot, LEASE_S]
                )
                self.ensure_renewer()
                return bool(taken)
            except Exception:
                logger.warning("Redis unreachable: counting streams per process", exc_info=True)
        return self.by_user[user_id] < limit

    async def close_stream(self, slot: str) -> None:
        user_id = self.leases.pop(slot, None)
        if user_id is None:
            return
        self.total -= 1
        self.by_user[user_id] -= 1
        if not self.by_user[user_id]:
            del self.by_user[user_id]
        if self.redis is not None:
            try:
                await self.redis.zrem(user_key(user_id), slot)
            except Exception:
                logger.warning("could not release stream slot %s; its lease expires on its own", slot)

    def hold_until_closed(self, response, slot: str) -> None:
        """Give the slot back when Django closes the streaming response, whichever way it ends.

        Django closes every response it sent, a client that went away included,
        through the closers FileResponse uses too, and from a worker thread: the
        release is handed to the loop.
        """
        release = lambda: self.loop.create_task(self.close_stream(slot))  # noqa: E731
        response._resource_closers.append(lambda: self.loop.call_soon_threadsafe(release))

    def ensure_renewer(self) -> None:
        if self.renewer is None or self.renewer.done():
            loop = asyncio.get_running_loop()
            self.renewer = loop.create_task(self.renew(), context=contextvars.Context())

    async def renew(self) -> None:
        """Keep the open streams' leases alive, in one round trip per renewal."""
        while self.leases:
            await asyncio.sleep(LEASE_S / 3)
            expiry = time.time() + LEASE_S
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for slot, user_id in self.leases.items():
                        pipe.zadd(user_key(user_id), {slot: expiry}, xx=True)
                        pipe.expire(user_key(user_id), LEASE_S)
                    await pipe.execute()
            except Exception:
                logger.warning("could not renew stream leases", exc_info=True)


def overloaded() -> ApiError:
    return ApiError(
        503, "overloaded", "The server is busy right now; try again in a few seconds.", retry_after=RETRY_AFTER_S
    )


def user_key(user_id) -> str:
    return f"{settings.CHAT_EVENTS_NAMESPACE}chat:streams:user:{user_id}"


_admissions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Admission]" = weakref.WeakKeyDictionary()


def get_admission() -> Admission:
    loop = asyncio.get_running_loop()
    admission = _admissions.get(loop)
    if admission is None:
        admission = _admissions[loop] = Admission()
    return admission
