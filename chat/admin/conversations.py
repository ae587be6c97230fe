"""Conversations and their messages in the admin."""

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from ..models import Conversation, Message


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
