"""The Django baseline: a bare async `StreamingHttpResponse` view on the benchmark's token schedule.

No middleware, no database, no hub: what Django's ASGI handler alone costs per
token, between bare sse-starlette and the project. Same URL as bench.bare_sse.

    uvicorn --lifespan off bench.bare_django:app
"""

import json

from django.conf import settings

settings.configure(
    DEBUG=False, SECRET_KEY="bench-only", ALLOWED_HOSTS=["127.0.0.1", "localhost"], ROOT_URLCONF=__name__, MIDDLEWARE=[]
)

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from bench.schedule import on_schedule, stream_params, word  # noqa: E402


def sse(seq: int, event: str, payload: dict) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(payload)}\n\n".encode()


async def stream(request):
    t0, tokens, rate = stream_params(request.GET)

    async def events():
        async for seq in on_schedule(t0, tokens, rate):
            yield sse(seq, "token", {"seq": seq, "text": word(seq)})
        yield sse(tokens, "done", {"seq": tokens, "status": "complete"})

    return StreamingHttpResponse(events(), content_type="text/event-stream", headers={"Cache-Control": "no-cache"})


urlpatterns = [path("stream", stream)]
app = get_asgi_application()
