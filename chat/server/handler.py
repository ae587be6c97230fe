"""Django's ASGI handler, made to refuse an oversized body before reading it, and to free each request once served.

Django reads a whole body into a file before it looks at anything, so a
client could send any size and only then get its 413. Here a body whose
Content-Length is over CHAT_MAX_BODY_BYTES is refused before a byte of it is
read, and one sent without a length (chunked) is refused once it passes the
limit. (Daphne's HTTP server reads a body in full itself before the app sees
it; uvicorn, the deployment's server, hands it over as it comes.)

Every request Django serves here is caught in reference cycles: the lazy
`request.user`'s closure, the message storage and django-csp's nonce each
point back at the request, and on Django 5.2 the disconnect watcher's
`RequestAborted` holds `handle`'s frame, whose list of tasks holds the
exception (Django ticket #36700). Reference counting cannot free a cycle, so
each request (with its session, user, headers and body file) stayed until the
next full garbage collection, which the project makes rare (chat.apps): with
1,000 answers started that was 12 KiB of every stream's memory
(docs/performance.md).
"""

import contextvars

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.http import JsonResponse

from ..errors import error_body

_request: contextvars.ContextVar = contextvars.ContextVar("chat.server.handler.request")


class BodyTooLarge(Exception):
    pass


def declared_length(scope) -> int | None:
    value = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), b"")
    return int(value) if value.isdigit() else None


def bounded(receive, limit: int):
    """`receive`, raising BodyTooLarge as soon as the body received passes `limit` bytes."""
    received = 0

    async def receive_within_limit():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge
        return message

    return receive_within_limit


class ASGIHandler(DjangoASGIHandler):
    async def handle(self, scope, receive, send):
        limit = settings.CHAT_MAX_BODY_BYTES
        if (declared_length(scope) or 0) > limit:
            return await self.refuse_body(limit, send)
        token = _request.set(None)
        try:
            await super().handle(scope, bounded(receive, limit), send)
        except BodyTooLarge:
            await self.refuse_body(limit, send)
        finally:
            request = _request.get()
            _request.reset(token)
            if request is not None:
                # Served, its response closed: nothing reads it again. Dropping what it
                # holds breaks every cycle through it.
                request.__dict__.clear()

    async def refuse_body(self, limit: int, send) -> None:
        response = JsonResponse(error_body("body_too_large", f"The request body is larger than {limit} bytes."), status=413)
        await self.send_response(response, send)

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        _request.set(request)
        return request, error_response

    async def listen_for_disconnect(self, receive):
        """Return, rather than raise, once the client is gone.

        The same to `handle` on Django 5.2: whichever task ends first, it cancels
        the other, and a `RequestAborted` it catches and drops. (Django 6.1's
        handler cancels the view only on a raise: tests/test_handler.py checks
        that a disconnect still cancels it.)
        """
        try:
            await super().listen_for_disconnect(receive)
        except RequestAborted:
            pass
