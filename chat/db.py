"""Database work from async code, on a small pool of threads shared by the whole process.

Django gives each request a thread of its own for its sync work (thread-sensitive
`sync_to_async`), and that thread and its database connection live as long as
the request. A stream is a request that lives for minutes: 150 open streams
held 150 threads and 150 connections. Here every request, every WebSocket and
every background unit of database work share CHAT_DB_THREADS single-thread
executors instead, so threads and connections are bounded by that number
whatever the number of open streams, and each connection is kept between units
(CONN_MAX_AGE) instead of opened for every one.
"""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings

_lock = threading.Lock()
_executors: list[ThreadPoolExecutor] = []
_next = None


def database_thread() -> ThreadPoolExecutor:
    """One of the shared single-thread executors, in turn."""
    global _next
    if _next is None:
        with _lock:
            if _next is None:
                _executors.extend(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chat-db-{i}")
                    for i in range(settings.CHAT_DB_THREADS)
                )
                _next = itertools.cycle(_executors).__next__
    return _next()


def db_work(function):
    """Run one unit of database work (not tied to a request) on a shared database thread."""
    return sync_to_async(function, thread_sensitive=False, executor=database_thread())


class SharedDatabaseThreads:
    """ASGI middleware: a request's (or a WebSocket's) thread-sensitive work runs on one shared thread.

    Django's own `ThreadSensitiveContext` inside reuses this one, so the ORM
    calls of a request still run one at a time on one thread, as Django needs.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        async with ThreadSensitiveContext(executor=database_thread()):
            return await self.app(scope, receive, send)
