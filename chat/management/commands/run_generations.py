import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...streaming.workers import GenerationWorker


class Command(BaseCommand):
    help = (
        "Run a generation worker (CHAT_RUNNER=workers): claim queued answers and run them, many at once. "
        "SIGTERM drains it: no new claims, running answers finish or, after the drain timeout, go on in another worker."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--capacity", type=int, default=settings.CHAT_WORKER_CAPACITY, help="Answers at once (CHAT_WORKER_CAPACITY)."
        )
        parser.add_argument(
            "--drain-timeout",
            type=float,
            default=settings.CHAT_WORKER_DRAIN_S,
            help="Seconds a stopping worker lets its answers run before handing them on (CHAT_WORKER_DRAIN_S).",
        )

    def handle(self, *args, capacity: int, drain_timeout: float, **options):
        if settings.CHAT_RUNNER != "workers":
            raise CommandError("Set CHAT_RUNNER=workers, for this worker and the web processes alike (docs/deploy.md).")
        if not settings.REDIS_URL:
            raise CommandError("A worker needs REDIS_URL: its tokens reach the web processes through Redis.")
        if capacity < 1:
            raise CommandError("--capacity must be at least 1.")
        worker = GenerationWorker(
            capacity=capacity,
            drain_s=drain_timeout,
            poll_s=settings.CHAT_WORKER_POLL_S,
            claim_batch=settings.CHAT_WORKER_CLAIM_BATCH,
        )
        asyncio.run(worker.serve())
