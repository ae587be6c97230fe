"""What every Durable Streams view shares: authentication, errors, common headers and the request body."""

import functools
import re

from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from chat.api.auth import bearer_key, request_user
from chat.errors import ApiError, error_body
from chat.server.admission import get_admission
from chat.transports.sse import EventStreamResponse as ChatEventStreamResponse
from durable.conf import setting
from durable.protocol import CORS_HEADERS, SECURITY_HEADERS, ProtocolError

UNSAFE_METHODS = {"PUT", "POST", "DELETE", "PATCH"}
PREFLIGHT_HEADERS = {key: value for key, value in CORS_HEADERS.items() if key != "Access-Control-Expose-Headers"}
RESPONSE_CORS_HEADERS = {key: CORS_HEADERS[key] for key in ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers")}
# Private: every stream belongs to one user. Data at an offset never changes (protocol 10.1).
CACHEABLE = "private, max-age=60, stale-while-revalidate=300"
NOT_CACHEABLE = "no-store"


def set_headers(response, headers: dict) -> None:
    for name, value in headers.items():
        response[name] = value


def error_response(error: ProtocolError, method: str) -> HttpResponse:
    response = (
        HttpResponse(status=error.status)
        if method == "HEAD"
        else JsonResponse(error_body(error.code, error.message), status=error.status)
    )
    set_headers(response, error.headers)
    return response


def csrf_rejection(request) -> HttpResponse | None:
    """A session (not bearer) request that changes something must carry the CSRF token."""
    if request.method not in UNSAFE_METHODS or bearer_key(request) is not None:
        return None
    return CsrfViewMiddleware(lambda request: None).process_view(request, None, (), {})


def protocol_view(handler):
    """Answer CORS preflights, authenticate, turn ProtocolError into its response, add the common headers."""

    @csrf_exempt
    @functools.wraps(handler)
    async def view(request, **kwargs):
        # Streams expire as of this time: see storage.live.
        request.arrived_at = timezone.now()
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
            set_headers(response, PREFLIGHT_HEADERS)
        else:
            response = await authenticated(handler, request, kwargs)
        set_headers(response, SECURITY_HEADERS)
        set_headers(response, RESPONSE_CORS_HEADERS)
        if not response.has_header("Vary"):
            response["Vary"] = "Authorization, Cookie"
        return response

    return view


async def authenticated(handler, request, kwargs) -> HttpResponse:
    try:
        user, error = await request_user(request)
        if user is None:
            message = "Send a valid bearer token (Authorization: Bearer ...) or log in."
            raise ProtocolError(401, error, message, {"WWW-Authenticate": 'Bearer realm="durable-streams"'})
        rejection = csrf_rejection(request)
        if rejection is not None:
            raise ProtocolError(403, "csrf_failed", "CSRF check failed: send the X-CSRFToken header, or use a bearer token.")
        if request.method != "GET" or request.GET.get("live") not in ("sse", "long-poll"):
            return await handler(request, user, **kwargs)
        return await holding_a_stream_slot(handler, request, user, kwargs)
    except ProtocolError as error:
        return error_response(error, request.method)


async def holding_a_stream_slot(handler, request, user, kwargs) -> HttpResponse:
    """A live read is an open stream: it counts toward the user's and the process's limits (chat/server/admission.py)."""
    admission = get_admission()
    try:
        slot = await admission.open_stream(user.pk)
    except ApiError as error:
        raise ProtocolError(error.status, error.code, error.message, {"Retry-After": str(error.retry_after)}) from None
    try:
        response = await handler(request, user, **kwargs)
    except BaseException:
        await admission.close_stream(slot)
        raise
    if response.streaming:
        admission.hold_until_closed(response, slot)
    else:
        await admission.close_stream(slot)  # A long-poll: answered, so closed.
    return response


def read_body(request) -> bytes:
    """The request body, at most DURABLE_MAX_APPEND_BYTES of it (a 413 past that)."""
    limit = setting("DURABLE_MAX_APPEND_BYTES")
    length = request.headers.get("Content-Length", "")
    too_large = ProtocolError(413, "payload_too_large", f"An append may carry at most {limit} bytes.")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body


def empty(status: int = 200, content_type: str | None = None, body: bytes = b"") -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=content_type)
    if content_type is None:
        del response["Content-Type"]
    return response


_CURSOR = re.compile(r"[0-9]{1,19}")


def client_cursor(request) -> str | None:
    cursor = request.GET.get("cursor")
    return cursor if cursor and _CURSOR.fullmatch(cursor) else None


def live_mode(request, offset) -> str | None:
    """`live=long-poll` or `live=sse` (both need an offset), or None for a catch-up read."""
    live = request.GET.get("live") or None
    if live not in (None, "long-poll", "sse"):
        raise ProtocolError(400, "invalid_live", "live must be long-poll or sse.")
    if live and offset is None:
        raise ProtocolError(400, "offset_required", f"live={live} needs an offset (use -1 for the start, now for the tail).")
    return live


class EventStreamResponse(ChatEventStreamResponse):
    """An SSE response whose body is closed as soon as Django stops sending (not at garbage collection)."""

    def __init__(self, body, *, base64: bool = False):
        super().__init__(body, content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # Tells nginx not to buffer the stream.
        if base64:
            self["Stream-SSE-Data-Encoding"] = "base64"
