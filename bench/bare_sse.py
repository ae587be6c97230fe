"""The baseline: a bare SSE server (sse-starlette on uvicorn) with the same token schedule.

It persists nothing and has no hub: it generates tokens in the request and
sends one event per token, the cheapest honest way to stream.
"""

import asyncio
import json

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route


async def stream(request):
    tokens = int(request.query_params.get("tokens", "100"))
    rate = float(request.query_params.get("rate", "50"))

    async def events():
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(1, tokens + 1):
            delay = start + (seq - 1) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield {"id": str(seq), "event": "token", "data": json.dumps({"seq": seq, "text": f" word{seq}"})}
        yield {"id": str(tokens), "event": "done", "data": json.dumps({"seq": tokens, "status": "complete"})}

    return EventSourceResponse(events(), ping=15)


app = Starlette(routes=[Route("/stream", stream)])
