"""The operator's admin: what happened to a stream, to whom, how far it got, whether the client came back,
and what to do about it now. Staff only, like all of the Django admin. See docs/admin.md.
"""

import statistics
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from . import actions
from .answers import chunks_text
from .errors import ApiError
from .models import ApiToken, Conversation, Generation, Message, StreamConnection, TokenChunk
from .reaper import orphans

# The detail page shows at most this many chunks of a long generation's timeline.
TIMELINE_MAX_CHUNKS = 1000
# A pause between chunks longer than this, and than STALL_FACTOR times the
# generation's median pause, is marked as a stall.
STALL_MIN_S = 1.0
STALL_FACTOR = 4
NEWEST_INTERRUPTED = 20


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


def uuid_or_none(term: str):
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


class SearchByGenerationId:
    """Let a pasted generation id (from a log line or a user report) find its rows."""

    generation_lookup = "pk"

    def get_search_results(self, request, queryset, search_term):
        if generation_id := uuid_or_none(search_term):
            return queryset.filter(**{self.generation_lookup: generation_id}), False
        return super().get_search_results(request, queryset, search_term)


class HadReconnectsFilter(admin.SimpleListFilter):
    title = "had reconnects"
    parameter_name = "reconnects"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(reconnect_count__gt=0)
        if self.value() == "no":
            return queryset.filter(reconnect_count=0)
        return queryset


class HeartbeatFilter(admin.SimpleListFilter):
    title = "heartbeat"
    parameter_name = "heartbeat"

    def lookups(self, request, model_admin):
        return [("stale", "Stale (worker gone, the reaper will end it)")]

    def queryset(self, request, queryset):
        if self.value() == "stale":
            return queryset.filter(pk__in=orphans().values("pk"))
        return queryset


STATUS_COLOURS = {
    "queued": "#6b7280",
    "streaming": "#2563eb",
    "complete": "#15803d",
    "interrupted": "#c2410c",
    "failed": "#b91c1c",
    "cancelled": "#4b5563",
}


