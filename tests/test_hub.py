"""The hub's inbox (chat/hub.py Subscription) on its own: no server, no database."""

import asyncio

from chat.hub import Subscription


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
