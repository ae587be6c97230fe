"""The JSON API under /api/: the NinjaAPI with its docs and one error shape, and the routers it mounts."""

import logging
from pathlib import Path as FilePath

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError

from chat.api.auth import BearerAuth, SessionAuth
from chat.api.routes import router as chat_router
from chat.errors import ApiError, error_body

logger = logging.getLogger("chat.api")

DOCS_DIR = FilePath(settings.BASE_DIR) / "docs"
GUIDES = {"protocol.md", "mobile.md"}

DESCRIPTION = """\
Conversations with an LLM whose answers stream over Server-Sent Events and WebSockets and resume by event id.

**Authentication.** Mobile clients: `POST /api/auth/token` with a username and password, then send
`Authorization: Bearer <token>`. Browsers: the Django session, with the `X-CSRFToken` header on unsafe methods.

**Streams** are not JSON and are described in [the wire protocol](/api/guide/protocol.md):
`GET /api/generations/{id}/stream` (SSE, resumable with `Last-Event-ID`), the same events over a
WebSocket at `/ws/generations/{id}/`, and `json` events for `response_format: "json"`.

**Live events.** `GET /api/events/` is the user's own Server-Sent Events channel: conversation created,
renamed and deleted, and generation started, completed, interrupted, failed and cancelled. It resumes by its
own `Last-Event-ID`. See [the mobile guide](/api/guide/mobile.md).

**Retries.** `POST` of a message (and regenerate) honours an `Idempotency-Key` header.

**Errors** always have the shape `{"error": {"code", "message", "field"}}`.
"""

api = NinjaAPI(
    title="Chat streaming API",
    version="1",
    description=DESCRIPTION,
    auth=[BearerAuth(), SessionAuth()],
    urls_namespace="api",
    # Served from ninja's bundled static files; no validator badge, which would call out to swagger.io.
    docs=Swagger(settings={"validatorUrl": None, "persistAuthorization": True}),
)

# --- Errors: one shape everywhere ------------------------------------------


@api.exception_handler(ApiError)
def on_api_error(request, exc: ApiError):
    response = api.create_response(request, error_body(exc.code, exc.message, exc.field), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    elif exc.status == 429:
        response["Retry-After"] = "5" if exc.code == "too_many_generations" else "60"
    return response


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    location = [
        str(part) for part in first.get("loc", ()) if part not in ("body", "payload", "query", "path", "header")
    ]
    message = first.get("msg", "invalid input").removeprefix("Value error, ")
    return api.create_response(request, error_body("invalid", message, ".".join(location) or None), status=400)


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    code = "malformed_json" if exc.status_code == 400 else "error"
    return api.create_response(request, error_body(code, str(exc)), status=exc.status_code)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc):
    return api.create_response(request, error_body("unauthenticated", "Log in or send a bearer token."), status=401)


@api.exception_handler(Http404)
def on_not_found(request, exc):
    return api.create_response(request, error_body("not_found", str(exc) or "Not found."), status=404)


@api.exception_handler(RequestDataTooBig)
def on_body_too_big(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return api.create_response(
        request, error_body("body_too_large", f"The request body is larger than {limit} bytes."), status=413
    )


@api.exception_handler(Exception)
def on_unexpected(request, exc):
    logger.exception("unexpected error in %s %s", request.method, request.path)
    return api.create_response(request, error_body("internal_error", "Something went wrong on our side."), status=500)


api.add_router("", chat_router)


# --- Guides linked from the description -------------------------------------------------


@api.get("/guide/{name}", auth=None, include_in_schema=False)
def guide(request, name: str):
    """Serve docs/protocol.md and docs/mobile.md, so the links in the spec work offline."""
    if name not in GUIDES or not (DOCS_DIR / name).is_file():
        raise Http404("No such guide.")
    return HttpResponse((DOCS_DIR / name).read_text(), content_type="text/markdown; charset=utf-8")



def not_found(request, path: str = ""):
    """Any other path under /api/: a 404 in the API's error shape, not an HTML page."""
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)
