"""Replay, then tail: the one implementation of following a generation.

Every transport (SSE, WebSocket) iterates `Follow` and only encodes. The rule:
subscribe to the hub first, replay persisted tokens after the client's last
event id, then tail the hub, dropping what was already sent and filling any
gap from the database before sending past it. The database is the source of
truth; the hub is a fast path that may drop anything, the end included.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from django.conf import settings

from .events import KEEPALIVE, End, Json, Keepalive, Snapshot, Token
from .hub import Hub, get_hub, stream_group
from .jsonstream import JsonSnapshots
from .models import Generation, TokenChunk

END_FIELDS = ("status", "last_seq", "finish_reason", "interrupt_reason", "error", "usage")


async def load_end(generation_id) -> End | None:
    """Return the generation's terminal event if it has ended, else None."""
    generation = await Generation.objects.filter(pk=generation_id).only(*END_FIELDS).afirst()
    if generation is None:
        # Deleted under us (its conversation was deleted): nothing more will come.
        return End(status=Generation.Status.CANCELLED, last_seq=0, reason="deleted")
    return End.of(generation) if generation.is_terminal else None


async def persisted_tokens(generation_id, after_seq: int, through: int | None = None) -> list[Token]:
    """Return the persisted tokens after `after_seq` (and up to `through`), one event per stored chunk."""
    chunks = TokenChunk.objects.filter(generation_id=generation_id, last_seq__gt=after_seq)
    if through is not None:
        chunks = chunks.filter(first_seq__lte=through)
    replay = []
    async for first_seq, last_seq, tokens in chunks.order_by("first_seq").values_list("first_seq", "last_seq", "tokens"):
        if first_seq > after_seq + 1:
            break  # Never skip: the missing tokens are not committed yet.
        if through is not None and last_seq > through:
            tokens, last_seq = tokens[: through - first_seq + 1], through
        skip = after_seq + 1 - first_seq
        replay.append(Token(first_seq + skip, last_seq, "".join(tokens[skip:]), tokens[skip:]))
        after_seq = last_seq
    return replay


async def answer_through(generation_id) -> tuple[str, int] | None:
    """The answer's text up to the generation's last token, and that token's sequence number.

    The assistant message holds the whole answer: the text of the generations
    a continuation continues, then its own, written when it ends. So a running
    generation's text there stops at its first_seq - 1, and an ended one's is
    the message minus what the continuations that ended after it appended.
    """
    row = await (
        Generation.objects.filter(pk=generation_id)
        .values("status", "first_seq", "last_seq", "assistant_message_id", "assistant_message__content")
        .afirst()
    )
    if row is None:
        return None
    text = row["assistant_message__content"]
    if row["status"] not in Generation.TERMINAL_STATUSES:
        return text, row["first_seq"] - 1
    later = (
        Generation.objects.filter(
            assistant_message_id=row["assistant_message_id"],
            first_seq__gt=row["last_seq"],
            status__in=Generation.TERMINAL_STATUSES,
        )
        .exclude(pk=generation_id)
        .order_by("-first_seq")
        .values_list("pk", "first_seq", "last_seq")
    )
    async for pk, first_seq, last_seq in later:
        tokens = await persisted_tokens(pk, first_seq - 1)
        tail = "".join(token.text for token in tokens)
        complete = last_seq < first_seq or (tokens and tokens[-1].last_seq == last_seq)
        if not complete or not text.endswith(tail):
            # Its tokens are pruned too: the text runs on, and following that
            # continuation ends with a snapshot that replaces it.
            break
        text = text[: len(text) - len(tail)]
    return text, row["last_seq"]


