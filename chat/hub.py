"""Per-generation fan-out over the Channels layer: a fast path that may drop.

Each process keeps one layer channel per group it has local subscribers for,
and fans each message out to them as one shared event object. Subscriber
queues are bounded: a slow client loses hub messages rather than holding
anything up, and the stream fills the gap from the database.
"""

import asyncio
import logging
import weakref
from contextlib import asynccontextmanager

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.module_loading import import_string

from .events import from_message

logger = logging.getLogger(__name__)


def stream_group(generation_id) -> str:
    return f"gen.{generation_id.hex}"


def control_group(generation_id) -> str:
    return f"genctl.{generation_id.hex}"


class Subscription:
    def __init__(self, maxsize: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0

    def deliver(self, event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def get_nowait(self):
        """Return the next event, or None if none is waiting."""
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def get(self, timeout: float):
        """Return the next event, or None after `timeout` seconds of silence."""
        event = self.get_nowait()
        if event is not None:
            return event
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None


class _GroupReader:
    """This process's membership of one group, shared by its local subscribers."""

    def __init__(self, hub: "Hub", group: str):
        self.hub = hub
        self.group = group
        self.subscriptions: set[Subscription] = set()
        self.channel = ""
        self.joined = asyncio.get_running_loop().create_task(self.join())
        self.reader: asyncio.Task | None = None

    async def join(self) -> None:
        layer = self.hub.layer
        self.channel = await layer.new_channel()
        await layer.group_add(self.group, self.channel)
        self.reader = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        layer = self.hub.layer
        while True:
            message = await layer.receive(self.channel)
            try:
                event = self.hub.decode(message)
            except Exception:
                logger.exception("dropping undecodable hub message on %s", self.group)
                continue
            for subscription in self.subscriptions:
                subscription.deliver(event)

    async def leave(self) -> None:
        self.joined.cancel()
        if self.reader:
            self.reader.cancel()
        if self.channel:
            await self.hub.layer.group_discard(self.group, self.channel)


class Hub:
    def __init__(self, layer=None, queue_size: int | None = None):
        self.layer = layer or get_channel_layer()
        self.queue_size = queue_size or settings.CHAT_SUBSCRIBER_QUEUE_SIZE
        self.readers: dict[str, _GroupReader] = {}

    async def publish(self, group: str, event) -> None:
        await self.layer.group_send(group, event.to_message())

    def decode(self, message: dict):
        return from_message(message)

    @asynccontextmanager
    async def subscribe(self, group: str):
        """Yield a subscription that receives every message published to `group` from now on."""
        reader = self.readers.get(group)
        if reader is None:
            reader = self.readers[group] = _GroupReader(self, group)
        subscription = Subscription(self.queue_size)
        reader.subscriptions.add(subscription)
        try:
            await asyncio.shield(reader.joined)
            yield subscription
        finally:
            reader.subscriptions.discard(subscription)
            if not reader.subscriptions and self.readers.get(group) is reader:
                del self.readers[group]
                await reader.leave()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """Return the hub of the running event loop; its queues and tasks belong to that loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = import_string(settings.CHAT_HUB_CLASS)()
    return hub
