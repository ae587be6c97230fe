"""ASGI lifespan: on shutdown, stop the running generations cleanly (uvicorn, hypercorn).

Daphne does not send lifespan events; chat.streaming.runner hooks into its reactor instead.
"""

from ..streaming.shutdown import shutdown_runs


async def lifespan_app(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_runs()
            await send({"type": "lifespan.shutdown.complete"})
            return
