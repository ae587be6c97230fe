"""Persist the tokens of every running generation in one transaction per interval.

A per-run flush would cost one transaction per generation every 50 ms; at a
few tokens per flush that transaction dominated the cost of a token. One
writer per process gathers what every run has pending and writes it with one
bulk INSERT, whatever the number of generations.
"""

import asyncio
import contextvars
import logging
import weakref

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from ..db import db_work
from ..models import Generation, TokenChunk
from .registry import WORKER_ID

logger = logging.getLogger(__name__)

# The writer waits at least this many times its last flush's duration before the next one (unless a
# run is too far ahead of the database): at most a tenth of the process's time goes to writing. Not in
# worker mode, where a token goes out only once written: there every flush interval is latency.
BACKOFF = 9
# But never longer than this: a flush slowed by a locked or distant database says little of the next.
MAX_GAP_S = 1.0


class TokenWriter:
    def __init__(self):
        self.runs: set = set()
        # The runs with tokens pending: a flush looks at these, not at every run (1,000 idle answers
        # scanned every 50 ms were a third of an idle process's CPU).
        self.dirty: set = set()
        self.lock = asyncio.Lock()  # One write at a time keeps every run's chunks in order.
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        # Read once: a lookup on Django's lazy settings for every token was 4 % of a loaded process's CPU.
        self.max_tokens = settings.CHAT_FLUSH_MAX_TOKENS
        self.interval_s = settings.CHAT_FLUSH_INTERVAL_S
        self.backoff = 0 if settings.CHAT_RUNNER == "workers" else BACKOFF  # 0: the interval alone.

    def add(self, run) -> None:
        self.runs.add(run)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.loop(), context=contextvars.Context())

    def tokens_added(self, run) -> None:
        self.dirty.add(run)
        # A worker's run publishes only what is written: its first token goes at once, not after a flush interval.
        if len(run.pending) >= self.max_tokens or (run.durable_first and run.persisted_seq < run.first_seq):
            self.wake.set()

    async def loop(self) -> None:
        clock = asyncio.get_running_loop()
        gap = self.interval_s
        while self.runs:
            try:
                async with asyncio.timeout(gap):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            started = clock.time()
            await self.flush()
            # A flush costs mostly per row, one per run with tokens, whatever their number: under load,
            # write bigger chunks less often, rather than spend ever more of the process writing.
            gap = max(self.interval_s, min(self.backoff * (clock.time() - started), MAX_GAP_S))

    async def flush(self) -> None:
        async with self.lock:
            dirty, self.dirty = self.dirty, set()
            batch = [(run, chunks) for run in dirty if (chunks := run.take_pending())]
            if not batch:
                return
            fence = {run.generation_id for run, _ in batch if run.durable_first}
            try:
                written = await db_work(write_chunks)([chunk for _, chunks in batch for chunk in chunks], fence=fence)
            except Exception:
                logger.exception("writing the token chunks of %d runs failed; they are kept for the next flush", len(batch))
                for run, chunks in batch:
                    run.restore_pending(chunks)
                    self.dirty.add(run)
                return
            for run, chunks in batch:
                if run.generation_id in written:
                    for chunk in chunks:
                        run.persisted(chunk)

    async def finish(self, run, write_end):
        """Write the run's last tokens and its end in one transaction, after all its earlier chunks."""
        async with self.lock:
            chunks = run.take_pending()
            try:
                return await db_work(write_end)(chunks)
            except Exception:
                run.restore_pending(chunks)
                raise

    def remove(self, run) -> None:
        self.runs.discard(run)
        self.dirty.discard(run)


def write_chunks(chunks: list[TokenChunk], *, fence=frozenset()) -> set:
    """Insert every run's new chunk with one statement; return the generations written to.

    The generations in `fence` (worker mode) are written only while this
    process still runs them: a worker taken for dead, whose generation went to
    another worker, must not write into that worker's stream. On PostgreSQL
    the check holds a KEY SHARE lock to the commit, which the reaper's and the
    claim's FOR UPDATE SKIP LOCKED step around, and the heartbeat's UPDATE does not wait for.

    The generations' own counters (last_seq, token_count) are not touched here:
    readers derive them from the chunks, and the heartbeat refreshes them.
    """
    close_old_connections()
    if not fence:
        insert_chunks(chunks)
        return {chunk.generation_id for chunk in chunks}
    with transaction.atomic():
        owned = owned_generations(fence)
        chunks = [chunk for chunk in chunks if chunk.generation_id not in fence or chunk.generation_id in owned]
        insert_chunks(chunks)
    return {chunk.generation_id for chunk in chunks}


CHUNK_FIELDS = ("generation", "first_seq", "last_seq", "tokens", "part", "created_at")


def insert_chunks(chunks: list[TokenChunk]) -> None:
    """One INSERT of every chunk, written as SQL.

    `bulk_create` builds and compiles the statement field by field for every
    chunk: at 100 streams that was a third of the process's CPU.
    """
    if not chunks:
        return
    meta, quote = TokenChunk._meta, connection.ops.quote_name
    generation, _, _, tokens, _, created_at = fields = [meta.get_field(name) for name in CHUNK_FIELDS]
    now = created_at.get_db_prep_value(timezone.now(), connection)
    params = []
    for chunk in chunks:
        params += [
            generation.get_db_prep_value(chunk.generation_id, connection),
            chunk.first_seq,
            chunk.last_seq,
            tokens.get_db_prep_value(chunk.tokens, connection),
            chunk.part,
            now,
        ]
    row = f"({', '.join(['%s'] * len(fields))})"
    columns = ", ".join(quote(field.column) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(chunks))}", params)


def owned_generations(ids) -> set:
    owned = Generation.objects.filter(pk__in=ids, status=Generation.Status.STREAMING, worker=WORKER_ID)
    if connection.vendor != "postgresql":
        return set(owned.values_list("pk", flat=True))
    sql, params = owned.values_list("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} FOR KEY SHARE", params)
        return {row[0] for row in cursor.fetchall()}


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TokenWriter]" = weakref.WeakKeyDictionary()


def get_writer() -> TokenWriter:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = TokenWriter()
    return writer
