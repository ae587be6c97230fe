"""The per-user live event channel at /api/events/, served by django-eventstream.

Each user has one channel, `user-<id>`. It carries conversation created /
renamed / deleted and generation status changes, so a second device sees new
chats and finished answers without polling. Events are stored
(DjangoModelStorage), so a client resumes with the `Last-Event-ID` the channel
gave it, across reconnects and server restarts.

Events are published only after the data they describe is committed: by the
actions in chat/actions/ (an end: actions/ends.py, at its commit).
docs/mobile.md describes the channel, its cost and its multi-process set-up.
"""

import json
import logging
import re
import time
from urllib.parse import quote

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django_eventstream import models as stored
from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import DjangoModelStorage

from ..api.auth import request_user
from ..db import db_work
from ..errors import ApiError, error_body
from ..models import Conversation, Generation
from ..server.admission import get_admission

logger = logging.getLogger(__name__)

# What the channel's own ids look like: `<channel>:<n>`; a bare `<n>` is accepted too.
LAST_EVENT_ID = re.compile(r"(?:(?P<channel>[^:,]{1,200}):)?(?P<n>[0-9]{1,18})")

GENERATION_EVENTS = {
    Generation.Status.QUEUED: "generation.started",
    Generation.Status.STREAMING: "generation.started",
    Generation.Status.COMPLETE: "generation.completed",
    Generation.Status.INTERRUPTED: "generation.interrupted",
    Generation.Status.FAILED: "generation.failed",
    Generation.Status.CANCELLED: "generation.cancelled",
}


def user_channel(user_id) -> str:
    # The namespace keeps deployments that share a Redis apart: its pub/sub ignores database numbers.
    return f"{settings.CHAT_EVENTS_NAMESPACE}user-{user_id}"


class UserChannelManager(ChannelManagerBase):
    """Every request reads exactly its own user's channel, and nobody else's."""

    def get_channels_for_request(self, request, view_kwargs):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return set()
        return {user_channel(user.pk)}

    def can_read_channel(self, user, channel):
        return user is not None and channel == user_channel(user.pk)

    def is_channel_reliable(self, channel):
        return True


class EventStorage(DjangoModelStorage):
    """django-eventstream's database storage, with the same rows, appended in two statements.

    The library's own append takes about eight ORM queries (find or create the
    channel's counter, lock it, bump it, insert, then look for old events to
    trim), a tenth of the fixed cost of an answer: here one upsert bumps
    the counter and returns the id, one INSERT stores the event, and old events
    are trimmed at most once a minute per process.
    """

    TRIM_EVERY_S = 60.0
    trimmed_at = None  # Per process: the library makes a new storage for every event.

    def append_event(self, channel, event_type, data):
        quote = connection.ops.quote_name
        counters, events = quote(stored.EventCounter._meta.db_table), quote(stored.Event._meta.db_table)
        now = stored.Event._meta.get_field("created").get_db_prep_value(timezone.now(), connection)
        insert = f"INSERT INTO {events} (channel, type, data, eid, created) VALUES (%s, %s, %s, %s, %s)"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {counters} (name, value, updated) VALUES (%s, 1, %s) "
                f"ON CONFLICT (name) DO UPDATE SET value = {counters}.value + 1, updated = %s RETURNING value",
                [channel, now, now],
            )
            (eid,) = cursor.fetchone()
            if eid == 1:
                # The library's placeholder at id 0, which lets a reader resume from 0.
                cursor.execute(f"{insert} ON CONFLICT DO NOTHING", [channel, "", "", 0, now])
            cursor.execute(insert, [channel, event_type, json.dumps(data, cls=DjangoJSONEncoder), eid, now])
        if EventStorage.trimmed_at is None or time.monotonic() - EventStorage.trimmed_at > self.TRIM_EVERY_S:
            EventStorage.trimmed_at = time.monotonic()
            self.trim_event_log()
        return Event(channel, event_type, data, id=eid)


# --- Publishing -----------------------------------------------------------------


