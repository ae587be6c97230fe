"""ASGI lifespan (uvicorn, hypercorn): at start-up, the reaper (it continues the answers a stopped
process handed on); at shutdown, stop the running generations cleanly.

Daphne does not send lifespan events; chat.server.daphne and chat.streaming.shutdown hook into its reactor instead.
"""

from ..streaming.reaper import ensure_running
from ..streaming.shutdown import shutdown_runs


async def lifespan_app(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            ensure_running()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_runs()
            await send({"type": "lifespan.shutdown.complete"})
            return
