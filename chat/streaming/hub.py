"""Per-generation fan-out: a fast path that may drop; the database stays the truth.

In the process that runs a generation, each token is handed straight to the
local subscribers' inboxes: no channel-layer round trip, no copy, no task.
Other processes get it through the channel layer (Redis pub/sub), with each
generation's tokens batched into one message per CHAT_HUB_BATCH_MS, so that
publishing costs the same whatever the number of followers. A process joins a
generation's group on the layer once, however many local subscribers it has
(as Centrifugo does), and fans each message out to them as one shared event.

Inboxes are bounded: a slow client loses hub events rather than holding
anything up, and its stream fills the gap from the run or the database.
"""

import asyncio
import contextvars
import itertools
import logging
import uuid
import weakref
from contextlib import asynccontextmanager

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.utils.module_loading import import_string

from .events import Token, from_message

logger = logging.getLogger(__name__)


def stream_group(generation_id) -> str:
    return f"gen.{generation_id.hex}"


def control_group(generation_id) -> str:
    return f"genctl.{generation_id.hex}"


class Subscription:
    """A follower's inbox. Events are delivered synchronously; one task takes them in batches.

    The task sleeps until an event arrives (or, with a coalescing `window`, until
    the window after the first one closes), so a burst of events costs one
    wake-up. Silence is noticed by one timer per silence period, not one per wait.
    """

    # One per open stream: no per-instance dict, and a list, not a deque (whose first block is 600 bytes).
    __slots__ = ("events", "maxsize", "window", "overflowed", "waiter", "window_timer", "silence_timer", "silence_s",
                 "loop", "last_delivery")

    def __init__(self, maxsize: int, *, window: float = 0.0):
        self.events: list = []
        self.maxsize = maxsize
        self.window = window
        self.overflowed = False  # Events were dropped; the follower must resynchronise.
        self.waiter: asyncio.Future | None = None
        self.window_timer: asyncio.TimerHandle | None = None
        self.silence_timer: asyncio.TimerHandle | None = None
        self.silence_s = 0.0
        self.loop = asyncio.get_running_loop()
        self.last_delivery = self.loop.time()

    def deliver(self, event) -> None:
        if len(self.events) >= self.maxsize:
            self.overflowed = True
        else:
            self.events.append(event)
        self.last_delivery = self.loop.time()
        if self.waiter is not None and self.window_timer is None:
            if self.window > 0:
                self.window_timer = self.loop.call_later(self.window, self.wake)
            else:
                self.wake()

    def wake(self) -> None:
        self.window_timer = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def batch(self, silence_s: float) -> list:
        """The events delivered since the last batch; [] once `silence_s` passes without one."""
        if not self.events and not self.overflowed:
            if self.silence_timer is None or silence_s != self.silence_s:
                self.arm_silence(silence_s, self.last_delivery + silence_s)
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
                if self.window_timer is not None:
                    self.window_timer.cancel()
                    self.window_timer = None
        events, self.events = self.events, []
        return events

    def arm_silence(self, silence_s: float, at: float) -> None:
        if self.silence_timer is not None:
            self.silence_timer.cancel()
        self.silence_s = silence_s
        self.silence_timer = self.loop.call_at(at, self.check_silence)

    def check_silence(self) -> None:
        """Wake the waiter after a silence period without an event; otherwise look again when it would end."""
        self.silence_timer = None
        quiet_until = self.last_delivery + self.silence_s
        if self.loop.time() >= quiet_until:
            self.last_delivery = self.loop.time()  # The next silence period starts now.
            self.wake()
        elif self.waiter is not None:
            self.arm_silence(self.silence_s, quiet_until)

    def close(self) -> None:
        for timer in (self.silence_timer, self.window_timer):
            if timer is not None:
                timer.cancel()

    def take_overflow(self) -> bool:
        overflowed, self.overflowed = self.overflowed, False
        return overflowed

    async def get(self, timeout: float):
        """The next event, or None after `timeout` seconds of silence (for one-event-at-a-time readers)."""
        if not self.events:
            self.events = await self.batch(timeout)  # Which took the list it returns and left an empty one.
        return self.events.pop(0) if self.events else None