def publish(user_id, event_type: str, data: dict) -> None:
    """Append an event to the user's channel and wake its listeners; never raise.

    The change it reports is already committed; losing the notice must not undo it.
    """
    from django_eventstream import send_event

    try:
        send_event(user_channel(user_id), event_type, data)
    except Exception:
        logger.exception("could not publish %s to %s", event_type, user_channel(user_id))


async def apublish(user_id, event_type: str, data: dict) -> None:
    await db_work(publish)(user_id, event_type, data)


def conversation_data(conversation: Conversation) -> dict:
    return {
        "conversation_id": conversation.pk,
        "conversation": {
            "id": conversation.pk,
            "title": conversation.title,
            "created_at": conversation.created_at,
            "updated_at": conversation.updated_at,
        },
    }


async def conversation_changed(conversation: Conversation, event_type: str) -> None:
    """`conversation.created` or `conversation.renamed`."""
    await apublish(conversation.owner_id, event_type, conversation_data(conversation))


async def conversation_deleted(*, owner_id, conversation_id: int) -> None:
    await apublish(owner_id, "conversation.deleted", {"conversation_id": conversation_id})


def generation_data(row: dict) -> dict:
    return {
        "conversation_id": row["conversation_id"],
        "generation_id": str(row["id"]),
        "status": row["status"],
        "finish_reason": row["finish_reason"],
        "reason": row["interrupt_reason"],
        "user_message_id": row["user_message_id"],
        "assistant_message_id": row["assistant_message_id"],
        # Once ended, which parts the stored answer has (["reasoning", "text"]): a client knows what to fetch.
        "parts": row.get("parts", []),
        "stream_url": f"/api/generations/{row['id']}/stream",
        "ws_url": f"/ws/generations/{row['id']}/",
    }


GENERATION_FIELDS = (
    "id",
    "status",
    "finish_reason",
    "interrupt_reason",
    "conversation_id",
    "user_message_id",
    "assistant_message_id",
)


def publish_generation(row: dict, owner_id) -> None:
    """Publish a generation's status from its GENERATION_FIELDS at hand (just created, or just ended)."""
    publish(owner_id, GENERATION_EVENTS[row["status"]], generation_data(row))


def generation_row(generation: Generation) -> dict:
    return {name: getattr(generation, name) for name in GENERATION_FIELDS}


# --- The view -----------------------------------------------------------------------


def _error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, field), status=status)


@csrf_exempt  # GET only; the CSRF middleware would answer a POST with an HTML 403 instead of our 405.
async def events_view(request):
    """GET /api/events/: the user's channel as Server-Sent Events (session or bearer auth)."""
    from django_eventstream.views import events

    if request.method != "GET":
        return _error(405, "method_not_allowed", "Use GET.")
    user, problem = await request_user(request)
    if user is None:
        return _error(401, problem or "unauthenticated", "Log in or send a bearer token.")
    query = request.GET.copy()
    # GRIP-proxy parameters: this deployment has no GRIP proxy, and they would
    # make the library read the database synchronously or trust a signed user.
    for name in ("es-meta", "recover", "link", "channel", "channels"):
        query.pop(name, None)
    raw = request.headers.get("Last-Event-ID") or next((v for v in reversed(query.getlist("lastEventId")) if v), None)
    query.pop("lastEventId", None)
    request.META.pop("HTTP_LAST_EVENT_ID", None)
    if raw:
        match = LAST_EVENT_ID.fullmatch(raw.strip())
        if match is None or match["channel"] not in (None, quote(user_channel(user.pk))):
            return _error(
                400,
                "invalid_last_event_id",
                f"Last-Event-ID must be an id this channel sent ({user_channel(user.pk)}:<n>), got {raw[:60]!r}.",
                "Last-Event-ID",
            )
        request.META["HTTP_LAST_EVENT_ID"] = f"{quote(user_channel(user.pk))}:{int(match['n'])}"
    request.GET = query
    request.user = user
    admission = get_admission()
    try:
        slot = await admission.open_stream(user.pk)
    except ApiError as error:
        response = _error(error.status, error.code, error.message)
        response["Retry-After"] = str(error.retry_after)
        return response
    response = events(request)
    admission.hold_until_closed(response, slot)
    return response
