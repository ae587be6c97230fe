"""`stream.Follow`, the one replay-then-tail, on its own: an in-memory hub, the real database, no sockets.

Each test drives the hub by hand (what a run elsewhere would publish, or
lose) and writes token chunks as the writer would, then checks what a client
at some position receives: the exact tokens, in order, once each, then one end.
"""

import asyncio
from contextlib import aclosing

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer

from chat.llm import REASONING
from chat.models import Generation, TokenChunk
from chat.streaming import registry
from chat.streaming.events import KEEPALIVE, Alive, End, Snapshot, Token
from chat.streaming.follow import Follow
from chat.streaming.hub import Hub, stream_group
from tests.support import factories

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = ["Re", "play", ",", " then", " tail", ":", " the", " database", " is", " the", " truth", "."]


@pytest.fixture(autouse=True)
def quick_checks(settings):
    """A silent hub sends the follower to the database after 50 ms, not seconds."""
    settings.CHAT_STREAM_IDLE_CHECK_S = 0.05
    settings.CHAT_FLUSH_INTERVAL_S = 0.01


@pytest.fixture
def hub():
    return Hub(layer=InMemoryChannelLayer())


def running(tokens_persisted: int = 0) -> Generation:
    """A generation another process runs, with its first `tokens_persisted` tokens written."""
    generation = factories.generation(status="streaming", tokens=[], heartbeat_age_s=0.1)
    if tokens_persisted:
        persist(generation, 1, tokens_persisted)
    return generation


def persist(generation, first_seq: int, last_seq: int, part: str = "text") -> None:
    TokenChunk.objects.create(
        generation=generation, first_seq=first_seq, last_seq=last_seq, tokens=TOKENS[first_seq - 1 : last_seq], part=part
    )


def end(generation, last_seq: int, status: str = "complete") -> End:
    Generation.objects.filter(pk=generation.pk).update(status=status, last_seq=last_seq, finish_reason="stop")
    return End(status=status, last_seq=last_seq, finish_reason="stop")


def token(seq: int, last: int | None = None, part: str = "text") -> Token:
    pieces = TOKENS[seq - 1 : (last or seq)]
    return Token(seq, last or seq, "".join(pieces), pieces, part)


async def collect(follow: Follow, events: list) -> None:
    async with aclosing(follow.events()) as stream:
        async for event in stream:
            if event is not KEEPALIVE:
                events.append(event)


def received(events) -> tuple[str, list[int]]:
    """The text the tokens carried, and every token's seq once (so a repeat or a hole shows)."""
    tokens = [e for e in events if isinstance(e, Token)]
    return "".join(t.text for t in tokens), [seq for t in tokens for seq in range(t.first_seq, t.last_seq + 1)]


async def follow_until(follow: Follow, events: list, condition, what: str) -> asyncio.Task:
    """Start following in the background; return once `condition(events)` holds."""
    task = asyncio.ensure_future(collect(follow, events))
    async with asyncio.timeout(30):
        while not condition(events):
            if task.done():
                task.result()
                raise AssertionError(f"the stream ended before {what}: {events}")
            await asyncio.sleep(0.01)
    return task


async def test_an_ended_generation_replays_from_any_position_then_ends(hub):
    generation = await sync_to_async(factories.generation)(tokens=TOKENS, chunk_size=5)
    for after in (0, 4, 5, 11, 12):
        events = []
        await collect(Follow(generation.pk, after_seq=after, hub=hub), events)
        assert received(events) == ("".join(TOKENS[after:]), list(range(after + 1, 13)))
        assert isinstance(events[-1], End) and events[-1].last_seq == 12 and events[-1].status == "complete"


async def test_replay_then_tail_the_hub(hub):
    generation = await sync_to_async(running)(5)
    events = []
    task = await follow_until(Follow(generation.pk, after_seq=2, hub=hub), events, lambda e: received(e)[1][-1:] == [5],
                              "the replay")
    group = stream_group(generation.pk)
    for seq in range(6, 10):
        hub.publish_nowait(group, token(seq))
    await hub.publish(group, await sync_to_async(end)(generation, 9))
    await task
    assert received(events) == ("".join(TOKENS[2:9]), list(range(3, 10)))
    assert events[-1].last_seq == 9


async def test_a_token_the_hub_lost_is_filled_from_the_database_before_anything_past_it(hub):
    generation = await sync_to_async(running)(3)
    events = []
    task = await follow_until(Follow(generation.pk, hub=hub), events, lambda e: received(e)[1][-1:] == [3], "the replay")
    await sync_to_async(persist)(generation, 4, 5)  # Written by the writer; their hub message was lost.
    hub.publish_nowait(stream_group(generation.pk), token(6))
    await follow_until_seq(events, 6)  # Live: 4 and 5 came first, before any end could settle it.
    await sync_to_async(persist)(generation, 6, 6)
    await hub.publish(stream_group(generation.pk), await sync_to_async(end)(generation, 6))
    await task
    assert received(events) == ("".join(TOKENS[:6]), [1, 2, 3, 4, 5, 6])