class _GroupReader:
    """This process's membership of one group on a cross-process layer."""

    def __init__(self, hub: "Hub", group: str):
        self.hub = hub
        self.group = group
        self.channel = ""
        # Its own context: the reader may outlive the request that started it.
        loop = asyncio.get_running_loop()
        self.joined = loop.create_task(self.join(), context=contextvars.Context())
        self.reader: asyncio.Task | None = None

    async def join(self) -> None:
        layer = self.hub.layer
        self.channel = await layer.new_channel()
        await layer.group_add(self.group, self.channel)
        self.reader = asyncio.get_running_loop().create_task(self.read(), context=contextvars.Context())

    async def read(self) -> None:
        while True:
            message = await self.hub.layer.receive(self.channel)
            if message.get("origin") == self.hub.origin:
                continue  # Our own publication: already delivered locally.
            try:
                event = from_message(message)
            except Exception:
                logger.exception("dropping undecodable hub message on %s", self.group)
                continue
            self.hub.deliver(self.group, event)

    async def leave(self) -> None:
        self.joined.cancel()
        if self.reader:
            self.reader.cancel()
        if self.channel:
            await self.hub.layer.group_discard(self.group, self.channel)


class Hub:
    def __init__(self, layer=None, queue_size: int | None = None):
        self.layer = layer or get_channel_layer()
        # The in-memory layer reaches no other process: local delivery is all there is.
        self.cross_process = not isinstance(self.layer, InMemoryChannelLayer)
        self.queue_size = queue_size or settings.CHAT_SUBSCRIBER_QUEUE_SIZE
        self.batch_s = settings.CHAT_HUB_BATCH_MS / 1000
        self.origin = uuid.uuid4().hex
        self.subscribers: dict[str, set[Subscription]] = {}
        self.readers: dict[str, _GroupReader] = {}
        self.outbox: dict[str, list[Token]] = {}
        self.flusher: asyncio.Task | None = None

    def deliver(self, group: str, event) -> None:
        """Hand the event to this process's subscribers of `group`."""
        for subscription in self.subscribers.get(group, ()):
            subscription.deliver(event)

    def publish_nowait(self, group: str, event) -> None:
        """Publish a token: to local subscribers now, to other processes in the next batch."""
        self.deliver(group, event)
        if self.cross_process:
            self.outbox.setdefault(group, []).append(event)
            if self.flusher is None or self.flusher.done():
                self.flusher = asyncio.get_running_loop().create_task(self.flush_soon(), context=contextvars.Context())

    async def publish(self, group: str, event) -> None:
        """Publish an event, and return once other processes have been sent it (after the group's tokens)."""
        self.deliver(group, event)
        if self.cross_process:
            await self.send_tokens(group, self.outbox.pop(group, []))
            await self.send(group, event.to_message())

    async def flush_soon(self) -> None:
        """Send the batched tokens every batch interval while there are any."""
        while self.outbox:
            await asyncio.sleep(self.batch_s)
            outbox, self.outbox = self.outbox, {}
            for group, tokens in outbox.items():
                await self.send_tokens(group, tokens)

    async def send_tokens(self, group: str, tokens: list[Token]) -> None:
        """The batch as one message per run of tokens of one part."""
        for _, same_part in itertools.groupby(tokens, key=lambda token: token.part):
            await self.send(group, Token.merge(list(same_part)).to_message())

    async def send(self, group: str, message: dict) -> None:
        try:
            await self.layer.group_send(group, {**message, "origin": self.origin})
        except Exception:  # The hub may drop; followers fill gaps from the database.
            logger.exception("could not publish to %s", group)

    @asynccontextmanager
    async def subscribe(self, group: str, *, window: float = 0.0, local_only: bool = False):
        """Yield a subscription that receives every event published to `group` from now on.

        `local_only`: only what this process publishes, with no reader of the
        cross-process layer (for a follower of a run in this process, which
        would otherwise read each of the run's batches back from Redis).
        """
        subscription = Subscription(self.queue_size, window=window)
        self.subscribers.setdefault(group, set()).add(subscription)
        reader = None
        if self.cross_process and not local_only:
            reader = self.readers.get(group)
            if reader is None:
                reader = self.readers[group] = _GroupReader(self, group)
        try:
            if reader is not None:
                await asyncio.shield(reader.joined)
            yield subscription
        finally:
            subscription.close()
            local = self.subscribers.get(group)
            if local is not None:
                local.discard(subscription)
                if not local:
                    del self.subscribers[group]
                    # Whoever started the group's reader, the last subscriber to leave stops it.
                    if (reader := self.readers.pop(group, None)) is not None:
                        await reader.leave()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """Return the hub of the running event loop; its inboxes and tasks belong to that loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = import_string(settings.CHAT_HUB_CLASS)()
    return hub
