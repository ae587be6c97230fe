"""Django's ASGI handler, made to free each request as soon as it is served.

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

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler

_request: contextvars.ContextVar = contextvars.ContextVar("chat.server.handler.request")


class ASGIHandler(DjangoASGIHandler):
    async def handle(self, scope, receive, send):
        token = _request.set(None)
        try:
            await super().handle(scope, receive, send)
        finally:
            request = _request.get()
            _request.reset(token)
            if request is not None:
                # Served, its response closed: nothing reads it again. Dropping what it
                # holds breaks every cycle through it.
                request.__dict__.clear()

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