@admin.register(Generation)
class GenerationAdmin(SearchByGenerationId, admin.ModelAdmin):
    list_display = [
        "short_id",
        "status_badge",
        "reason",
        "owner",
        "conversation_link",
        "provider_model",
        "tokens",
        "time_to_first_token",
        "duration",
        "connection_count",
        "reconnect_count",
        "created_at",
    ]
    list_filter = ["status", "interrupt_reason", "provider", "created_at", HadReconnectsFilter, HeartbeatFilter]
    search_fields = ["conversation__owner__username", "conversation__owner__email", "user_message__content"]
    search_help_text = "Search by owner, prompt text, or a generation id."
    list_select_related = ["conversation__owner"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    actions = ["retry_generations", "continue_generations", "mark_interrupted", "delete_token_chunks"]
    fieldsets = [
        ("What happened", {"fields": ["status", "reason", "finish_reason", "error", "owner", "conversation_link"]}),
        (
            "How far it got",
            {
                "fields": [
                    ("first_seq", "last_seq", "token_count"),
                    ("created", "first_token", "finished"),
                    ("time_to_first_token", "duration"),
                    ("connection_count", "reconnect_count"),
                ]
            },
        ),
        (
            "Where it ran",
            {"fields": ["id", "provider_model", "response_format", "worker", "heartbeat", "lineage"]},
        ),
    ]
    readonly_fields = [
        "id",
        "status",
        "reason",
        "finish_reason",
        "error",
        "owner",
        "conversation_link",
        "first_seq",
        "last_seq",
        "token_count",
        "created",
        "first_token",
        "finished",
        "time_to_first_token",
        "duration",
        "connection_count",
        "reconnect_count",
        "provider_model",
        "response_format",
        "worker",
        "heartbeat",
        "lineage",
    ]
    change_form_template = "admin/chat/generation/change_form.html"
    change_list_template = "admin/chat/generation/change_list.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                connection_count=Count("connections"),
                reconnect_count=Count("connections", filter=Q(connections__resumed_from__isnull=False)),
                ttft=ExpressionWrapper(F("first_token_at") - F("created_at"), output_field=DurationField()),
                run_time=ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField()),
            )
        )

    # A generation is written by its runner and the actions below, never by a form.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        """Who may run the actions: staff allowed to change generations."""
        return request.user.has_perm("chat.change_generation")

    # --- Columns ---------------------------------------------------------------

    @admin.display(description="id", ordering="pk")
    def short_id(self, generation):
        return str(generation.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, generation):
        return format_html(
            '<span class="gen-status" style="background:{}">{}</span>',
            STATUS_COLOURS.get(generation.status, "#6b7280"),
            generation.status,
        )

    @admin.display(description="reason", ordering="interrupt_reason")
    def reason(self, generation):
        # The code itself, as the API, the protocol and the logs spell it.
        return generation.interrupt_reason or "—"

    @admin.display(description="tokens", ordering="token_count")
    def tokens(self, generation):
        return generation.token_count

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, generation):
        return generation.conversation.owner

    @admin.display(description="conversation", ordering="conversation")
    def conversation_link(self, generation):
        conversation = generation.conversation
        return format_html('<a href="{}">{}</a>', admin_url(conversation), str(conversation)[:40])

    @admin.display(description="provider / model", ordering="provider")
    def provider_model(self, generation):
        return f"{generation.provider} / {generation.model}" if generation.model else generation.provider

    @admin.display(description="TTFT", ordering="ttft")
    def time_to_first_token(self, generation):
        return seconds(generation.ttft)

    @admin.display(description="duration", ordering="run_time")
    def duration(self, generation):
        if generation.run_time is None and not generation.is_terminal:
            return f"running {seconds(timezone.now() - generation.created_at)}"
        return seconds(generation.run_time)

    @admin.display(description="connections", ordering="connection_count")
    def connection_count(self, generation):
        return generation.connection_count

    @admin.display(description="reconnects", ordering="reconnect_count")
    def reconnect_count(self, generation):
        return generation.reconnect_count

    @admin.display(description="created")
    def created(self, generation):
        return timestamp(generation.created_at)

    @admin.display(description="first token")
    def first_token(self, generation):
        return timestamp(generation.first_token_at)

    @admin.display(description="finished")
    def finished(self, generation):
        return timestamp(generation.finished_at)

    @admin.display(description="last heartbeat")
    def heartbeat(self, generation):
        return timestamp(generation.heartbeat_at)

    @admin.display(description="continued from / by")
    def lineage(self, generation):
        links = []
        if generation.continued_from_id:
            links.append(format_html('from <a href="{}">{}</a>', admin_url(generation.continued_from), generation.continued_from_id))
        for continuation in generation.continuations.order_by("created_at"):
            links.append(format_html('by <a href="{}">{}</a>', admin_url(continuation), continuation.pk))
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "—"

    # --- Detail page -------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        generation = self.get_object(request, object_id)
        if generation is not None:
            extra_context = {**(extra_context or {}), **generation_detail(generation)}
            extra_context["can_operate"] = self.has_operate_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    # --- Overview ---------------------------------------------------------------------

    def get_urls(self):
        overview = path(
            "overview/", self.admin_site.admin_view(self.overview_view), name="chat_generation_overview"
        )
        return [overview, *super().get_urls()]

    def overview_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Interrupted sessions",
            **interruption_overview(changelist_url=reverse("admin:chat_generation_changelist")),
        }
        return TemplateResponse(request, "admin/chat/generation/overview.html", context)

    # --- Actions ------------------------------------------------------------------------

    def run_each(self, request, queryset, action, started: str):
        """Run an async action on each selected generation and report each outcome."""
        run = async_to_sync(action)
        for generation in queryset:
            try:
                result = run(generation=generation)
            except ApiError as error:
                self.message_user(request, error.message, messages.WARNING)
                continue
            if result is None:
                self.message_user(request, f"Generation {generation.pk} had already ended.", messages.WARNING)
            else:
                self.message_user(
                    request,
                    format_html(started, new=result.pk, new_url=admin_url(result), old=generation.pk),
                    messages.SUCCESS,
                )

    @admin.action(description="Retry: answer the same prompt again", permissions=["operate"])
    def retry_generations(self, request, queryset):
        self.run_each(
            request, queryset, actions.generation_retry, 'Retry <a href="{new_url}">{new}</a> of {old} started.'
        )

    @admin.action(description="Continue from the partial text, in the same message", permissions=["operate"])
    def continue_generations(self, request, queryset):
        self.run_each(
            request,
            queryset,
            actions.generation_continue,
            'Continuation <a href="{new_url}">{new}</a> of {old} started.',
        )

    @admin.action(description="Mark as interrupted (stuck)", permissions=["operate"])
    def mark_interrupted(self, request, queryset):
        self.run_each(
            request,
            queryset,
            actions.generation_mark_interrupted,
            'Generation <a href="{new_url}">{new}</a> marked as interrupted (operator).',
        )

    @admin.action(description="Delete token chunks of finished generations (texts stay)", permissions=["operate"])
    def delete_token_chunks(self, request, queryset):
        finished, chunks = actions.generation_chunks_delete(generations=queryset)
        skipped = queryset.count() - finished
        self.message_user(
            request,
            f"Deleted {chunks} token chunk(s) of {finished} finished generation(s); their texts stay."
            + (f" Skipped {skipped} still running." if skipped else ""),
            messages.SUCCESS if not skipped else messages.WARNING,
        )


