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
"""

import asyncio
import contextvars
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from .actions.ends import generation_ended
from .db import db_work
from .events import Alive, Cancel, End, Token
from .hub import Hub, control_group, get_hub, stream_group
from .jsonstream import document_error
from .llm import ChatMessage, Finish, Provider, ProviderError, get_provider
from .models import Generation, Message, TokenChunk
from .writer import get_writer

logger = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Fault:
    status: str
    reason: str = ""
    error: str = ""


class GenerationRun:
    def __init__(self, generation: Generation, provider: Provider, messages: list[ChatMessage], hub: Hub):
        self.generation_id = generation.id
        self.group = stream_group(generation.id)
        self.assistant_message_id = generation.assistant_message_id
        self.response_format = generation.response_format
        self.prefix = ""  # Text already in the assistant message (a continuation).
        self.first_seq = generation.first_seq
        self.seq = generation.first_seq - 1
        self.provider = provider
        self.messages = messages
        self.hub = hub
        self.texts: list[str] = []  # Every token of this run: local followers replay from here.
        self.pending: list[str] = []  # Not yet handed to the writer.
        self.first_token_at = None
        self.beat_seq = self.seq  # Where the last heartbeat found the run; unchanged means quiet.
        self.end: End | None = None  # Set when the end is recorded, before it is published.
        self.stop_fault: _Fault | None = None
        self.task: asyncio.Task | None = None
        self.reader: asyncio.Task | None = None

    def tokens_after(self, seq: int) -> Token | None:
        """This run's tokens after `seq`, as one event; None if there are none."""
        start = max(seq, self.first_seq - 1) - self.first_seq + 1
        parts = self.texts[start:]
        if not parts:
            return None
        return Token(self.first_seq + start, self.first_seq + len(self.texts) - 1, "".join(parts), parts)

    def request_stop(self, status: str, reason: str = "") -> None:
        """Ask the run to end as `status`; it flushes and finishes on its own."""
        if self.stop_fault is None:
            self.stop_fault = _Fault(status, reason)
            if self.reader is not None:
                self.reader.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Cancels from other processes come through the hub; this process's go through request_stop.
        watch = loop.create_task(self.watch_control()) if self.hub.cross_process else None
        try:
            await db_work(self.start)()
            if self.stop_fault is None:
                self.reader = loop.create_task(self.consume())
                await asyncio.wait([self.reader])
            outcome = self.stop_fault if self.reader is None or self.reader.cancelled() else self.reader.result()
        except Exception as exc:  # A bug or a database failure: record it, never die silently.
            logger.exception("generation %s crashed", self.generation_id)
            outcome = self.fault_for_error(f"internal error: {exc.__class__.__name__}")
        finally:
            if watch is not None:
                watch.cancel()
        await self.finish(outcome)

    def start(self) -> None:
        close_old_connections()
        now = timezone.now()
        self.prefix = Message.objects.filter(pk=self.assistant_message_id).values_list("content", flat=True).get()
        Generation.objects.filter(pk=self.generation_id, status=Generation.Status.QUEUED).update(
            status=Generation.Status.STREAMING, worker=WORKER_ID, heartbeat_at=now
        )

    async def consume(self) -> Finish | _Fault:
        """Read upstream and hand each token on as it comes; the writer persists them in batches."""
        writer = get_writer()
        writer.add(self)
        stall_s = settings.CHAT_UPSTREAM_STALL_S
        loop = asyncio.get_running_loop()
        stream = self.provider.stream(self.messages, response_format=self.response_format)
        try:
            # One deadline, moved on by each token: no timer per token.
            async with asyncio.timeout(loop.time() + stall_s) as deadline:
                async for item in stream:
                    if not isinstance(item, str):
                        return item  # Finish
                    deadline.reschedule(loop.time() + stall_s)
                    self.seq += 1
                    self.texts.append(item)
                    self.pending.append(item)
                    if self.first_token_at is None:
                        self.first_token_at = timezone.now()
                    self.hub.publish_nowait(self.group, Token(self.seq, self.seq, item))
                    writer.tokens_added(self)
            return self.fault_for_error("upstream ended without a finish")
        except TimeoutError:
            return _Fault(
                Generation.Status.INTERRUPTED,
                Generation.InterruptReason.UPSTREAM_STALL,
                f"no token from upstream for {stall_s:g} s",
            )
        except ProviderError as exc:
            return self.fault_for_error(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("provider %s crashed", self.provider.name)
            return self.fault_for_error(f"provider error: {exc}")
        finally:
            await stream.aclose()

    def fault_for_error(self, error: str) -> _Fault:
        if not self.texts:
            return _Fault(Generation.Status.FAILED, error=error)
        return _Fault(Generation.Status.INTERRUPTED, Generation.InterruptReason.UPSTREAM_ERROR, error)

    def take_pending(self) -> TokenChunk | None:
        """Hand the tokens not yet persisted to the writer, as one chunk."""
        if not self.pending:
            return None
        tokens, self.pending = self.pending, []
        return TokenChunk(
            generation_id=self.generation_id, first_seq=self.seq - len(tokens) + 1, last_seq=self.seq, tokens=tokens
        )

    def restore_pending(self, chunk: TokenChunk | None) -> None:
        """Take back a chunk whose write failed; the next write retries it."""
        if chunk is not None:
            self.pending = chunk.tokens + self.pending

    async def finish(self, outcome: Finish | _Fault) -> None:
        if isinstance(outcome, Finish):
            status, reason, error = Generation.Status.COMPLETE, "", ""
            finish_reason, usage = outcome.reason, outcome.usage
            if self.response_format == "json" and (
                problem := await asyncio.to_thread(document_error, self.prefix + "".join(self.texts))
            ):
                # Complete, with the raw text kept, but flagged: the client cannot parse it.
                stopped = " (the model stopped at its token limit)" if finish_reason == "length" else ""
                finish_reason, error = "invalid_json", f"The answer is not valid JSON: {problem}{stopped}."
        else:
            status, reason, error = outcome.status, outcome.reason, outcome.error
            finish_reason, usage = "", {}
        end = End(status=status, last_seq=self.seq, finish_reason=finish_reason, reason=reason, error=error, usage=usage)
        writer = get_writer()
        try:
            for attempt in range(3):
                try:
                    end = await writer.finish(self, lambda chunk: self.persist_end(end, chunk))
                    break
                except Exception:
                    logger.exception("could not record the end of generation %s (attempt %d)", self.generation_id, attempt + 1)
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            writer.remove(self)
        self.end = end
        await generation_ended(self.generation_id, end, hub=self.hub)

    def persist_end(self, end: End, last_chunk: TokenChunk | None) -> End:
        """Record the end; return the end that stands, which is someone else's if they ended it first."""
        close_old_connections()
        with transaction.atomic():
            updated = Generation.objects.filter(pk=self.generation_id, status__in=Generation.ACTIVE_STATUSES).update(
                status=end.status,
                finish_reason=end.finish_reason,
                interrupt_reason=end.reason,
                error=end.error[:2000],
                usage=end.usage,
                last_seq=self.seq,
                token_count=len(self.texts),
                first_token_at=self.first_token_at,
                finished_at=timezone.now(),
            )
            if not updated:
                # The reaper or an operator ended it, with the tokens persisted by then as its
                # text; drop any chunk written since, so the stream ends where the text does.
                logger.warning("generation %s was ended by someone else; keeping their state", self.generation_id)
                stored = Generation.objects.filter(pk=self.generation_id).first()
                if stored is None:
                    return end  # Deleted with its conversation.
                TokenChunk.objects.filter(generation_id=self.generation_id, first_seq__gt=stored.last_seq).delete()
                return End.of(stored)
            if last_chunk is not None:
                last_chunk.save()
            Message.objects.filter(pk=self.assistant_message_id).update(
                content=self.prefix + "".join(self.texts), updated_at=timezone.now()
            )
        return end

    async def watch_control(self) -> None:
        """Stop on a cancel sent from any process through the hub."""
        async with self.hub.subscribe(control_group(self.generation_id)) as subscription:
            while True:
                event = await subscription.get(timeout=3600)
                if isinstance(event, Cancel):
                    self.request_stop(Generation.Status.CANCELLED)
                    return


# --- The process's runs ---------------------------------------------------

_runs: dict[uuid.UUID, GenerationRun] = {}
_heartbeat_task: asyncio.Task | None = None
shutting_down = False


def start_generation(generation: Generation, messages: list[ChatMessage], *, hub: Hub | None = None) -> GenerationRun:
    """Run the generation in this process, in a task that no request owns."""
    global _heartbeat_task
    install_shutdown_hook()
    run = GenerationRun(generation, get_provider(generation.provider), messages, hub or get_hub())
    loop = asyncio.get_running_loop()
    # A fresh context: the run must not inherit the request's thread-sensitive context.
    run.task = loop.create_task(run.run(), context=contextvars.Context())
    _runs[generation.id] = run
    run.task.add_done_callback(lambda task: _runs.pop(generation.id, None))
    if _heartbeat_task is None or _heartbeat_task.done():
        _heartbeat_task = loop.create_task(heartbeat_loop(), context=contextvars.Context())
    return run


def local_run(generation_id) -> GenerationRun | None:
    return _runs.get(generation_id)


def local_generation_ids() -> list:
    """The generations this process runs: alive, whatever their heartbeat says."""
    return list(_runs)


async def heartbeat_loop() -> None:
    """Refresh the heartbeat of this process's runs; stop those cancelled or ended elsewhere."""
    while _runs:
        await asyncio.sleep(settings.CHAT_HEARTBEAT_S)
        runs = list(_runs.values())
        try:
            stop = await db_work(beat)(runs)
        except Exception:
            logger.exception("heartbeat failed")
            continue
        for run in runs:
            if run.generation_id in stop:
                run.request_stop(Generation.Status.CANCELLED)
            elif run.seq == run.beat_seq and run.end is None and run.hub.cross_process:
                # Quiet: tell followers elsewhere that it lives, so they need not ask the database.
                await run.hub.publish(run.group, Alive(run.seq))
            run.beat_seq = run.seq


def beat(runs: list[GenerationRun]) -> set:
    """Refresh heartbeats and progress counters in one statement; return the runs to stop.

    Those are the ones flagged for cancelling, and the ones already ended by
    the reaper (it thought us dead) or an operator.
    """
    close_old_connections()
    ids = [run.generation_id for run in runs]
    # Counts what was produced; the chunks on disk may trail it by one flush.
    Generation.objects.filter(pk__in=ids, status__in=Generation.ACTIVE_STATUSES).update(
        heartbeat_at=timezone.now(),
        last_seq=Case(*(When(pk=run.generation_id, then=Value(run.seq)) for run in runs)),
        token_count=Case(*(When(pk=run.generation_id, then=Value(run.seq - run.first_seq + 1)) for run in runs)),
        first_token_at=Case(
            *(When(pk=run.generation_id, then=Value(run.first_token_at)) for run in runs if run.first_token_at),
            default="first_token_at",
        ),
    )
    live_ids = {run.generation_id for run in runs if run.task and not run.task.done()}
    return set(
        Generation.objects.filter(pk__in=live_ids)
        .filter(Q(cancel_requested=True) | ~Q(status__in=Generation.ACTIVE_STATUSES))
        .values_list("pk", flat=True)
    )


async def shutdown_runs(timeout: float = 10.0) -> None:
    """Stop every run as interrupted (server_shutdown), after flushing what it has."""
    global shutting_down
    shutting_down = True
    runs = list(_runs.values())
    for run in runs:
        run.request_stop(Generation.Status.INTERRUPTED, Generation.InterruptReason.SERVER_SHUTDOWN)
    if runs:
        logger.info("shutting down: stopping %d generation(s)", len(runs))
        await asyncio.wait([run.task for run in runs], timeout=timeout)


_hook_installed = False


def install_shutdown_hook() -> None:
    """Under Daphne (Twisted), stop the runs before the reactor stops.

    Daphne does not speak the ASGI lifespan protocol; servers that do (uvicorn)
    call `shutdown_runs` through the lifespan handler in project/asgi.py.
    """
    global _hook_installed
    if _hook_installed or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_runs()))
    )
    _hook_installed = True