class Follow:
    """The events a client at `after_seq` must receive, up to one `End`.

    Iterate `events()` inside `contextlib.aclosing`, so that a client that goes
    away releases its hub subscription at once rather than at garbage collection.
    Only `events()` is a generator; its helpers return lists for the same reason.
    """

    def __init__(
        self,
        generation_id,
        *,
        after_seq: int = 0,
        coalesce_s: float = 0.0,
        hub: Hub | None = None,
        response_format: str | None = None,
    ):
        self.generation_id = generation_id
        self.sent = after_seq
        self.coalesce_s = coalesce_s
        self.hub = hub
        self.response_format = response_format  # Looked up if not given.
        self.idle_check_s = settings.CHAT_STREAM_IDLE_CHECK_S
        self.keepalive_s = settings.CHAT_STREAM_KEEPALIVE_S
        self.flush_interval_s = settings.CHAT_FLUSH_INTERVAL_S

    def events(self) -> AsyncIterator[Token | Json | End | Keepalive]:
        """The events to send: the tokens and the end, plus `json` events for a JSON answer."""
        if self.response_format == "text":
            return self.tail()
        return self.structured()

    async def structured(self) -> AsyncIterator[Token | Json | End | Keepalive]:
        """`tail()`, with a `json` event after each token that grows a JSON answer's snapshot.

        The parser restarts from the text the client already has (through
        `after_seq`), so a resumed client gets exactly the `json` events of
        the tokens after its last event id, the same as a client that stayed.
        """
        if self.response_format is None:
            found = Generation.objects.filter(pk=self.generation_id).values_list("response_format", flat=True)
            self.response_format = await found.afirst() or "text"
        snapshots, resend = await self.json_state() if self.response_format == "json" else (None, None)
        if resend is not None:
            yield resend
        async with aclosing(self.tail()) as events:
            async for event in events:
                if snapshots is None:
                    yield event
                elif isinstance(event, Snapshot):
                    snapshots = JsonSnapshots()
                    yield event
                    if snapshots.feed(event.text):
                        yield Json(event.last_seq, snapshots.dumps())
                elif isinstance(event, Token):
                    for piece in split_at_growth(event, snapshots):
                        yield piece
                elif isinstance(event, End):
                    if snapshots.finish():  # A top-level number completes only here.
                        yield Json(event.last_seq, snapshots.dumps())
                    yield event
                else:
                    yield event

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

    async def tail(self) -> AsyncIterator[Token | End | Keepalive]:
        """Replay, then tail: the tokens after the client's position, then the end."""
        hub = self.hub or get_hub()
        loop = asyncio.get_running_loop()
        async with hub.subscribe(stream_group(self.generation_id)) as subscription:
            for snapshot in await self.snapshot_if_behind():
                yield snapshot
            # An ended generation replays only up to its recorded end.
            end = await load_end(self.generation_id)
            for token in await self.catch_up(through=end.last_seq if end else None):
                yield token
            end = end or await load_end(self.generation_id)
            if end:
                for event in await self.finish(end):
                    yield event
                return
            last_sent_at = loop.time()
            lookahead = None
            while True:
                event, lookahead = lookahead or await subscription.get(self.idle_check_s), None
                if event is None:
                    # Silence: the hub may have dropped tokens or the end. Ask the database.
                    for token in await self.catch_up():
                        last_sent_at = loop.time()
                        yield token
                    end = await load_end(self.generation_id)
                    if end:
                        for event in await self.finish(end):
                            yield event
                        return
                    if loop.time() - last_sent_at >= self.keepalive_s:
                        last_sent_at = loop.time()
                        yield KEEPALIVE
                    continue
                if isinstance(event, End):
                    for event in await self.finish(event):
                        yield event
                    return
                if event.last_seq <= self.sent:
                    continue  # Already replayed from the database.
                if event.first_seq != self.sent + 1:
                    up_to = event.first_seq - 1 if event.first_seq > self.sent + 1 else event.last_seq
                    for token in await self.fill_gap(up_to):
                        yield token
                    if event.last_seq <= self.sent:
                        continue
                    if event.first_seq != self.sent + 1:
                        # The gap cannot be filled: the generation ended without persisting it.
                        end = await load_end(self.generation_id)
                        if end:
                            for event in await self.finish(end):
                                yield event
                            return
                        continue
                if self.coalesce_s > 0:
                    event, lookahead = await self.coalesce(event, subscription)
                self.sent = event.last_seq
                last_sent_at = loop.time()
                yield event

    async def catch_up(self, through: int | None = None) -> list[Token]:
        tokens = await persisted_tokens(self.generation_id, self.sent, through)
        if tokens:
            self.sent = tokens[-1].last_seq
        return tokens

    async def fill_gap(self, up_to: int) -> list[Token]:
        """Replay from the database up to `up_to`, waiting for flushes still on their way."""
        tokens = []
        while True:
            tokens += await self.catch_up()
            if self.sent >= up_to or await load_end(self.generation_id):
                return tokens
            await asyncio.sleep(self.flush_interval_s)

    async def finish(self, end: End) -> list[Token | End]:
        events = await self.catch_up(through=end.last_seq) if end.last_seq > self.sent else []
        if end.last_seq != self.sent:
            # Short: retention deleted the tokens. Past it: the run went on after it
            # was ended (reaped while alive). Either way the stored text, whole, wins.
            events += await self.snapshot()
        return [*events, end]

    async def snapshot_if_behind(self) -> list[Snapshot]:
        """Give a client from before a continuation's first token the text so far, in one snapshot.

        The tokens before first_seq belong to the generation it continues.
        """
        first_seq = await Generation.objects.filter(pk=self.generation_id).values_list("first_seq", flat=True).afirst()
        if first_seq is None or self.sent >= first_seq - 1:
            return []
        return await self.snapshot()

    async def snapshot(self) -> list[Snapshot]:
        """The stored answer through the generation's end, replacing whatever the client has."""
        found = await answer_through(self.generation_id)
        if found is None or found[1] == self.sent:
            return []
        text, seq = found
        snapshot = Snapshot(1, seq, text)
        self.sent = seq
        return [snapshot]

    async def coalesce(self, first: Token, subscription) -> tuple[Token, Token | End | None]:
        """Merge contiguous tokens arriving within the window; return the merged one and any leftover."""
        deadline = asyncio.get_running_loop().time() + self.coalesce_s
        texts, last_seq = [first.text], first.last_seq
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            event = await subscription.get(remaining)
            if event is None:
                break
            if not isinstance(event, Token) or event.first_seq != last_seq + 1:
                if isinstance(event, Token) and event.last_seq <= last_seq:
                    continue
                return self.merged(first, texts, last_seq), event
            texts.append(event.text)
            last_seq = event.last_seq
        return self.merged(first, texts, last_seq), None

    @staticmethod
    def merged(first: Token, texts: list[str], last_seq: int) -> Token:
        if len(texts) == 1:
            return first
        per_token = len(texts) == last_seq - first.first_seq + 1
        return Token(first.first_seq, last_seq, "".join(texts), texts if per_token else None)


