"""Replay, then tail: the one implementation of following a generation.

Every transport (SSE, WebSocket, Durable Streams) iterates `Follow` and only
encodes. The rule: subscribe to the hub first, replay what the client has not
seen, then tail the hub, dropping what was already sent and filling any gap
before sending past it. The database is the source of truth; the hub is a
fast path that may drop anything, the end included.

When this process runs the generation, the run's memory has every token:
replay, gaps and the end come from there, and a waiting follower costs no
query at all. Otherwise they come from the database, which a follower asks
only when the hub has been silent for CHAT_STREAM_IDLE_CHECK_S (a quiet run
says `Alive` every heartbeat) or shows a gap.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import aclosing

from django.conf import settings

from ..db import db_work
from ..llm.base import TEXT
from . import registry
from .answers import (
    answer_through,
    load_end,
    persisted_tokens,
    replay_state,
    text_through,
)
from .events import KEEPALIVE, Alive, End, Json, Keepalive, Snapshot, Token
from .hub import Hub, get_hub, stream_group
from .jsonstream import JsonSnapshots

Event = Token | Json | End | Keepalive


class Follow:
    """The events a client at `after_seq` must receive, up to one `End`.

    Iterate `batches()` (what is ready, to send in one write) or `events()`
    inside `contextlib.aclosing`, so that a client that goes away releases its
    hub subscription at once rather than at garbage collection.
    """

    # One per open stream, for as long as it is open: no per-instance dict.
    __slots__ = ("generation_id", "sent", "coalesce_s", "hub", "response_format", "active_when_read", "idle_check_s",
                 "keepalive_s", "flush_interval_s", "run")

    def __init__(
        self,
        generation_id,
        *,
        after_seq: int = 0,
        coalesce_s: float = 0.0,
        hub: Hub | None = None,
        response_format: str = "text",
        active_when_read: bool = False,
    ):
        self.generation_id = generation_id
        self.sent = after_seq
        self.coalesce_s = coalesce_s
        self.hub = hub
        self.response_format = response_format
        # The caller just read the generation as active: no need to ask again before following its local run.
        self.active_when_read = active_when_read
        self.idle_check_s = settings.CHAT_STREAM_IDLE_CHECK_S
        self.keepalive_s = settings.CHAT_STREAM_KEEPALIVE_S
        self.flush_interval_s = settings.CHAT_FLUSH_INTERVAL_S
        self.run = None  # The run followed, when this process runs the generation (its interface: runner.py).

    async def events(self) -> AsyncIterator[Event]:
        """The events one at a time."""
        async with aclosing(self.batches()) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    def batches(self) -> AsyncIterator[list[Event]]:
        """The events in batches of what is ready: tokens, then the end, plus `json` events for a JSON answer.

        A text answer's are the tail's own: no generator in between for the stream's life.
        """
        return self.json_batches() if self.response_format == "json" else self.tail()

    async def json_batches(self) -> AsyncIterator[list[Event]]:
        snapshots, resend = await self.json_state()
        if resend is not None:
            yield [resend]
        async with aclosing(self.tail()) as batches:
            async for batch in batches:
                out = []
                for event in batch:
                    if isinstance(event, Snapshot):
                        snapshots = JsonSnapshots()
                        out.append(event)
                        if snapshots.feed(event.text):
                            out.append(Json(event.last_seq, snapshots.dumps()))
                    elif isinstance(event, Token):
                        out += split_at_growth(event, snapshots)
                    elif isinstance(event, End):
                        if snapshots.finish():  # A top-level number completes only here.
                            out.append(Json(event.last_seq, snapshots.dumps()))
                        out.append(event)
                    else:
                        out.append(event)
                yield out

    async def json_state(self) -> tuple[JsonSnapshots, Json | None]:
        """The parser as it stood after the client's last token, and that token's `json` event, if it had one.

        The `json` event shares its id with its token, so a client cut off
        between the two cannot say it missed it: it is sent again, first.
        Snapshots only grow, so a second copy is harmless.
        """
        snapshots = JsonSnapshots()
        if self.sent <= 0:
            return snapshots, None
        before, last = await text_through(self.generation_id, self.sent)
        snapshots.feed(before)
        if last is not None and snapshots.feed(last):
            return snapshots, Json(self.sent, snapshots.dumps())
        return snapshots, None

    async def tail(self) -> AsyncIterator[list[Token | End | Keepalive]]:
        """Replay, then tail: the tokens after the client's position, then the end, in batches."""
        hub = self.hub or get_hub()
        loop = asyncio.get_running_loop()
        run = registry.local_run(self.generation_id)
        run_live = run is not None and run.end is None
        # Our own live run hands its follower everything, so no other process's tokens are needed
        # (if a shutdown hands the run on, the follower catches up from the database, as after any silence).
        group = stream_group(self.generation_id)
        async with hub.subscribe(group, window=self.coalesce_s, local_only=run_live) as subscription:
            # An ended run replays from the database, as a finished stream always does; so does
            # one ended by someone else (an operator, a mistaken reaper) before it noticed.
            live = run_live and self.sent >= run.first_seq - 1
            if live and (self.active_when_read or await load_end(self.generation_id) is None):
                self.run = run
                first, end = self.from_run(), None
            else:
                first, end = await self.from_database()
            if end is not None:
                yield first + await self.finish(end)
                return
            if first:
                yield first
            last_sent_at = loop.time()
            period = min(self.idle_check_s, self.keepalive_s)
            while True:
                events = await subscription.batch(period)
                out, end = await self.take(events)
                # Events were dropped, or the hub went silent (a follower of our own live run
                # needs no check then: the run hands it everything): catch up from the truth.
                if subscription.take_overflow() or (not events and not self.run_alive()):
                    caught_up, end = await self.resync()
                    out += caught_up
                if end is not None:
                    yield out + await self.finish(end)
                    return
                if out:
                    last_sent_at = loop.time()
                    yield self.coalesced(out) if self.coalesce_s > 0 else out
                elif loop.time() - last_sent_at + period >= self.keepalive_s:
                    # Now if waiting one more period would be late: never late, at most a period early.
                    # (Checking for a whole keepalive_s skipped a beat whenever the silence timer
                    # fired a hair before it, so a silent stream went 2 x keepalive_s without a byte.)
                    last_sent_at = loop.time()
                    yield [KEEPALIVE]

    async def take(self, events: list) -> tuple[list[Token], End | None]:
        """The tokens to send from a batch of hub events (filling gaps), and its end if it has one."""
        out = []
        for event in events:
            if isinstance(event, End):
                return out, event
            if isinstance(event, Alive):
                if event.last_seq > self.sent:
                    out += await self.fill_gap(event.last_seq)  # Tokens were lost on the way.
                continue
            if not isinstance(event, Token) or event.last_seq <= self.sent:
                continue  # Already replayed.
            if event.first_seq > self.sent + 1:
                out += await self.fill_gap(event.first_seq - 1)
            if event.first_seq <= self.sent:
                event = event.after(self.sent)
            if event is None or event.first_seq != self.sent + 1:
                continue  # The gap cannot be filled yet; the next resync or the end settles it.
            out.append(event)
            self.sent = event.last_seq
        return out, None

    def run_alive(self) -> bool:
        return self.run is not None and self.run.alive

    def from_run(self) -> list[Token]:
        """The tokens our own run has made since the client's position."""
        tokens = self.run.tokens_after(self.sent)
        if tokens:
            self.sent = tokens[-1].last_seq
        return tokens

    async def from_database(self) -> tuple[list[Token], End | None]:
        """The snapshot a client from before a continuation needs, the persisted tokens, and the end if any."""
        first_seq, end, tokens = await db_work(replay_state)(self.generation_id, self.sent)
        events = []
        if first_seq is not None and self.sent < first_seq - 1:
            # The tokens before first_seq belong to the generation it continues.
            events = await self.snapshot()
            first_seq, end, tokens = await db_work(replay_state)(self.generation_id, self.sent)
        if tokens:
            self.sent = tokens[-1].last_seq
        return events + tokens, end

    async def resync(self) -> tuple[list[Token], End | None]:
        if self.run_alive():
            return self.from_run(), self.run.end
        tokens, end = await self.from_database()
        return tokens, end

    async def catch_up(self, through: int | None = None) -> list[Token]:
        tokens = await db_work(persisted_tokens)(self.generation_id, self.sent, through)
        if tokens:
            self.sent = tokens[-1].last_seq
        return tokens

    async def fill_gap(self, up_to: int) -> list[Token]:
        """The tokens up to `up_to`: from our run, or from the database, waiting for flushes on their way."""
        if self.run is not None:
            return self.from_run()
        tokens = []
        while True:
            tokens += await self.catch_up()
            if self.sent >= up_to or await load_end(self.generation_id):
                return tokens
            await asyncio.sleep(self.flush_interval_s)

    async def finish(self, end: End) -> list[Token | End]:
        events = []
        if end.last_seq > self.sent:
            events = self.from_run() if self.run is not None else await self.catch_up(through=end.last_seq)
        if end.last_seq != self.sent:
            # Short: retention deleted the tokens. Past it: the run went on after it
            # was ended (reaped while alive). Either way the stored text, whole, wins.
            events += await self.snapshot()
        return [*events, end]

    async def snapshot(self) -> list[Snapshot]:
        """The stored answer through the generation's end, replacing whatever the client has."""
        found = await db_work(answer_through)(self.generation_id)
        if found is None or found[1] == self.sent:
            return []
        answer, seq = found
        self.sent = seq
        return [Snapshot(1, seq, answer.text, reasoning=answer.reasoning)]

    @staticmethod
    def coalesced(events: list) -> list:
        """Each run of plain tokens of one part merged into one event, in one join (snapshots stay apart).

        The tokens of a batch are contiguous: each was taken at `sent + 1`.
        """
        out = []
        for (plain, _), group in itertools.groupby(events, key=lambda event: (type(event) is Token, event.part)):
            out += [Token.merge(list(group))] if plain else group
        return out


