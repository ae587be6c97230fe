"""Unhandled errors are logged with their traceback and the request's method and path: never a body or a credential.

Django logs a view's error to `django.request` with the request attached;
`RequestMethod` adds the method to that record. An error that escapes Django
(a streaming body, a WebSocket consumer) is logged by `LogUnhandled`. Paths
are logged without their query string, which may carry `access_token`.
"""

import logging

logger = logging.getLogger("chat.errors")


class RequestMethod(logging.Filter):
    """Give a record its request's method as `%(method)s` ("-" without a request)."""

    def filter(self, record):
        request = getattr(record, "request", None)
        record.method = getattr(request, "method", None) or "-"
        return True


class LogUnhandled:
    """ASGI middleware: log what the application raises, with the method (or WEBSOCKET) and the path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            return await self.app(scope, receive, send)
        except Exception:
            if scope["type"] in ("http", "websocket"):
                method = scope.get("method") or scope["type"].upper()
                logger.exception("unhandled error in %s %s", method, scope.get("path", ""))
            raise
