"""WebSocket routes, the origin check, and the bearer-token middleware that runs after the session one."""

import json
from urllib.parse import parse_qs, urlsplit

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path, re_path

from ..api.auth import parse_bearer, user_for_token
from ..errors import error_body
from ..transports.ws import GenerationConsumer

# Offer this subprotocol beside `bearer.<token>` and the server picks it, so the
# token is not echoed back in the handshake response.
PROTOCOL = "llm-stream.v1"
BEARER_PREFIX = "bearer."


def header(scope, name: bytes) -> str | None:
    return next((value.decode("latin1") for key, value in scope.get("headers", ()) if key == name), None)


def offered_token(scope) -> str | None:
    """The bearer key a socket offers: subprotocol `bearer.<key>`, `?access_token=`, or an Authorization header."""
    bearer = next((p for p in scope.get("subprotocols") or [] if p.startswith(BEARER_PREFIX)), None)
    if bearer is not None:
        return bearer[len(BEARER_PREFIX) :]
    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get("access_token")
    if values:
        return values[-1]
    return parse_bearer(header(scope, b"authorization") or "")


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_tuple(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.scheme, parts.hostname, port) if parts.hostname and port else None


def own_origin(scope) -> tuple[str, str, int] | None:
    """The scheme, host and port this socket was opened on, as a browser page on this site would send them."""
    host = header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    proxy = settings.SECURE_PROXY_SSL_HEADER
    forwarded = proxy and header(scope, proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()) == proxy[1]
    scheme = "https" if scope.get("scheme") == "wss" or forwarded else "http"
    return origin_tuple(f"{scheme}://{host}")


class OriginValidator:
    """Refuse a socket whose Origin is not this site's own scheme, host and port (or a CSRF_TRUSTED_ORIGINS one).

    It stops other sites from riding a logged-in browser's session cookie.
    Browsers always send Origin; a native app may not, and is let in when it
    offers a bearer token (a socket without a cookie carries no cross-site risk).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = header(scope, b"origin")
        if origin is None:
            allowed = offered_token(scope) is not None
        else:
            trusted = {origin_tuple(o) for o in settings.CSRF_TRUSTED_ORIGINS} | {own_origin(scope)}
            allowed = origin_tuple(origin) in trusted - {None}
        if not allowed:
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other path: the not_found error frame and 4404, as for an unknown generation."""

    async def connect(self):
        await self.accept(subprotocol=self.scope.get("subprotocol"))
        await self.send(text_data=json.dumps({"type": "error", **error_body("not_found", "No WebSocket route here.")}))
        await self.close(code=4404)


class TokenAuthMiddleware:
    """Authenticate a WebSocket by bearer token, for clients without the session cookie.

    Browsers cannot set an Authorization header on a WebSocket, so the token
    travels as a subprotocol `bearer.<token>` (preferred: it stays out of URLs
    and access logs) or as `?access_token=` (simplest, but query strings end
    up in server, proxy and browser-history logs); native apps may also send
    `Authorization: Bearer <token>`. A token, when present,
    decides: a bad one is refused even if a session cookie came along. With
    no token, the session user set by AuthMiddlewareStack stands.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        offered = scope.get("subprotocols") or []
        bearer = next((p for p in offered if p.startswith(BEARER_PREFIX)), None)
        token = offered_token(scope)
        scope = dict(scope)
        # The server must answer with one of the offered subprotocols or browsers fail the socket.
        scope["subprotocol"] = PROTOCOL if PROTOCOL in offered else bearer
        if token is not None:
            user = await user_for_token(token)
            if user is None:
                scope["auth_error"] = "The bearer token is invalid, expired or revoked."
            else:
                scope["user"] = user
        return await self.app(scope, receive, send)


websocket_urlpatterns = [
    path("ws/generations/<uuid:generation_id>/", GenerationConsumer.as_asgi()),
    # Anything else, a malformed id included, gets the error frame instead of a 500 with a traceback.
    re_path(r"", NotFoundConsumer.as_asgi()),
]
