"""Generations in the admin: the list, the detail page with its timeline, the interruption overview and
the operator's actions (continue, retry, mark interrupted, delete chunks)."""

import uuid

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .. import actions
from ..errors import ApiError
from ..models import Generation
from ..streaming.reaper import orphans
from .reports import (
    STATUS_COLOURS,
    admin_url,
    generation_detail,
    interruption_overview,
    seconds,
    timestamp,
)


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
            {"fields": ["id", "provider_model", "response_format", "worker", "runs", "heartbeat", "lineage"]},
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
        "runs",
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


# --- The other models ------------------------------------------------------------------
