"""A generation worker: a process apart from the web tier that claims queued answers and runs them.

`manage.py run_generations` runs one (CHAT_RUNNER=workers; docs/deploy.md).
It claims queued generations (chat.actions.queue) up to CHAT_WORKER_CAPACITY
at once and runs each with the same `GenerationRun` as the in-process mode;
the tokens reach the web processes through the channel layer (Redis).

It is woken by PostgreSQL LISTEN/NOTIFY, which the web process sends when it
queues an answer and a worker when it hands one on; a poll every
CHAT_WORKER_POLL_S is the safety net. Its heartbeat (a `Worker` row) reports
its load; its runs heartbeat their generations as in-process runs do, and it
runs the reaper like every server process.

SIGTERM (or SIGINT) drains it: it stops claiming, lets its answers run up to
CHAT_WORKER_DRAIN_S, then hands the rest on (CHAT_AUTO_CONTINUE) so that
another worker continues each in place; a second signal hands on at once.
"""

import asyncio
import logging
import signal

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from ..actions.queue import QUEUE_CHANNEL, Claimed, generation_claim
from ..db import db_work
from ..models import Worker
from . import reaper, registry, runner
from .shutdown import shutdown_runs

logger = logging.getLogger(__name__)

# A Worker row this many heartbeat-stale windows old belongs to a process gone without a word.
FORGET_AFTER_STALE = 10


class GenerationWorker:
    def __init__(self, *, capacity: int, drain_s: float, poll_s: float, claim_batch: int):
        self.name = registry.WORKER_ID
        self.capacity = capacity
        self.drain_s = drain_s
        self.poll_s = poll_s
        self.claim_batch = claim_batch
        self.full = False  # The last claim stopped at capacity: a run that ends frees a place.
        self.draining = False

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.hand_on_now = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        background = [loop.create_task(self.listen()), loop.create_task(self.heartbeat_loop())]
        reaper.ensure_running()
        await db_work(self.report)()
        logger.info("worker %s ready: up to %d answers at once", self.name, self.capacity)
        try:
            await self.claim_loop()
            await self.drain()
        finally:
            for task in background:
                task.cancel()
            await db_work(Worker.objects.filter(pk=self.name).delete)()
        logger.info("worker %s stopped", self.name)

    def stop(self) -> None:
        if self.stopping.is_set():
            self.hand_on_now.set()  # A second signal: no more waiting.
        self.stopping.set()
        self.wake.set()

    async def claim_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()  # Before claiming: a notice that comes during the claim is not lost.
            free = self.capacity - len(registry.local_generation_ids())
            self.full = free <= 0
            if not self.full:
                limit = min(free, self.claim_batch)
                try:
                    claimed = await db_work(generation_claim)(worker=self.name, limit=limit)
                except Exception:  # The database may be briefly away; the poll tries again.
                    logger.exception("claiming queued generations failed")
                    claimed = []
                for item in claimed:
                    self.start(item)
                if len(claimed) == limit:
                    continue  # There may be more.
            try:
                async with asyncio.timeout(self.poll_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def start(self, item: Claimed) -> None:
        generation = item.generation
        run = runner.start_claimed(item)
        run.task.add_done_callback(self.run_done)
        logger.debug("claimed generation %s (run %d, after seq %d)", generation.id, generation.runs, item.after_seq)

    def run_done(self, task) -> None:
        if self.full:
            self.wake.set()

    async def drain(self) -> None:
        """Let the running answers finish, up to the drain timeout; then hand the rest on."""
        self.draining = True
        runs = [registry.local_run(generation_id) for generation_id in registry.local_generation_ids()]
        tasks = [run.task for run in runs if run is not None]
        if tasks:
            logger.info("worker %s draining: %d answer(s), up to %g s", self.name, len(tasks), self.drain_s)
            await db_work(self.report)()
            everything = asyncio.gather(*tasks, return_exceptions=True)
            interrupt = asyncio.ensure_future(self.hand_on_now.wait())
            await asyncio.wait([everything, interrupt], timeout=self.drain_s, return_when=asyncio.FIRST_COMPLETED)
            interrupt.cancel()
        await shutdown_runs()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(settings.CHAT_HEARTBEAT_S)
            try:
                await db_work(self.report)()
            except Exception:
                logger.exception("worker heartbeat failed")

    def report(self) -> None:
        """Heartbeat this worker's row with its load; forget the rows of workers long gone."""
        close_old_connections()
        now = timezone.now()
        state = {"running": len(registry.local_generation_ids()), "draining": self.draining, "heartbeat_at": now}
        if not Worker.objects.filter(pk=self.name).update(**state):
            Worker.objects.create(name=self.name, capacity=self.capacity, **state)
        gone = now - timezone.timedelta(seconds=FORGET_AFTER_STALE * settings.CHAT_HEARTBEAT_STALE_S)
        Worker.objects.filter(heartbeat_at__lt=gone).delete()

    async def listen(self) -> None:
        """Wake on every NOTIFY of the queue channel (PostgreSQL only: elsewhere the poll does it)."""
        if connection.vendor != "postgresql":
            return
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)  # Django's is a sync cursor.
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {QUEUE_CHANNEL}")
                    self.wake.set()  # Whatever was queued while nobody listened.
                    async for _notice in listener.notifies():
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("listening for queued generations failed (%s); polling until it is back", exc)
                await asyncio.sleep(self.poll_s)
