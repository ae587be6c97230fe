"""What the admin shows of generations: one generation's detail and token timeline, and the interruptions overview.

Plain functions over the models, apart from the ModelAdmin classes that render them.
"""

import statistics
from datetime import timedelta
from urllib.parse import urlencode

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from .. import actions
from ..models import Generation, StreamConnection
from ..streaming.answers import AnswerParts, persisted_answer
from ..streaming.reaper import orphans

# The detail page shows at most this many chunks of a long generation's timeline.
TIMELINE_MAX_CHUNKS = 1000
# A pause between chunks longer than this, and than STALL_FACTOR times the
# generation's median pause, is marked as a stall.
STALL_MIN_S = 1.0
STALL_FACTOR = 4
NEWEST_INTERRUPTED = 20
# One colour per status, in the list and in the overview.
STATUS_COLOURS = {
    "queued": "#6b7280",
    "streaming": "#2563eb",
    "complete": "#15803d",
    "interrupted": "#c2410c",
    "failed": "#b91c1c",
    "cancelled": "#4b5563",
}


def chat_url(generation) -> str:
    """The chat page, opened on this generation's stream."""
    return f"/?generation={generation.pk}"


def admin_url(obj) -> str:
    return reverse(f"admin:chat_{obj._meta.model_name}_change", args=[obj.pk])


def seconds(span: timedelta | None) -> str:
    if span is None:
        return "—"
    total = span.total_seconds()
    if total < 60:
        return f"{total:.2f} s"
    return f"{int(total // 60)} min {total % 60:.0f} s"