def split_at_growth(token: Token, snapshots: JsonSnapshots) -> list[Token | Json]:
    """Feed a text token event to the parser; cut it after each token that grows the snapshot, and add its `json` event.

    So a `json` event's id is always the seq of the token that completed its
    values, whatever batching (replay chunks, coalescing) the tokens came in.
    Reasoning is not the answer: it passes by the parser.
    """
    pieces = token.pieces
    if token.part != TEXT:
        return [token]
    if pieces is None or len(pieces) != token.last_seq - token.first_seq + 1 or len(pieces) == 1:
        # Token boundaries unknown (or one token): the event's last token takes the credit.
        return [token, Json(token.last_seq, snapshots.dumps())] if snapshots.feed(token.text) else [token]
    out, start, pending = [], token.first_seq, []
    for seq, piece in enumerate(pieces, start=token.first_seq):
        pending.append(piece)
        if snapshots.feed(piece):
            out += [Token(start, seq, "".join(pending), pending), Json(seq, snapshots.dumps())]
            start, pending = seq + 1, []
    if not out:
        return [token]
    if pending:
        out.append(Token(start, token.last_seq, "".join(pending), pending))
    return out


async def wait_for_end(generation_id, *, timeout: float, hub: Hub | None = None) -> End | None:
    """Wait until the generation ends; return its terminal event, or None on timeout."""
    hub = hub or get_hub()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    idle_check_s = settings.CHAT_STREAM_IDLE_CHECK_S
    async with hub.subscribe(stream_group(generation_id)) as subscription:
        while True:
            end = await load_end(generation_id)
            if end:
                return end
            while (remaining := deadline - loop.time()) > 0:
                batch = await subscription.batch(min(idle_check_s, remaining))
                if not batch or any(isinstance(event, End) for event in batch):
                    break  # Silence or an end: ask the database.
            else:
                return None
