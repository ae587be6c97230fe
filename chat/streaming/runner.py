"""The generation runner: produce an answer in the background, detached from any request.

    upstream provider --> each token: to the local followers (directly) and to
                          other processes (batched, through the hub)
                      --> the process's token writer persists them in batches

A run belongs to the process, not to the request that started it: a client
that goes away stops nothing. A token costs one wake-up here (the upstream
read); everything else it triggers is a synchronous hand-off. Every way a run
can end goes through `finish`, which persists the remaining tokens and the
terminal state in one transaction before the end is published, so no
subscriber ever sees an end that the database does not have.

The same run serves both modes (CHAT_RUNNER). In-process, the web process that
took the POST starts it. In worker mode, a worker process claims the queued
generation (chat.streaming.workers) and starts it after its persisted tokens; it then
publishes each token only once it is persisted, so a worker that dies takes
no token a client saw with it, and the next run goes on from exactly where
every client is. A worker that stops hands its runs on instead of ending them;
so does an in-process server that stops, and the reaper of the next one to
start claims them and runs them here (one that was killed: `queue.rewind`).
"""

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..actions.ends import generation_end_write, generation_ended
from ..actions.queue import Claimed, generation_claim, queue_notify
from ..db import db_work
from ..llm import (
    REASONING,
    TEXT,
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
    get_provider,
)
from ..models import Generation, Message, TokenChunk
from . import registry
from .answers import AnswerParts
from .events import Cancel, End, Token
from .heartbeat import ensure_heartbeat
from .hub import Hub, control_group, get_hub, stream_group
from .jsonstream import document_error
from .registry import WORKER_ID, register
from .shutdown import install_shutdown_hook
from .writer import get_writer, insert_chunks

logger = logging.getLogger(__name__)

@dataclass
class _Fault:
    status: str
    reason: str = ""
    error: str = ""


# Not an end: back to the queue, for another worker to go on from the last token.
HAND_ON = _Fault(Generation.Status.QUEUED)


def initial_state() -> dict:
    """A new generation's run fields: in-process, already streaming here (its run records no start of
    its own); in worker mode, queued for nobody yet."""
    if settings.CHAT_RUNNER == "inprocess":
        return {"status": Generation.Status.STREAMING, "worker": WORKER_ID, "runs": 1, "heartbeat_at": timezone.now()}
    return {"status": Generation.Status.QUEUED, "worker": ""}


