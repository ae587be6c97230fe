"""The generation runner: produce an answer in the background, detached from any request.

    upstream provider --(bounded buffer)--> publish each token to the hub
                                            persist tokens in batches

A run belongs to the process, not to the request that started it: a client
that goes away stops nothing. Every way a run can end goes through `finish`,
which persists the remaining tokens and the terminal state in one
transaction before it publishes the end event, so no subscriber ever sees an
end that the database does not have.
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
from django.utils import timezone

from . import live
from .db import db_work
from .events import Cancel, End, Token
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


@dataclass
class _UpstreamError:
    """Failed or interrupted is decided when the consume loop reaches it, after the tokens before it."""

    error: str


class _Stop:
    """Wakes the consume loop after `request_stop`."""


class GenerationRun:
    def __init__(self, generation: Generation, provider: Provider, messages: list[ChatMessage], hub: Hub):
        self.generation_id = generation.id
        self.assistant_message_id = generation.assistant_message_id
        self.response_format = generation.response_format
        self.prefix = ""  # Text already in the assistant message (a continuation).
        self.first_seq = generation.first_seq
        self.seq = generation.first_seq - 1
        self.provider = provider
        self.messages = messages
        self.hub = hub
        self.buffer: asyncio.Queue = asyncio.Queue(settings.CHAT_UPSTREAM_BUFFER_TOKENS)
        self.texts: list[str] = []
        self.pending: list[str] = []
        self.first_token_at = None
        self.stop_fault: _Fault | None = None
        self.task: asyncio.Task | None = None

    def request_stop(self, status: str, reason: str = "") -> None:
        """Ask the run to end as `status`; it flushes and finishes on its own."""
        if self.stop_fault is None:
            self.stop_fault = _Fault(status, reason)
            try:
                self.buffer.put_nowait(_Stop())
            except asyncio.QueueFull:
                pass  # The consume loop is busy and checks stop_fault on its next item.

    async def run(self) -> None:
        pump = asyncio.get_running_loop().create_task(self.pump())
        watch = asyncio.get_running_loop().create_task(self.watch_control())
        try:
            await db_work(self.start)()
            outcome = await self.consume()
        except Exception as exc:  # A bug or a database failure: record it, never die silently.
            logger.exception("generation %s crashed", self.generation_id)
            outcome = self.fault_for_error(f"internal error: {exc.__class__.__name__}")
        finally:
            pump.cancel()
            watch.cancel()
        await self.finish(outcome)

    def start(self) -> None:
        close_old_connections()
        now = timezone.now()
        self.prefix = Message.objects.filter(pk=self.assistant_message_id).values_list("content", flat=True).get()
        Generation.objects.filter(pk=self.generation_id, status=Generation.Status.QUEUED).update(
            status=Generation.Status.STREAMING, worker=WORKER_ID, heartbeat_at=now
        )

    async def pump(self) -> None:
        """Read upstream into the buffer; only a stall or a fault stops it."""
        stream = self.provider.stream(self.messages, response_format=self.response_format)
        try:
            while True:
                async with asyncio.timeout(settings.CHAT_UPSTREAM_STALL_S):
                    item = await anext(stream)
                await self.buffer.put(item)
                if isinstance(item, Finish):
                    return
        except StopAsyncIteration:
            await self.buffer.put(_UpstreamError("upstream ended without a finish"))
        except TimeoutError:
            await self.buffer.put(
                _Fault(
                    Generation.Status.INTERRUPTED,
                    Generation.InterruptReason.UPSTREAM_STALL,
                    f"no token from upstream for {settings.CHAT_UPSTREAM_STALL_S:g} s",
                )
            )
        except ProviderError as exc:
            await self.buffer.put(_UpstreamError(str(exc)))
        except Exception as exc:
            logger.exception("provider %s crashed", self.provider.name)
            await self.buffer.put(_UpstreamError(f"provider error: {exc}"))
        finally:
            await stream.aclose()

    def fault_for_error(self, error: str) -> _Fault:
        if not self.texts:
            return _Fault(Generation.Status.FAILED, error=error)
        return _Fault(Generation.Status.INTERRUPTED, Generation.InterruptReason.UPSTREAM_ERROR, error)

    async def consume(self) -> Finish | _Fault:
        """Publish each token as it comes; the writer persists them in batches."""
        group = stream_group(self.generation_id)
        writer = get_writer()
        writer.add(self)
        while True:
            if self.stop_fault:
                return self.stop_fault
            item = await self.buffer.get()
            if isinstance(item, str):
                self.seq += 1
                self.texts.append(item)
                self.pending.append(item)
                if self.first_token_at is None:
                    self.first_token_at = timezone.now()
                await self.hub.publish(group, Token(self.seq, self.seq, item))
                writer.tokens_added(self)
            elif isinstance(item, _UpstreamError):
                return self.fault_for_error(item.error)
            elif not isinstance(item, _Stop):
                return item  # Finish or _Fault

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
        await self.hub.publish(stream_group(self.generation_id), end)
        await live.generation_changed(self.generation_id)

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
        try:
            cancelled = await db_work(beat)(list(_runs.values()))
        except Exception:
            logger.exception("heartbeat failed")
            continue
        for generation_id in cancelled:
            if run := _runs.get(generation_id):
                run.request_stop(Generation.Status.CANCELLED)


def beat(runs: list[GenerationRun]) -> list:
    """Refresh heartbeats and progress counters; return the runs to stop: flagged for cancelling, or already ended."""
    close_old_connections()
    now = timezone.now()
    ended = []
    with transaction.atomic():
        for run in runs:
            # Counts what was produced; the chunks on disk may trail it by one flush.
            active = Generation.objects.filter(pk=run.generation_id, status__in=Generation.ACTIVE_STATUSES).update(
                heartbeat_at=now,
                last_seq=run.seq,
                token_count=run.seq - run.first_seq + 1,
                first_token_at=run.first_token_at,
            )
            if not active and run.task and not run.task.done():
                ended.append(run.generation_id)  # by the reaper (it thought us dead) or an operator
    ids = [run.generation_id for run in runs]
    return ended + list(Generation.objects.filter(pk__in=ids, cancel_requested=True).values_list("pk", flat=True))


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