def timestamp(moment) -> str:
    """To the millisecond, in the server's time zone (UTC by default): pauses matter here."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:23] if moment else "—"



def generation_detail(generation: Generation) -> dict:
    """The prompt, the text, the token timeline and the connections of one generation."""
    now = timezone.now()
    end = generation.finished_at or now
    span_s = max((end - generation.created_at).total_seconds(), 0.001)

    def at(moment) -> float:
        """Where `moment` falls on the timeline strip, in percent."""
        return min(max((moment - generation.created_at).total_seconds() / span_s * 100, 0), 100)

    timeline = token_timeline(generation, at)
    connections = list(generation.connections.select_related("user").order_by("started_at"))
    for connection in connections:
        ended = connection.ended_at or max(end, connection.started_at)
        connection.offset_s = (connection.started_at - generation.created_at).total_seconds()
        connection.lasted = seconds(ended - connection.started_at) if connection.ended_at else "—"
        connection.left = at(connection.started_at)
        connection.width = max(at(ended) - connection.left, 0.4)
        # A row still open under an ended generation was never closed: its server died.
        connection.end_label = connection.end_reason or ("never closed" if generation.is_terminal else "still open")
    # The runner writes the message when it ends; until then the answer so far is in the chunks.
    answer = persisted_answer(generation)[0] if not generation.is_terminal else AnswerParts.of_message(generation.assistant_message)
    refusal = actions.continuation_refusal(generation) if generation.is_terminal else "It is still running."
    return {
        "generation": generation,
        "summary": summary(generation, connections),
        "prompt": generation.user_message.content,
        "text": answer.text,
        "reasoning": answer.reasoning,
        "text_is_final": generation.is_terminal,
        "pruned": generation.is_terminal and generation.last_seq >= generation.first_seq and not timeline["chunks"],
        "timeline": timeline["chunks"],
        "timeline_runs": timeline["runs"],
        "timeline_truncated": timeline["truncated"],
        "stall_s": timeline["stall_s"],
        "first_token_left": at(generation.first_token_at) if generation.first_token_at else None,
        "connections": connections,
        "chat_url": chat_url(generation),
        "overview_url": reverse("admin:chat_generation_overview"),
        "changelist_url": reverse("admin:chat_generation_changelist"),
        "continue_refusal": refusal,
        "has_chunks": bool(timeline["chunks"]),
    }


def token_timeline(generation: Generation, at) -> dict:
    """The persisted chunks with their pauses, stalls and sequence gaps, and the runs between anomalies.

    `at(moment)` places a moment on the timeline strip, in percent.
    """
    chunks = list(
        generation.chunks.order_by("first_seq").values_list("first_seq", "last_seq", "tokens", "created_at", "part")[
            : TIMELINE_MAX_CHUNKS + 1
        ]
    )
    total = generation.chunks.count() if len(chunks) > TIMELINE_MAX_CHUNKS else len(chunks)
    chunks = chunks[:TIMELINE_MAX_CHUNKS]
    pauses = [(b[3] - a[3]).total_seconds() for a, b in zip(chunks, chunks[1:])]
    stall_s = max(STALL_MIN_S, STALL_FACTOR * statistics.median_low(pauses)) if pauses else STALL_MIN_S
    rows, previous = [], None
    for first_seq, last_seq, tokens, created_at, part in chunks:
        since = previous["created_at"] if previous else generation.created_at
        pause = (created_at - since).total_seconds()
        expected = previous["last_seq"] + 1 if previous else generation.first_seq
        previous = {
            "first_seq": first_seq,
            "last_seq": last_seq,
            "tokens": len(tokens),
            "text": "".join(tokens),
            "part": part,
            "created_at": created_at,
            "offset_s": (created_at - generation.created_at).total_seconds(),
            "pause_s": pause,
            "stall": bool(rows) and pause > stall_s,
            "missing": (expected, first_seq - 1) if first_seq > expected else None,
            "left": at(created_at),
            "since_left": at(since),
            "stall_width": at(created_at) - at(since),
        }
        rows.append(previous)
    return {
        "chunks": rows,
        "runs": chunk_runs(rows),
        "stall_s": stall_s,
        "truncated": total - len(rows),
    }


def chunk_runs(rows: list[dict]) -> list[dict]:
    """Group the chunks into runs that a stall, a sequence gap or another part starts: one table row per run."""
    runs = []
    for row in rows:
        if not runs or row["stall"] or row["missing"] or row["part"] != runs[-1]["part"]:
            runs.append({**row, "chunks": []})
        run = runs[-1]
        run["chunks"].append(row)
        run["last_seq"] = row["last_seq"]
        run["span_s"] = row["offset_s"] - run["offset_s"]
    for run in runs:
        run["tokens"] = sum(chunk["tokens"] for chunk in run["chunks"])
        run["max_pause_s"] = max((chunk["pause_s"] for chunk in run["chunks"][1:]), default=0.0)
        # One line: the table stays readable whatever the text holds.
        run["preview"] = "".join(chunk["text"] for chunk in run["chunks"])[:160].replace("\n", " ⏎ ")
    return runs


def summary(generation: Generation, connections: list) -> str:
    """One sentence for the operator: what happened, to whom, how far, and whether the client came back."""
    owner = generation.conversation.owner
    tokens = generation.token_count
    if generation.is_terminal:
        how = generation.status + (f" ({generation.interrupt_reason})" if generation.interrupt_reason else "")
        took = seconds(generation.finished_at - generation.created_at) if generation.finished_at else "—"
        what = f"{owner}'s answer ended {how} after {tokens} token(s) in {took}."
    else:
        what = f"{owner}'s answer is {generation.status}: {tokens} token(s) so far."
    if not connections:
        return f"{what} No client followed it."
    resumed = sum(c.resumed_from is not None for c in connections)
    last = connections[-1]
    last_end = last.end_reason or "still open"
    return (
        f"{what} {len(connections)} client connection(s), {resumed} of them resumed; "
        f"the last one ({last.transport}) ended: {last_end}."
    )


def interruption_overview(*, changelist_url: str) -> dict:
    """Counts for the last 24 h and 7 d, and the newest interrupted generations."""
    now = timezone.now()
    windows = [
        {"label": "last 24 h", "since": now - timedelta(hours=24)},
        {"label": "last 7 d", "since": now - timedelta(days=7)},
    ]
    by_status: dict[tuple, list] = {}
    by_end: dict[str, list] = {}
    for index, window in enumerate(windows):
        started = Generation.objects.filter(created_at__gte=window["since"])
        window["total"] = started.count()
        window["running"] = started.filter(status__in=Generation.ACTIVE_STATUSES).count()
        rows = started.filter(status__in=Generation.TERMINAL_STATUSES).values("status", "interrupt_reason")
        for row in rows.annotate(n=Count("pk")):
            key = (row["status"], row["interrupt_reason"])
            by_status.setdefault(key, [0] * len(windows))[index] = row["n"]
        ends = StreamConnection.objects.filter(started_at__gte=window["since"]).values("end_reason")
        for row in ends.annotate(n=Count("pk")):
            by_end.setdefault(row["end_reason"] or "(still open)", [0] * len(windows))[index] = row["n"]
        reconnects = list(
            started.annotate(n=Count("connections", filter=Q(connections__resumed_from__isnull=False))).values_list(
                "n", flat=True
            )
        )
        window["median_reconnects"] = statistics.median(reconnects) if reconnects else None
        window["with_reconnects"] = sum(1 for count in reconnects if count)
        window["max_reconnects"] = max(reconnects, default=0)

    def filtered(status: str, reason: str, since) -> str:
        query = {"status__exact": status, "created_at__gte": since.isoformat()}
        if reason:
            query["interrupt_reason__exact"] = reason
        return f"{changelist_url}?{urlencode(query)}"

    status_rows = [
        {
            "status": status,
            "colour": STATUS_COLOURS[status],
            "reason": reason,
            "cells": [(count, filtered(status, reason, window["since"])) for count, window in zip(counts, windows)],
        }
        for (status, reason), counts in sorted(by_status.items())
    ]
    newest = (
        Generation.objects.filter(status=Generation.Status.INTERRUPTED)
        .select_related("conversation__owner")
        .annotate(reconnect_count=Count("connections", filter=Q(connections__resumed_from__isnull=False)))
        .order_by("-created_at")[:NEWEST_INTERRUPTED]
    )
    return {
        "windows": windows,
        "status_rows": status_rows,
        "end_rows": sorted(by_end.items(), key=lambda item: (-item[1][-1], item[0])),
        "newest": [{"generation": g, "admin_url": admin_url(g), "chat_url": chat_url(g)} for g in newest],
        "stuck": orphans().count(),
        "stuck_url": f"{changelist_url}?heartbeat=stale",
        "interrupted_url": f"{changelist_url}?status__exact=interrupted",
    }
