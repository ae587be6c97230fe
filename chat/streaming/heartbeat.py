"""The heartbeat of this process's runs: one statement per beat, whatever their number.

A row whose heartbeat goes stale belongs to a process that is gone; the
reaper ends or hands on its generations. The beat also reports how far each
run got, and stops the runs cancelled or ended elsewhere.
"""

import asyncio
import contextvars
import logging

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from ..db import db_work
from ..models import Generation
from .events import Alive
from .registry import WORKER_ID, local_runs

logger = logging.getLogger(__name__)

_task: asyncio.Task | None = None


def ensure_heartbeat() -> None:
    """Beat while this process runs generations (the loop ends with the last of them)."""
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(heartbeat_loop(), context=contextvars.Context())


async def heartbeat_loop() -> None:
    """Refresh the heartbeat of this process's runs; stop those cancelled or ended elsewhere."""
    while local_runs():
        await asyncio.sleep(settings.CHAT_HEARTBEAT_S)
        runs = local_runs()
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
                await run.hub.publish(run.group, Alive(run.persisted_seq if run.durable_first else run.seq))
            run.beat_seq = run.seq


def beat(runs: list) -> set:
    """Refresh heartbeats and progress counters in one statement; return the runs to stop.

    Those are the ones flagged for cancelling, and the ones no longer ours:
    ended by the reaper (it thought us dead) or an operator, or handed on.
    """
    close_old_connections()
    if not runs:
        return set()  # They all ended during the sleep.
    cancel_requested = record_progress(runs)
    return {
        run.generation_id
        for run in runs
        if run.task and not run.task.done() and cancel_requested.get(run.generation_id, True)
    }


def record_progress(runs: list) -> dict:
    """One UPDATE for every run: its heartbeat, and how far it got (the chunks on disk may trail by one flush).

    Only rows still active and ours are updated; it returns their `cancel_requested`
    by id, so a run missing from it is no longer ours. Written as SQL: the ORM's
    Case/When, resolved and compiled per run, cost most of an idle process's CPU
    with 1,000 answers running.
    """
    meta, quote = Generation._meta, connection.ops.quote_name
    column = {name: quote(meta.get_field(name).column) for name in (
        "id", "heartbeat_at", "last_seq", "token_count", "first_token_at", "status", "worker", "cancel_requested"
    )}
    prep_pk = meta.pk.get_db_prep_value
    prep_time = meta.get_field("heartbeat_at").get_db_prep_value
    ids = [prep_pk(run.generation_id, connection) for run in runs]
    whens = " ".join(["WHEN %s THEN %s"] * len(runs))
    sets = [f"{column['heartbeat_at']} = %s", f"{column['last_seq']} = CASE {column['id']} {whens} END"]
    params = [prep_time(timezone.now(), connection)]
    params += [value for pk, run in zip(ids, runs) for value in (pk, run.seq)]
    sets.append(f"{column['token_count']} = CASE {column['id']} {whens} END")
    params += [value for pk, run in zip(ids, runs) for value in (pk, run.token_count)]
    started = [(pk, run.first_token_at) for pk, run in zip(ids, runs) if run.first_token_at]
    if started:
        first = " ".join(["WHEN %s THEN %s"] * len(started))
        sets.append(
            f"{column['first_token_at']} = COALESCE({column['first_token_at']}, CASE {column['id']} {first} END)"
        )
        params += [value for pk, at in started for value in (pk, prep_time(at, connection))]
    active = list(Generation.ACTIVE_STATUSES)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {column['id']} IN ({', '.join(['%s'] * len(ids))})"
        f" AND {column['status']} IN ({', '.join(['%s'] * len(active))}) AND {column['worker']} = %s"
        f" RETURNING {column['id']}, {column['cancel_requested']}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *ids, *active, WORKER_ID])
        return {meta.pk.to_python(pk): bool(cancel) for pk, cancel in cursor.fetchall()}