# --- What the detail page and the overview show ------------------------------------


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
    text = generation.assistant_message.content
    if not generation.is_terminal:
        # The runner writes the message when it ends; until then the text so far is in the chunks.
        text += chunks_text(generation.chunks.order_by("first_seq").values_list("tokens", flat=True))
    refusal = actions.continuation_refusal(generation) if generation.is_terminal else "It is still running."
    return {
        "generation": generation,
        "summary": summary(generation, connections),
        "prompt": generation.user_message.content,
        "text": text,
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
        generation.chunks.order_by("first_seq").values_list("first_seq", "last_seq", "tokens", "created_at")[
            : TIMELINE_MAX_CHUNKS + 1
        ]
    )
    total = generation.chunks.count() if len(chunks) > TIMELINE_MAX_CHUNKS else len(chunks)
    chunks = chunks[:TIMELINE_MAX_CHUNKS]
    pauses = [(b[3] - a[3]).total_seconds() for a, b in zip(chunks, chunks[1:])]
    stall_s = max(STALL_MIN_S, STALL_FACTOR * statistics.median_low(pauses)) if pauses else STALL_MIN_S
    rows, previous = [], None
    for first_seq, last_seq, tokens, created_at in chunks:
        since = previous["created_at"] if previous else generation.created_at
        pause = (created_at - since).total_seconds()
        expected = previous["last_seq"] + 1 if previous else generation.first_seq
        previous = {
            "first_seq": first_seq,
            "last_seq": last_seq,
            "tokens": len(tokens),
            "text": "".join(tokens),
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
    """Group the chunks into runs that a stall or a sequence gap starts: one table row per run."""
    runs = []
    for row in rows:
        if not runs or row["stall"] or row["missing"]:
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


# --- The other models ------------------------------------------------------------------


@admin.display(description="generation", ordering="generation")
def generation_link(row):
    url = reverse("admin:chat_generation_change", args=[row.generation_id])
    return format_html('<a href="{}">{}</a>', url, str(row.generation_id)[:8])


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the streams write for operators to read; nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StreamConnection)
class StreamConnectionAdmin(SearchByGenerationId, ReadOnlyAdmin):
    generation_lookup = "generation_id"
    list_display = [
        "id",
        generation_link,
        "user",
        "transport",
        "resumed_from",
        "events_sent",
        "tokens_sent",
        "started_at",
        "ended_at",
        "end_reason",
    ]
    list_filter = ["transport", "end_reason", "started_at"]
    search_fields = ["user__username", "client_addr", "user_agent"]
    search_help_text = "Search by user, client address, user agent, or a generation id."
    list_select_related = ["user"]
    ordering = ["-started_at"]


@admin.register(TokenChunk)
class TokenChunkAdmin(SearchByGenerationId, ReadOnlyAdmin):
    generation_lookup = "generation_id"
    list_display = ["id", generation_link, "first_seq", "last_seq", "token_total", "created_at", "preview"]
    list_filter = ["created_at"]
    search_fields = ["generation__id"]
    search_help_text = "Search by generation id."
    ordering = ["-id"]
    # Chunks are the largest table; skip the unfiltered COUNT(*).
    show_full_result_count = False

    @admin.display(description="tokens")
    def token_total(self, chunk):
        return chunk.last_seq - chunk.first_seq + 1

    @admin.display(description="text")
    def preview(self, chunk):
        return chunk.text[:80]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "content", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "message_count", "generation_count", "updated_at"]
    list_filter = ["updated_at"]
    search_fields = ["title", "owner__username", "owner__email", "messages__content"]
    search_help_text = "Search by title, owner, or the text of any message."
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    ordering = ["-updated_at"]
    inlines = [MessageInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_total=Count("messages", distinct=True), generation_total=Count("generations", distinct=True)
            )
        )

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, conversation):
        return conversation.message_total

    @admin.display(description="generations", ordering="generation_total")
    def generation_count(self, conversation):
        url = reverse("admin:chat_generation_changelist") + f"?conversation__id__exact={conversation.pk}"
        return format_html('<a href="{}">{}</a>', url, conversation.generation_total)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "owner", "role", "short_content", "created_at"]
    list_filter = ["role", "created_at"]
    search_fields = ["content", "conversation__title", "conversation__owner__username"]
    search_help_text = "Search by text, conversation title, or owner."
    list_select_related = ["conversation__owner"]
    raw_id_fields = ["conversation"]
    ordering = ["-id"]

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, message):
        return message.conversation.owner

    @admin.display(description="content")
    def short_content(self, message):
        return message.content[:100]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Bearer tokens: seen and revoked here, issued only by the API or `create_api_token` (the key is shown once)."""

    list_display = ("prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("user__username", "name", "prefix")
    readonly_fields = ("user", "prefix", "name", "created_at", "expires_at", "last_used_at", "revoked_at")
    exclude = ("key_hash",)
    actions = ("revoke",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
