"""WebSocket routes, and the bearer-token middleware that runs after the session one."""

from urllib.parse import parse_qs

from django.urls import path

from .auth import user_for_token
from .transports.ws import GenerationConsumer

# Offer this subprotocol beside `bearer.<token>` and the server picks it, so the
# token is not echoed back in the handshake response.
PROTOCOL = "llm-stream.v1"
BEARER_PREFIX = "bearer."


class TokenAuthMiddleware:
    """Authenticate a WebSocket by bearer token, for clients without the session cookie.

    Browsers cannot set an Authorization header on a WebSocket, so the token
    travels as a subprotocol `bearer.<token>` (preferred: it stays out of URLs
    and access logs) or as `?access_token=` (simplest, but query strings end
    up in server, proxy and browser-history logs). A token, when present,
    decides: a bad one is refused even if a session cookie came along. With
    no token, the session user set by AuthMiddlewareStack stands.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        offered = scope.get("subprotocols") or []
        bearer = next((p for p in offered if p.startswith(BEARER_PREFIX)), None)
        token = bearer[len(BEARER_PREFIX) :] if bearer else None
        if token is None:
            values = parse_qs(scope.get("query_string", b"").decode("latin1")).get("access_token")
            token = values[-1] if values else None
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
]
