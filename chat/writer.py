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
from django.db import close_old_connections

from .db import db_work
from .models import TokenChunk

logger = logging.getLogger(__name__)


class TokenWriter:
    def __init__(self):
        self.runs: set = set()
        self.lock = asyncio.Lock()  # One write at a time keeps every run's chunks in order.
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def add(self, run) -> None:
        self.runs.add(run)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.loop(), context=contextvars.Context())

    def tokens_added(self, run) -> None:
        if len(run.pending) >= settings.CHAT_FLUSH_MAX_TOKENS:
            self.wake.set()

    async def loop(self) -> None:
        while self.runs:
            try:
                async with asyncio.timeout(settings.CHAT_FLUSH_INTERVAL_S):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            batch = [(run, run.take_pending()) for run in list(self.runs) if run.pending]
            if not batch:
                return
            try:
                await db_work(write_chunks)([chunk for _, chunk in batch])
            except Exception:
                logger.exception("writing %d token chunks failed; they are kept for the next flush", len(batch))
                for run, chunk in batch:
                    run.restore_pending(chunk)

    async def finish(self, run, write_end):
        """Write the run's last tokens and its end in one transaction, after all its earlier chunks."""
        async with self.lock:
            chunk = run.take_pending()
            try:
                return await db_work(write_end)(chunk)
            except Exception:
                run.restore_pending(chunk)
                raise

    def remove(self, run) -> None:
        self.runs.discard(run)


def write_chunks(chunks: list[TokenChunk]) -> None:
    """Insert every run's new chunk with one statement.

    The generations' own counters (last_seq, token_count) are not touched here:
    readers derive them from the chunks, and the heartbeat refreshes them.
    """
    close_old_connections()
    TokenChunk.objects.bulk_create(chunks)


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TokenWriter]" = weakref.WeakKeyDictionary()


def get_writer() -> TokenWriter:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = TokenWriter()
    return writer
