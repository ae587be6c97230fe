"""The orphan reaper: end the generations whose process died.

Each process heartbeats the generations it runs (chat.streaming.runner). A generation
still `queued` or `streaming` whose heartbeat (or, if it never had one, its
creation) is older than CHAT_HEARTBEAT_STALE_S has lost its worker: it was
killed, or its machine died. The reaper ends it `interrupted` / `worker_lost`,
keeping every persisted token as the message text, and publishes the end so
that its followers finish. With CHAT_AUTO_CONTINUE it puts the generation back
in the queue instead, to be continued in place: in worker mode by another
worker; in-process, by the reaper of any server process, which claims the
queued answers (a killed process's, and those a stopping one handed on) and
runs them itself, so a restart continues them. An answer nobody claims within
CHAT_QUEUE_TIMEOUT_S (in-process: CHAT_RESUME_INTERRUPTED_MAX_AGE_S of its
last heartbeat) ends `worker_lost` too.

It runs in every server process and every worker, from the first request on and then every
CHAT_REAPER_INTERVAL_S, and as `manage.py reap_generations`. Any number of
reapers may run at once: each generation is ended in one conditional,
locked transaction that re-checks the status and the heartbeat, so exactly one
of them does it.
"""

import asyncio
import contextvars
import logging
import os
import socket

from django.conf import settings
from django.core.signals import request_started
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from ..actions import generation_end_orphan, stale_before, stale_heartbeat
from ..actions.ends import generations_ended
from ..actions.queue import (
    WAITING,
    generation_hand_on,
    may_hand_on,
    queue_timeout_s,
)
from ..db import db_work
from ..models import Generation
from ..server.handler import ASGIHandler
from . import registry, runner

logger = logging.getLogger(__name__)

# Orphans ended per pass; the next pass takes the rest.
REAP_BATCH = 200


def dead_local_workers() -> list[str]:
    """The workers of active generations that ran on this host in a process that no longer exists.

    Their generations need not wait for a stale heartbeat: after a `kill -9`
    and a restart, a resuming client gets the stored end within seconds.
    """
    host, own = socket.gethostname(), str(os.getpid())
    workers = Generation.objects.filter(status__in=Generation.ACTIVE_STATUSES, worker__startswith=f"{host}:")
    dead = []
    for worker in workers.values_list("worker", flat=True).distinct():
        pid = worker.split(":")[1]
        if pid != own and pid.isascii() and pid.isdigit() and not pid_alive(int(pid)):
            dead.append(worker)
    return dead


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # It exists, as another user's process.
    return True


def orphan_condition(*, dead_workers=()) -> Q:
    """Active generations nobody runs: their worker is dead or silent, or no worker claimed them in time."""
    queue_before = timezone.now() - timezone.timedelta(seconds=queue_timeout_s())
    claimed = ~Q(worker="")
    # One queued behind a running answer waits for it, however long it takes.
    return (claimed & (stale_heartbeat(stale_before()) | Q(worker__in=list(dead_workers)))) | (
        Q(worker="") & stale_heartbeat(queue_before) & ~WAITING
    )


def orphans(*, exclude=(), dead_workers=()):
    """The active generations whose heartbeat is stale or whose worker is dead, oldest first."""
    return (
        Generation.objects.filter(status__in=Generation.ACTIVE_STATUSES)
        .filter(orphan_condition(dead_workers=dead_workers))
        .exclude(pk__in=list(exclude))
        .order_by("created_at")
    )


def reap_orphans(*, exclude=()) -> list[Generation]:
    """End the orphaned generations, except those in `exclude`; return the ones this call ended.

    In worker mode (CHAT_AUTO_CONTINUE) a claimed one goes back to the queue
    instead, and another worker continues it in place.
    """
    close_old_connections()
    dead = dead_local_workers()
    condition = orphan_condition(dead_workers=dead)
    reaped = []
    found = orphans(exclude=exclude, dead_workers=dead).values_list("pk", "worker", "heartbeat_at", "runs")[:REAP_BATCH]
    # In-process, an answer silent for longer than this is not continued: its reader has moved on.
    resume_after = timezone.now() - timezone.timedelta(seconds=queue_timeout_s())
    for generation_id, worker, heartbeat_at, runs in found:
        if worker in dead:
            error = f"worker {worker} is gone (its process no longer exists)"
        elif worker:
            since = f"since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if heartbeat_at else "ever"
            error = f"no heartbeat from worker {worker} {since}"
        else:
            error = f"nobody took it within {queue_timeout_s():g} s"
        recent = settings.CHAT_RUNNER == "workers" or (heartbeat_at is not None and heartbeat_at >= resume_after)
        if worker and recent and may_hand_on(runs):
            if generation_hand_on(generation_id, condition=condition) is not None:
                logger.warning("handed generation %s on to another worker: %s", generation_id, error)
            continue
        generation = generation_end_orphan(
            generation_id,
            status=Generation.Status.INTERRUPTED,
            reason=Generation.InterruptReason.WORKER_LOST,
            error=error,
            condition=condition,
        )
        if generation is not None:
            logger.warning("reaped generation %s: %s", generation.id, generation.error)
            reaped.append(generation)
    return reaped


async def reap_and_announce() -> list[Generation]:
    """Reap the orphans not run by this process, and tell their followers; in-process, run the handed-on ones here."""
    reaped = await db_work(reap_orphans)(exclude=registry.local_generation_ids())
    await generations_ended(reaped)
    await runner.run_queued()
    return reaped


async def reaper_loop() -> None:
    while True:
        try:
            await reap_and_announce()
        except Exception:  # The database may be briefly away; try again next time.
            logger.exception("reaping orphaned generations failed")
        await asyncio.sleep(settings.CHAT_REAPER_INTERVAL_S)


_task: asyncio.Task | None = None


def ensure_running() -> asyncio.Task:
    """Start this process's reaper on the running loop, unless it already runs."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        # A fresh context: the loop must not inherit the request's context.
        _task = loop.create_task(reaper_loop(), context=contextvars.Context())
    return _task


async def start_on_first_request(sender, **kwargs) -> None:
    """`request_started` receiver (ASGI only): start the reaper with the server's first request.

    ASGI servers differ in how they announce start-up (Daphne sends no
    lifespan events), but every one serves requests; after the first, the
    receiver disconnects itself and costs nothing.
    """
    ensure_running()
    request_started.disconnect(sender=ASGIHandler, dispatch_uid=DISPATCH_UID)


DISPATCH_UID = "chat.streaming.reaper.start_on_first_request"


def start_with_first_request() -> None:
    """Called once at Django start-up (ChatConfig.ready)."""
    request_started.connect(start_on_first_request, sender=ASGIHandler, dispatch_uid=DISPATCH_UID)