def split_at_growth(token: Token, snapshots: JsonSnapshots) -> list[Token | Json]:
    """Feed a token event to the parser; cut it after each token that grows the snapshot, and add its `json` event.

    So a `json` event's id is always the seq of the token that completed its
    values, whatever batching (replay chunks, coalescing) the tokens came in.
    """
    parts = token.parts
    if parts is None or len(parts) != token.last_seq - token.first_seq + 1 or len(parts) == 1:
        # Token boundaries unknown (or one token): the event's last token takes the credit.
        return [token, Json(token.last_seq, snapshots.dumps())] if snapshots.feed(token.text) else [token]
    out, start, pending = [], token.first_seq, []
    for seq, part in enumerate(parts, start=token.first_seq):
        pending.append(part)
        if snapshots.feed(part):
            out += [Token(start, seq, "".join(pending), pending), Json(seq, snapshots.dumps())]
            start, pending = seq + 1, []
    if not out:
        return [token]
    if pending:
        out.append(Token(start, token.last_seq, "".join(pending), pending))
    return out


async def text_through(generation_id, seq: int) -> tuple[str, str | None]:
    """The answer's text through token `seq`, as (the text before it, its own text or None).

    Waits for tokens still on their way to the database.
    """
    row = await Generation.objects.filter(pk=generation_id).values("first_seq", "continued_from_id").afirst()
    if row is None:
        return "", None
    first_seq, text = row["first_seq"], ""
    if first_seq > 1 and row["continued_from_id"]:
        # A continuation: the text before it is the answer of the generation it continues.
        found = await answer_through(row["continued_from_id"])
        text = found[0] if found else ""
    if seq < first_seq:
        return text, None
    while True:
        tokens = await persisted_tokens(generation_id, first_seq - 1)
        covered = tokens[-1].last_seq if tokens else first_seq - 1
        if covered >= seq or await load_end(generation_id):
            break
        await asyncio.sleep(settings.CHAT_FLUSH_INTERVAL_S)
    parts = [part for token in tokens for part in token.parts][: seq - first_seq + 1]
    if len(parts) < seq - first_seq + 1:
        return text + "".join(parts), None  # Pruned or never stored: a snapshot will follow.
    return text + "".join(parts[:-1]), parts[-1]


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
                event = await subscription.get(min(idle_check_s, remaining))
                if event is None or isinstance(event, End):
                    break
            else:
                return None


async def persisted_answer(generation: Generation) -> tuple[str, int]:
    """The answer as the database has it, and the last sequence number it covers.

    For a running generation that is the text so far: the persisted chunks
    after what its assistant message already held.
    """
    prefix = await Generation.objects.filter(pk=generation.pk).values_list("assistant_message__content", flat=True).aget()
    if generation.is_terminal:
        return prefix, generation.last_seq
    tokens = await persisted_tokens(generation.pk, generation.first_seq - 1)
    last_seq = tokens[-1].last_seq if tokens else generation.first_seq - 1
    return prefix + "".join(token.text for token in tokens), last_seq