class GenerationRun:
    # One per running answer, for as long as it runs: no per-instance dict.
    __slots__ = (
        "generation_id", "group", "assistant_message_id", "conversation_id", "user_message_id", "owner_id",
        "response_format", "generation_first_seq", "started", "prefix", "first_seq", "seq", "runs", "durable_first",
        "persisted_seq", "unwritten_limit", "written", "saved_tail", "provider", "messages", "hub", "texts", "pending",
        "part", "spans", "sealed", "reasoning_since", "reasoning_s",
        "first_token_at", "beat_seq", "end", "stop_fault", "task", "reading", "last_token_at", "stall_timer",
        "queued_behind_it",
    )

    def __init__(
        self,
        generation: Generation,
        provider: Provider,
        messages: list[ChatMessage],
        hub: Hub,
        *,
        prefix: AnswerParts | None = None,
        after_seq: int | None = None,
    ):
        self.generation_id = generation.id
        self.group = stream_group(generation.id)
        self.assistant_message_id = generation.assistant_message_id
        self.conversation_id = generation.conversation_id
        self.user_message_id = generation.user_message_id
        self.owner_id = generation.conversation.owner_id  # The conversation comes loaded with the generation.
        self.response_format = generation.response_format
        self.generation_first_seq = generation.first_seq
        # Given the answer so far, the run's row already names this process (created so, or
        # claimed by a worker); otherwise `start` records that and reads the answer.
        self.started = prefix is not None
        self.prefix = prefix or AnswerParts()
        self.first_seq = generation.first_seq if after_seq is None else after_seq + 1  # This run's first token.
        self.seq = self.first_seq - 1
        self.runs = generation.runs
        self.durable_first = settings.CHAT_RUNNER == "workers"
        self.persisted_seq = self.seq
        self.unwritten_limit = settings.CHAT_MAX_UNWRITTEN_TOKENS
        self.written: asyncio.Future | None = None  # Awaited while the run is that far ahead of the database.
        self.saved_tail: list[TokenChunk] = []  # The last chunks, written with the end or the hand-on.
        self.provider = provider
        self.messages = messages
        self.hub = hub
        self.texts: list[str] = []  # Every token of this run: local followers replay from here.
        self.part: str | None = None  # The part of the last token.
        self.spans: list[tuple[int, str]] = []  # (first seq, part) of each span of this run's tokens of one part.
        self.pending: list[str] = []  # Not yet handed to the writer, all of `part`.
        self.sealed: list[TokenChunk] = []  # Not yet handed to the writer, of the parts before `part`.
        self.reasoning_since: float | None = None  # When the current reasoning span began (monotonic clock).
        self.reasoning_s = 0.0  # Time spent in earlier reasoning spans.
        self.first_token_at = None
        self.beat_seq = self.seq  # Where the last heartbeat found the run; unchanged means quiet.
        self.end: End | None = None  # Set when the end is recorded, before it is published.
        self.stop_fault: _Fault | None = None
        self.task: asyncio.Task | None = None
        self.reading = False  # Reading upstream: what a stop interrupts.
        self.last_token_at = 0.0  # Loop time of the last token from upstream (or of the start).
        self.stall_timer: asyncio.TimerHandle | None = None
        self.queued_behind_it = False  # An answer waits for this one's end (multitask "enqueue").

    # What a follower (stream.Follow) reads of a run: `first_seq`, `end`, `alive` and `tokens_after`.

    @property
    def alive(self) -> bool:
        """Still running here: its tokens and its end will come from this run."""
        return self.task is not None and not self.task.done()

    def tokens_after(self, seq: int) -> list[Token]:
        """This run's tokens after `seq`, one event per part."""
        events = []
        bounds = [*self.spans, (self.seq + 1, None)]
        for (first, part), (following, _) in zip(bounds, bounds[1:]):
            start = max(seq + 1, first)
            if start < following:
                pieces = self.texts[start - self.first_seq : following - self.first_seq]
                events.append(Token(start, following - 1, "".join(pieces), pieces, part))
        return events

    def answer(self) -> AnswerParts:
        """The whole answer so far: the prefix, then this run's tokens."""
        return self.prefix.plus(self.tokens_after(self.first_seq - 1))

    def request_stop(self, status: str, reason: str = "") -> None:
        """Ask the run to end as `status` (`queued`: to hand on); it flushes and finishes on its own."""
        self.stop(HAND_ON if status == HAND_ON.status else _Fault(status, reason))

    def stop(self, fault: _Fault) -> None:
        if self.stop_fault is None:
            self.stop_fault = fault
            if self.reading:
                self.task.cancel()  # Upstream may be silent: stop waiting for it (`run` takes this cancel back).

    def watch_for_stall(self, stall_s: float) -> None:
        """End the run if upstream sent nothing for `stall_s`; else look again when it would be.

        One timer per stall period, not one moved on by every token: a timer per
        token is 6 % of the CPU at 100 streams.
        """
        loop = asyncio.get_running_loop()
        quiet_s = loop.time() - self.last_token_at
        if quiet_s >= stall_s:
            error = f"no token from upstream for {stall_s:g} s"
            self.stop(_Fault(Generation.Status.INTERRUPTED, Generation.InterruptReason.UPSTREAM_STALL, error))
        elif self.stop_fault is None:
            self.stall_timer = loop.call_later(stall_s - quiet_s, self.watch_for_stall, stall_s)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Cancels from other processes come through the hub; this process's go through request_stop.
        watch = loop.create_task(self.watch_control()) if self.hub.cross_process else None
        outcome = None
        try:
            if not self.started:
                await db_work(self.start)()
            if self.stop_fault is None:
                self.reading = True
                try:
                    outcome = await self.consume()
                except asyncio.CancelledError:
                    # A stop cancels the run while it reads; a cancel of the run itself must go on.
                    if self.stop_fault is None or asyncio.current_task().uncancel() > 0:
                        raise
                finally:
                    self.reading = False
        except Exception as exc:  # A bug or a database failure: record it, never die silently.
            logger.exception("generation %s crashed", self.generation_id)
            outcome = self.fault_for_error(f"internal error: {exc.__class__.__name__}")
        finally:
            if watch is not None:
                watch.cancel()
        await self.finish(self.stop_fault if outcome is None else outcome)

    def start(self) -> None:
        close_old_connections()
        now = timezone.now()
        self.prefix = AnswerParts(*Message.objects.filter(pk=self.assistant_message_id).values_list("content", "reasoning").get())
        Generation.objects.filter(pk=self.generation_id, status=Generation.Status.QUEUED).update(
            status=Generation.Status.STREAMING, worker=WORKER_ID, heartbeat_at=now, runs=F("runs") + 1
        )

    async def consume(self) -> Finish | _Fault:
        """Read upstream and hand each token on as it comes; the writer persists them in batches."""
        writer = get_writer()
        writer.add(self)
        loop = asyncio.get_running_loop()
        stream = self.provider.stream(self.messages, response_format=self.response_format)
        self.last_token_at = loop.time()
        self.watch_for_stall(settings.CHAT_UPSTREAM_STALL_S)
        try:
            async for item in stream:
                if type(item) is str:
                    part, text = TEXT, item
                elif isinstance(item, Delta):
                    part, text = item.part, item.text
                else:
                    return item  # Finish
                self.last_token_at = loop.time()
                if self.seq - self.persisted_seq >= self.unwritten_limit:
                    await self.catch_up(writer)
                if part != self.part:
                    self.begin_part(part)
                self.seq += 1
                self.texts.append(text)
                self.pending.append(text)
                if self.first_token_at is None:
                    self.first_token_at = timezone.now()
                if not self.durable_first:
                    self.hub.publish_nowait(self.group, Token(self.seq, self.seq, text, None, part))
                writer.tokens_added(self)
            return self.fault_for_error("upstream ended without a finish")
        except ProviderError as exc:
            return self.fault_for_error(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("provider %s crashed", self.provider.name)
            return self.fault_for_error(f"provider error: {exc}")
        finally:
            if self.stall_timer is not None:
                self.stall_timer.cancel()
            await stream.aclose()

    async def catch_up(self, writer) -> None:
        """Hold the next token until the database has caught up: a crash then loses at most
        `unwritten_limit` tokens that a client saw, however slow the writes."""
        self.written = asyncio.get_running_loop().create_future()
        writer.wake.set()
        try:
            await self.written
        finally:
            self.written = None

    def fault_for_error(self, error: str) -> _Fault:
        if not self.texts:
            return _Fault(Generation.Status.FAILED, error=error)
        return _Fault(Generation.Status.INTERRUPTED, Generation.InterruptReason.UPSTREAM_ERROR, error)

    def begin_part(self, part: str) -> None:
        """The next token starts a span of `part`: a chunk holds one part, so seal the pending tokens as one."""
        if self.pending:
            self.sealed.append(self.pending_chunk())
        self.reasoning_s = self.reasoning_elapsed_s()
        self.reasoning_since = time.monotonic() if part == REASONING else None
        self.part = part
        self.spans.append((self.seq + 1, part))

    def reasoning_elapsed_s(self) -> float:
        """The time this run has spent reasoning, the current span included."""
        if self.reasoning_since is None:
            return self.reasoning_s
        return self.reasoning_s + time.monotonic() - self.reasoning_since

    def pending_chunk(self) -> TokenChunk:
        tokens, self.pending = self.pending, []
        return TokenChunk(
            generation_id=self.generation_id,
            first_seq=self.seq - len(tokens) + 1,
            last_seq=self.seq,
            tokens=tokens,
            part=self.part,
        )

    def take_pending(self) -> list[TokenChunk]:
        """Hand the tokens not yet persisted to the writer: a chunk per part, in order (usually one)."""
        chunks, self.sealed = self.sealed, []
        if self.pending:
            chunks.append(self.pending_chunk())
        return chunks

    def persisted(self, chunk: TokenChunk) -> None:
        """The writer committed `chunk`: in worker mode, now its tokens go out."""
        self.persisted_seq = chunk.last_seq
        if self.written is not None and not self.written.done():
            self.written.set_result(None)
        if self.durable_first:
            text = "".join(chunk.tokens)
            self.hub.publish_nowait(self.group, Token(chunk.first_seq, chunk.last_seq, text, chunk.tokens, chunk.part))

    @property
    def token_count(self) -> int:
        return self.seq - self.generation_first_seq + 1

    def restore_pending(self, chunks: list[TokenChunk]) -> None:
        """Take back chunks whose write failed, before anything pending since; the next write retries them."""
        self.sealed[:0] = chunks

    async def finish(self, outcome: Finish | _Fault) -> None:
        if outcome is HAND_ON:
            end, write = None, self.persist_hand_on
        else:
            end = await self.end_for(outcome)
            write = lambda chunk: self.persist_end(end, chunk)  # noqa: E731
        writer = get_writer()
        result = end
        try:
            for attempt in range(3):
                try:
                    result = await writer.finish(self, write)
                    break
                except Exception:
                    logger.exception("could not record the end of generation %s (attempt %d)", self.generation_id, attempt + 1)
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            writer.remove(self)
        for chunk in self.saved_tail:
            self.persisted(chunk)  # Before the end, which `publish` sends after the group's tokens.
        if result is None:
            return  # Handed on, or another worker runs it now: not ours to end.
        self.end = result
        await generation_ended(self.generation_id, result, hub=self.hub)
        if self.queued_behind_it:
            await run_queued()

    async def end_for(self, outcome: Finish | _Fault) -> End:
        if isinstance(outcome, Finish):
            status, reason, error = Generation.Status.COMPLETE, "", ""
            finish_reason, usage = outcome.reason, outcome.usage
            if self.response_format == "json" and (
                problem := await asyncio.to_thread(document_error, self.answer().text)
            ):
                # Complete, with the raw text kept, but flagged: the client cannot parse it.
                stopped = " (the model stopped at its token limit)" if finish_reason == "length" else ""
                finish_reason, error = "invalid_json", f"The answer is not valid JSON: {problem}{stopped}."
        else:
            status, reason, error = outcome.status, outcome.reason, outcome.error
            finish_reason, usage = "", {}
        return End(status=status, last_seq=self.seq, finish_reason=finish_reason, reason=reason, error=error, usage=usage)

    def ours(self):
        """The generation's row while this run still owns it (nobody ended or handed it on)."""
        return Generation.objects.filter(pk=self.generation_id, status__in=Generation.ACTIVE_STATUSES, worker=WORKER_ID)

    def progress(self) -> dict:
        return {
            "last_seq": self.seq,
            "token_count": self.token_count,
            # The first run's first token is the answer's.
            "first_token_at": Coalesce(F("first_token_at"), Value(self.first_token_at, output_field=DateTimeField())),
            "reasoning_ms": F("reasoning_ms") + round(self.reasoning_elapsed_s() * 1000),
        }

    def persist_end(self, end: End, last_chunks: list[TokenChunk]) -> End | None:
        """Record the end; return the end that stands (someone else's if they ended it first), None if not ours."""
        close_old_connections()
        with transaction.atomic():
            row = {
                "id": self.generation_id,
                "conversation_id": self.conversation_id,
                "user_message_id": self.user_message_id,
                "assistant_message_id": self.assistant_message_id,
            }
            # The row is at hand: the owner's devices hear of the end at its commit with no read of it.
            if not generation_end_write(self.ours(), end, self.answer(), row=row, owner_id=self.owner_id, **self.progress()):
                return self.ended_elsewhere(default=end)
            self.save_tail(last_chunks)
            if Generation.objects.filter(queued_behind_id=self.generation_id, status=Generation.Status.QUEUED).exists():
                self.queued_behind_it = True
                queue_notify()  # Its turn now: wake the workers (in-process, `finish` runs it).
        return end

    def persist_hand_on(self, last_chunks: list[TokenChunk]) -> End | None:
        """Put the generation back in the queue after its last tokens, for another worker to go on from there."""
        close_old_connections()
        with transaction.atomic():
            updated = self.ours().update(
                status=Generation.Status.QUEUED, worker="", heartbeat_at=timezone.now(), **self.progress()
            )
            if not updated:
                return self.ended_elsewhere(default=None)
            self.save_tail(last_chunks)
            queue_notify()
        logger.info("handed generation %s on at seq %d", self.generation_id, self.seq)
        return None

    def save_tail(self, chunks: list[TokenChunk]) -> None:
        insert_chunks(chunks)
        self.saved_tail = chunks

    def ended_elsewhere(self, *, default: End | None) -> End | None:
        stored = Generation.objects.filter(pk=self.generation_id).first()
        if stored is None:
            return default  # Deleted with its conversation.
        if not stored.is_terminal:
            # Taken for dead and handed on: another worker runs it now, from its persisted tokens.
            logger.warning("generation %s was handed on to %s; leaving it to them", self.generation_id, stored.worker or "the queue")
            return None
        # The reaper or an operator ended it, with the tokens persisted by then as its
        # text; drop any chunk written since, so the stream ends where the text does.
        logger.warning("generation %s was ended by someone else; keeping their state", self.generation_id)
        TokenChunk.objects.filter(generation_id=self.generation_id, first_seq__gt=stored.last_seq).delete()
        return End.of(stored)

    async def watch_control(self) -> None:
        """Stop on a cancel sent from any process through the hub."""
        async with self.hub.subscribe(control_group(self.generation_id)) as subscription:
            while True:
                event = await subscription.get(timeout=3600)
                if isinstance(event, Cancel):
                    self.request_stop(Generation.Status.CANCELLED)
                    return


def start_generation(
    generation: Generation,
    messages: list[ChatMessage],
    *,
    hub: Hub | None = None,
    prefix: AnswerParts | None = None,
    after_seq: int | None = None,
) -> GenerationRun:
    """Run the generation in this process, in a task that no request owns.

    `prefix` is the answer so far, for a generation already recorded as
    running here (a new one, or one claimed after `after_seq`).
    """
    install_shutdown_hook()
    provider = get_provider(generation.provider, model=generation.model, variant=generation.variant)
    run = GenerationRun(generation, provider, messages, hub or get_hub(), prefix=prefix, after_seq=after_seq)
    # A fresh context: the run must not inherit the request's thread-sensitive context, nor
    # keep what the request stored in it.
    context = contextvars.Context()
    run.task = asyncio.get_running_loop().create_task(run.run(), context=context)
    register(run, context)
    ensure_heartbeat()
    return run


def start_claimed(item: Claimed) -> GenerationRun:
    """Run a claimed (queued, handed-on) generation here, going on after its persisted tokens."""
    run = start_generation(item.generation, item.messages, prefix=item.prefix, after_seq=item.after_seq)
    if item.generation.cancel_requested:
        run.request_stop(Generation.Status.CANCELLED)  # Cancelled while it waited in the queue.
    return run


async def run_queued() -> None:
    """In-process: run here the queued answers nobody runs (handed on by a process that stopped, or enqueued
    behind an answer that has ended). In worker mode the workers claim them."""
    if settings.CHAT_RUNNER != "inprocess" or registry.shutting_down:
        return
    while claimed := await db_work(generation_claim)(worker=WORKER_ID, limit=200):
        for item in claimed:
            start_claimed(item)
            logger.info("running queued generation %s here (run %d)", item.generation.id, item.generation.runs)
