"""What the streams write for operators to read: connections, token chunks and workers. Read-only."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ..models import StreamConnection, TokenChunk, Worker
from .generations import SearchByGenerationId


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


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    """Generation workers (`manage.py run_generations`), as their last heartbeat saw them."""

    list_display = ["name", "running", "capacity", "draining", "heartbeat_at", "started_at"]
    list_filter = ["draining"]
    ordering = ["-heartbeat_at"]


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
