"""Page views: the chat page itself, and the static files it needs."""

from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles.views import serve
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from .models import Conversation, Generation


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    # isdigit() alone accepts '²' and Arabic-Indic digits, which int() then refuses or reads.
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


@never_cache
@ensure_csrf_cookie
@login_required
def chat_page(request):
    """The chat page; `?generation=<uuid>` opens (and resumes) that answer, `?conversation=<id>` a conversation."""
    initial = {"conversation_id": None, "generation_id": None, "missing": ""}
    generation_param = request.GET.get("generation")
    conversation_param = request.GET.get("conversation")
    if generation_param:
        generation = (
            Generation.objects.owned_by(request.user).filter(pk=_uuid(generation_param))
            .values("id", "conversation_id")
            .first()
            if _uuid(generation_param)
            else None
        )
        if generation:
            initial.update(conversation_id=generation["conversation_id"], generation_id=str(generation["id"]))
        else:
            initial["missing"] = "That answer does not exist, or is not yours."
    elif conversation_param:
        conversation_id = _int(conversation_param)
        if conversation_id and Conversation.objects.filter(pk=conversation_id, owner=request.user).exists():
            initial["conversation_id"] = conversation_id
        else:
            initial["missing"] = "That conversation does not exist, or is not yours."
    # The page tells a dead connection (no byte for two keepalive periods) from a quiet model by this.
    keepalive_ms = round(settings.CHAT_STREAM_KEEPALIVE_S * 1000)
    return render(request, "chat/index.html", {"initial": initial, "keepalive_ms": keepalive_ms})


def static_file(request, path: str):
    """Serve /static/ from the app, so `make run` under Daphne needs no web server in front.

    A deployment with a CDN or nginx serves collected files itself and never reaches this.
    """
    return serve(request, path, insecure=True)
