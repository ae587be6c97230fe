"""chat.server.handler: each request is freed as soon as it is served, and a client that leaves still cancels its view.

Django's own handler is the control: the same request leaves its request
object in a reference cycle, which only a full garbage collection frees.
"""

import asyncio
import gc

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.urls import path

from chat.server.handler import ASGIHandler
from chat.streaming import reaper

views = {}


async def waits(request):
    views["started"].set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        views["cancelled"] = True
        raise


async def hello(request):
    # The lazy user and the message storage (made for every request) each hold the request.
    return HttpResponse(f"hello {request.user}")


urlpatterns = [path("waits", waits), path("hello", hello)]


@pytest.fixture(autouse=True)
def no_reaper():
    """Our handler's first request would start the reaper, which has no database here."""
    reaper.request_started.disconnect(sender=ASGIHandler, dispatch_uid=reaper.DISPATCH_UID)
    yield
    reaper.start_with_first_request()


def http_scope(path: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }


async def served(communicator):
    """A response, then the client leaves, as uvicorn tells an app once the response is complete."""
    await communicator.send_input({"type": "http.request"})
    start = await communicator.receive_output(10)
    body = await communicator.receive_output(10)
    assert (start["status"], body["body"]) == (200, b"hello AnonymousUser")
    await communicator.send_input({"type": "http.disconnect"})


async def left(communicator):
    """The client leaves while the view waits: the view is cancelled."""
    await communicator.send_input({"type": "http.request"})
    await asyncio.wait_for(views["started"].wait(), 10)
    await communicator.send_input({"type": "http.disconnect"})


@pytest.mark.parametrize("flow, path", [(served, "/hello"), (left, "/waits")], ids=["served", "client left"])
@pytest.mark.parametrize("handler_class, leaves_garbage", [(DjangoASGIHandler, True), (ASGIHandler, False)],
                         ids=["django's handler", "ours"])
async def test_a_request_is_freed_once_served(settings, flow, path, handler_class, leaves_garbage):
    settings.ROOT_URLCONF = __name__
    views.clear()
    views["started"] = asyncio.Event()
    # A local, so alive through the collection below: a handler and its middleware are cyclic, but live
    # for the process.
    handler = handler_class()
    gc.collect()
    gc.disable()  # Nothing is collected behind the test's back: what is left is what reference counting left.
    try:
        communicator = ApplicationCommunicator(handler, http_scope(path))
        await flow(communicator)
        await communicator.wait(timeout=10)
        del communicator
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        requests = [o for o in gc.garbage if type(o) is ASGIRequest]  # Not isinstance: it would set up lazy objects.
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert bool(requests) == leaves_garbage
    assert flow is served or views.get("cancelled"), "the view went on after its client left"