async def test_a_silent_hub_sends_the_follower_to_the_database(hub):
    """Everything the hub carried was dropped, the end included: the database alone finishes the stream."""
    generation = await sync_to_async(running)(2)
    events = []
    task = await follow_until(Follow(generation.pk, hub=hub), events, lambda e: received(e)[1][-1:] == [2], "the replay")
    await sync_to_async(persist)(generation, 3, 7)
    await sync_to_async(end)(generation, 7, status="interrupted")
    await task
    assert received(events) == ("".join(TOKENS[:7]), list(range(1, 8)))
    assert events[-1].status == "interrupted"


async def test_an_end_racing_the_last_tokens_waits_for_them(hub):
    """The end overtakes the last tokens' hub message: the follower catches up to the end's seq first."""
    generation = await sync_to_async(running)(4)
    events = []
    task = await follow_until(Follow(generation.pk, hub=hub), events, lambda e: received(e)[1][-1:] == [4], "the replay")
    stored_end = await sync_to_async(end)(generation, 8)
    await sync_to_async(persist)(generation, 5, 8)
    await hub.publish(stream_group(generation.pk), stored_end)
    await task
    assert received(events) == ("".join(TOKENS[:8]), list(range(1, 9)))
    # From the hub or, if the hub was slower than a silence check, from the database: one end, the stored one.
    assert [type(e) for e in events].count(End) == 1
    assert (events[-1].status, events[-1].last_seq) == (stored_end.status, stored_end.last_seq)


async def test_alive_past_the_follower_means_lost_tokens(hub):
    generation = await sync_to_async(running)(2)
    events = []
    task = await follow_until(Follow(generation.pk, hub=hub), events, lambda e: received(e)[1][-1:] == [2], "the replay")
    await sync_to_async(persist)(generation, 3, 5)
    hub.deliver(stream_group(generation.pk), Alive(5))
    await follow_until_seq(events, 5)
    await hub.publish(stream_group(generation.pk), await sync_to_async(end)(generation, 5))
    await task
    assert received(events) == ("".join(TOKENS[:5]), [1, 2, 3, 4, 5])


async def follow_until_seq(events: list, seq: int) -> None:
    async with asyncio.timeout(30):
        while received(events)[1][-1:] != [seq]:
            await asyncio.sleep(0.01)


async def test_parts_stay_apart_and_share_one_sequence(hub):
    generation = await sync_to_async(factories.generation)(status="streaming", tokens=[], heartbeat_age_s=0.1)
    await sync_to_async(persist)(generation, 1, 3, REASONING)
    await sync_to_async(persist)(generation, 4, 6)
    await sync_to_async(end)(generation, 6)
    events = []
    await collect(Follow(generation.pk, after_seq=2, hub=hub), events)
    tokens = [e for e in events if isinstance(e, Token)]
    assert [(t.part, t.first_seq, t.last_seq, t.text) for t in tokens] == [
        (REASONING, 3, 3, TOKENS[2]),
        ("text", 4, 6, "".join(TOKENS[3:6])),
    ]
    assert Follow.coalesced(tokens) == tokens, "coalescing never merges two parts"


class LocalRun:
    """What Follow reads of a run of this process (`first_seq`, `end`, `alive`, `tokens_after`)."""

    def __init__(self, generation_id, produced: list[str]):
        self.generation_id, self.first_seq, self.end, self.alive = generation_id, 1, None, True
        self.produced = produced

    def tokens_after(self, seq: int) -> list[Token]:
        pieces = self.produced[seq:]
        return [Token(seq + 1, len(self.produced), "".join(pieces), pieces)] if pieces else []


async def test_a_local_run_is_followed_from_memory_then_from_the_database_once_handed_on(hub):
    """Tokens the run made but never wrote reach the follower from the run's memory; after the run hands the
    generation on (alive no more, no end), the follower goes on from the database as after any silence."""
    generation = await sync_to_async(running)(0)
    run = LocalRun(generation.pk, TOKENS[:4])
    registry._runs[generation.pk] = run
    try:
        events = []
        follow = Follow(generation.pk, hub=hub, active_when_read=True)
        task = await follow_until(follow, events, lambda e: received(e)[1][-1:] == [4], "the run's tokens")
        run.produced = TOKENS[:6]
        hub.publish_nowait(stream_group(generation.pk), token(5, 6))
        await follow_until_seq(events, 6)
        # Handed on: the next worker goes on from the persisted tokens, which are all six.
        await sync_to_async(persist)(generation, 1, 6)
        run.alive = False
        del registry._runs[generation.pk]
        await sync_to_async(persist)(generation, 7, 9)
        await sync_to_async(end)(generation, 9)
        await task
    finally:
        registry._runs.pop(generation.pk, None)
    assert received(events) == ("".join(TOKENS[:9]), list(range(1, 10)))
    assert not any(isinstance(e, Snapshot) for e in events)
