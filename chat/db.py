"""Database work from async code, on small pools of threads shared by the whole process.

Django gives each request a thread of its own for its sync work (thread-sensitive
`sync_to_async`), and that thread and its database connection live as long as
the request. A stream is a request that lives for minutes: 150 open streams
held 150 threads and 150 connections. Here every request and every WebSocket
shares CHAT_DB_THREADS single-thread executors instead, and background units of
database work (`db_work`: runs, the writer, the reaper) share a pool of as many
threads. So threads and connections are bounded by twice that number whatever
the number of open streams, and each connection is kept between units
(CONN_MAX_AGE) instead of opened for every one.

The two are apart because a request's sync code (a sync view, the admin) may
wait, through `async_to_sync`, for async code that does `db_work`: on the same
single thread, that wait would never end.
"""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings

_lock = threading.Lock()
_request_threads: list[ThreadPoolExecutor] = []
_next_request_thread = None
_work_pool: ThreadPoolExecutor | None = None


def request_thread() -> ThreadPoolExecutor:
    """One of the single-thread executors that requests share, in turn."""
    global _next_request_thread
    if _next_request_thread is None:
        with _lock:
            if _next_request_thread is None:
                _request_threads.extend(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chat-request-{i}")
                    for i in range(settings.CHAT_DB_THREADS)
                )
                _next_request_thread = itertools.cycle(_request_threads).__next__
    return _next_request_thread()


def work_pool() -> ThreadPoolExecutor:
    global _work_pool
    if _work_pool is None:
        with _lock:
            if _work_pool is None:
                _work_pool = ThreadPoolExecutor(max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chat-db")
    return _work_pool


def db_work(function):
    """Run one unit of database work (not tied to a request) on the shared pool."""
    return sync_to_async(function, thread_sensitive=False, executor=work_pool())


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
        async with ThreadSensitiveContext(executor=request_thread()):
            return await self.app(scope, receive, send)
