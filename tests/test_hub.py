"""The hub (chat/streaming/hub.py): its inbox on its own, then two hubs on a real Redis; no server, no database."""

import asyncio
import uuid

import pytest

from chat.streaming.events import Token
from chat.streaming.hub import Hub, Subscription
from tests.conftest import require_redis
from tests.support.server import REDIS_URL


async def test_get_gives_the_delivered_events_one_at_a_time_in_order():
    inbox = Subscription(maxsize=10)
    for event in ("a", "b", "c"):
        inbox.deliver(event)
    assert [await inbox.get(30) for _ in range(3)] == ["a", "b", "c"]


async def test_get_gives_events_delivered_while_it_waits_and_keeps_the_rest():
    inbox = Subscription(maxsize=10)
    waiting = asyncio.ensure_future(inbox.get(30))
    await asyncio.sleep(0)  # One turn: the getter now waits on an empty inbox.
    inbox.deliver("a")
    inbox.deliver("b")
    assert await waiting == "a"
    assert await inbox.get(30) == "b"


async def test_a_full_inbox_drops_and_says_so():
    inbox = Subscription(maxsize=2)
    for event in ("a", "b", "c"):
        inbox.deliver(event)
    assert await inbox.batch(30) == ["a", "b"]
    assert inbox.take_overflow() and not inbox.take_overflow()


# --- Across processes: two hubs on one real Redis, as two server processes have ----------------


def seqs_and_text(events) -> list[tuple]:
    return [(event.first_seq, event.last_seq, event.text) for event in events]


@pytest.fixture
async def redis_hubs():
    """Two hubs (two processes, as far as the hub can tell) on one Redis; a fresh group each test."""
    require_redis()
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layers = [RedisPubSubChannelLayer(hosts=[REDIS_URL]) for _ in range(2)]
    yield [Hub(layer=layer) for layer in layers], f"test-hub-{uuid.uuid4().hex}"
    for layer in layers:
        await layer.flush()


async def test_a_subscriber_gets_what_another_process_publishes(redis_hubs):
    (ours, theirs), group = redis_hubs
    async with ours.subscribe(group) as subscription:
        assert group in ours.readers
        await theirs.publish(group, Token(1, 1, "a"))
        assert seqs_and_text(await subscription.batch(30)) == [(1, 1, "a")]
    assert group not in ours.readers, "the last subscriber to leave stops the group's reader"


async def test_a_local_only_subscriber_reads_nothing_back_from_redis(redis_hubs):
    """A follower of a run in its own process: the run's batches are delivered in the process, not read back."""
    (ours, _), group = redis_hubs
    async with ours.subscribe(group, local_only=True) as subscription:
        assert group not in ours.readers
        await ours.publish(group, Token(1, 1, "a"))
        assert seqs_and_text(await subscription.batch(30)) == [(1, 1, "a")]


async def test_the_last_subscriber_stops_the_reader_even_a_local_only_one(redis_hubs):
    (ours, _), group = redis_hubs
    async with ours.subscribe(group, local_only=True):
        async with ours.subscribe(group):
            reader = ours.readers[group]
            assert reader.reader is not None and not reader.reader.done()
        assert ours.readers[group] is reader, "a subscriber is left: the reader stays"
    assert group not in ours.readers
    await asyncio.wait([reader.reader], timeout=30)
    assert reader.reader.cancelled()
