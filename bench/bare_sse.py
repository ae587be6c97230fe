"""The baseline: a bare SSE server (sse-starlette on uvicorn) on the benchmark's token schedule.

It persists nothing and has no hub: it generates tokens in the request and
sends one event per token, the cheapest honest way to stream.

    GET /stream?t0=<unix time>&tokens=600&rate=50
"""

import json

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route

from bench.schedule import on_schedule, stream_params, word


async def stream(request):
    t0, tokens, rate = stream_params(request.query_params)

    async def events():
        async for seq in on_schedule(t0, tokens, rate):
            yield {"id": str(seq), "event": "token", "data": json.dumps({"seq": seq, "text": word(seq)})}
        yield {"id": str(tokens), "event": "done", "data": json.dumps({"seq": tokens, "status": "complete"})}

    return EventSourceResponse(events(), ping=15)


app = Starlette(routes=[Route("/stream", stream)])
